//! `posix_spawn(3)` with the child's descriptors at fixed numbers and every other one closed.
//!
//! glibc's posix_spawn starts the child with `clone(CLONE_VM | CLONE_VFORK)` and `execve`, so
//! its cost does not grow with the parent's memory (no page tables are copied), and it
//! reports an `execve` failure to the caller instead of leaving a child to report it.

use std::ffi::{c_char, CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

/// The first descriptor number after stdin, stdout and stderr.
pub const FIRST_CHILD_FD: i32 = 3;

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> nix::Result<Self> {
        let mut actions = MaybeUninit::uninit();
        // SAFETY: init writes a valid object into the uninitialised storage; it is only read
        // (assume_init) when init reports success.
        let res = unsafe { libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) };
        if res != 0 {
            return Err(Errno::from_raw(res));
        }
        // SAFETY: initialised by the successful call above.
        Ok(FileActions(unsafe { actions.assume_init() }))
    }

    fn dup2(&mut self, fd: i32, target: i32) -> nix::Result<()> {
        // SAFETY: self.0 is an initialised file-actions object; the call only records the pair.
        let res = unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) };
        if res != 0 {
            return Err(Errno::from_raw(res));
        }
        Ok(())
    }

    fn close_from(&mut self, fd: i32) -> nix::Result<()> {
        // SAFETY: as dup2 above; glibc >= 2.34 provides it.
        let res = unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, fd) };
        if res != 0 {
            return Err(Errno::from_raw(res));
        }
        Ok(())
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: self.0 was initialised in new() and is destroyed exactly once, here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, for what the child is to be besides its descriptors.
struct Attributes {
    attributes: libc::posix_spawnattr_t,
    /// The `POSIX_SPAWN_*` flags of what was set, given to the object in `finish`.
    flags: libc::c_int,
}

impl Attributes {
    fn new() -> nix::Result<Self> {
        let mut attributes = MaybeUninit::uninit();
        // SAFETY: init writes a valid object into the uninitialised storage; it is only read
        // (assume_init) when init reports success.
        let res = unsafe { libc::posix_spawnattr_init(attributes.as_mut_ptr()) };
        if res != 0 {
            return Err(Errno::from_raw(res));
        }
        Ok(Attributes {
            // SAFETY: initialised by the successful call above.
            attributes: unsafe { attributes.assume_init() },
            flags: 0,
        })
    }

    /// The child leads a new process group, set before it runs anything.
    fn new_process_group(&mut self) -> nix::Result<()> {
        // SAFETY: self.attributes is an initialised attributes object; the call only records
        // the value.
        Errno::result(unsafe { libc::posix_spawnattr_setpgroup(&mut self.attributes, 0) })?;
        self.flags |= libc::POSIX_SPAWN_SETPGROUP;
        Ok(())
    }

    /// The child starts with `mask` as its signal mask.
    fn signal_mask(&mut self, mask: &SigSet) -> nix::Result<()> {
        // SAFETY: as above; `mask` is a valid sigset_t that outlives the call (it is copied).
        Errno::result(unsafe {
            libc::posix_spawnattr_setsigmask(&mut self.attributes, mask.as_ref())
        })?;
        self.flags |= libc::POSIX_SPAWN_SETSIGMASK;
        Ok(())
    }

    fn finish(&mut self) -> nix::Result<()> {
        let flags = libc::c_short::try_from(self.flags).map_err(|_| Errno::EINVAL)?;
        // SAFETY: as above.
        Errno::result(unsafe { libc::posix_spawnattr_setflags(&mut self.attributes, flags) })
            .map(drop)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: self.attributes was initialised in new() and is destroyed exactly once, here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.attributes) };
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*mut c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

/// Starts `path` with `argv` and `envp`; the child's descriptor `3 + i` is `child_fds[i]`,
/// besides 0, 1 and 2 it has no other; with `new_group` it leads a new process group; it
/// starts with `blocked` blocked besides what the calling thread blocks.
pub fn spawn(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    child_fds: &[BorrowedFd<'_>],
    new_group: bool,
    blocked: &[Signal],
) -> nix::Result<Pid> {
    let limit = FIRST_CHILD_FD + i32::try_from(child_fds.len()).map_err(|_| Errno::EMFILE)?;
    // Copies above every target number, so that placing one never overwrites another's
    // source; close-on-exec, so they vanish in the child after the dup2 onto the targets.
    let sources: Vec<OwnedFd> = child_fds
        .iter()
        .map(|fd| {
            let copy = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(limit))?;
            // SAFETY: fcntl returned a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(copy) })
        })
        .collect::<nix::Result<_>>()?;
    let mut actions = FileActions::new()?;
    for (target, source) in (FIRST_CHILD_FD..).zip(&sources) {
        actions.dup2(source.as_raw_fd(), target)?;
    }
    actions.close_from(limit)?;
    let mut attributes = Attributes::new()?;
    if new_group {
        attributes.new_process_group()?;
    }
    if !blocked.is_empty() {
        let mut mask = SigSet::thread_get_mask()?;
        for &signal in blocked {
            mask.add(signal);
        }
        attributes.signal_mask(&mask)?;
    }
    attributes.finish()?;
    let argv = null_terminated(argv);
    let envp = null_terminated(envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: path, argv and envp are NUL-terminated strings in NULL-terminated arrays that
    // outlive the call; actions and attributes are initialised.
    let res = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.0,
            &attributes.attributes,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if res != 0 {
        return Err(Errno::from_raw(res));
    }
    Ok(Pid::from_raw(pid))
}
