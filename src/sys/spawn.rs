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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, IntoRawFd};

    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::sys::signal::Signal;
    use nix::unistd::{getpgrp, Pid};

    use super::*;
    use crate::sys::testutil::{fork_lock, pipe, read_to_string, sh, wait_code};

    /// Descriptor `3 + i` in the child is `child_fds[i]`: each is the write end of its own
    /// pipe, and what the child writes to `3 + i` comes out of pipe `i`.
    #[test]
    fn child_fds_land_in_order() {
        let _fork = fork_lock();
        let pipes: Vec<_> = (0..4).map(|_| pipe()).collect();
        // Given in reverse order of creation, so that most sources are numbered above or
        // among the targets.
        let fds: Vec<BorrowedFd<'_>> = pipes.iter().rev().map(|(_, w)| w.as_fd()).collect();
        let pid = sh(
            "echo 0 >&3 && echo 1 >&4 && echo 2 >&5 && echo 3 >&6",
            &fds,
            false,
            &[],
        );
        assert_eq!(wait_code(pid), 0);
        let outs: Vec<String> = pipes
            .into_iter()
            .rev()
            .map(|(r, w)| {
                drop(w);
                read_to_string(r)
            })
            .collect();
        assert_eq!(outs, ["0\n", "1\n", "2\n", "3\n"]);
    }

    /// The same descriptor may be given twice; it then appears at both numbers.
    #[test]
    fn child_fds_may_repeat() {
        let _fork = fork_lock();
        let (r, w) = pipe();
        let pid = sh(
            "echo a >&3 && echo b >&4",
            &[w.as_fd(), w.as_fd()],
            false,
            &[],
        );
        assert_eq!(wait_code(pid), 0);
        drop(w);
        assert_eq!(read_to_string(r), "a\nb\n");
    }

    /// Nothing above the placed descriptors is open in the child, not even a descriptor the
    /// parent left inheritable (no close-on-exec).
    #[test]
    fn nothing_else_is_inherited() {
        let _fork = fork_lock();
        let (r, w) = pipe();
        let (leak_r, leak_w) = nix::unistd::pipe().expect("pipe");
        assert_eq!(
            fcntl(&leak_w, FcntlArg::F_GETFD),
            Ok(0),
            "the parent's copy is inheritable"
        );
        let leak = leak_w.as_raw_fd();
        let top = leak.max(64);
        let script = format!(
            "[ -e /proc/self/fd/3 ] || exit 10; \
             n=4; while [ $n -le {top} ]; do \
               [ -e /proc/self/fd/$n ] && exit $((n % 200 + 11)); n=$((n + 1)); \
             done; \
             for n in 0 1 2; do [ -e /proc/self/fd/$n ] || exit 9; done; exit 0"
        );
        let pid = sh(&script, &[w.as_fd()], false, &[]);
        assert_eq!(wait_code(pid), 0, "descriptor {leak} leaked or 3 missing");
        drop((r, leak_r));
    }

    /// With no descriptors to place, everything from 3 up is closed.
    #[test]
    fn no_child_fds_closes_from_three() {
        let _fork = fork_lock();
        let pid = sh(
            "n=3; while [ $n -le 64 ]; do [ -e /proc/self/fd/$n ] && exit 1; n=$((n + 1)); done",
            &[],
            false,
            &[],
        );
        assert_eq!(wait_code(pid), 0);
    }

    /// The parent's descriptors are untouched: spawn placed copies, not the originals.
    #[test]
    fn parent_fds_stay_open_and_unchanged() {
        let _fork = fork_lock();
        let (r, w) = pipe();
        let before = fcntl(&w, FcntlArg::F_GETFD).unwrap();
        let pid = sh("exit 0", &[w.as_fd()], false, &[]);
        assert_eq!(wait_code(pid), 0);
        assert_eq!(fcntl(&w, FcntlArg::F_GETFD), Ok(before));
        nix::unistd::write(&w, b"x").unwrap();
        drop(w);
        assert_eq!(read_to_string(r), "x");
    }

    /// The child's `SigBlk` (from /proc/self/status), as the hex mask, through a pipe.
    fn child_blocked_mask(blocked: &[Signal]) -> u64 {
        let (r, w) = pipe();
        let pid = sh(
            "while read k v; do [ \"$k\" = SigBlk: ] && echo $v >&3; done < /proc/self/status; exit 0",
            &[w.as_fd()],
            false,
            blocked,
        );
        assert_eq!(wait_code(pid), 0);
        drop(w);
        u64::from_str_radix(read_to_string(r).trim(), 16).expect("a hex mask")
    }

    fn bit(signal: Signal) -> u64 {
        1 << (signal as u32 - 1)
    }

    #[test]
    fn blocked_signals_are_blocked_in_the_child() {
        let _fork = fork_lock();
        let mask = child_blocked_mask(&[Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGCHLD]);
        for signal in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGCHLD] {
            assert_ne!(mask & bit(signal), 0, "{signal} not blocked: {mask:#x}");
        }
        assert_eq!(mask & bit(Signal::SIGUSR2), 0, "{mask:#x}");
    }

    #[test]
    fn nothing_blocked_by_default() {
        let _fork = fork_lock();
        // The test thread blocks nothing, and spawn leaves the mask alone when given nothing.
        assert_eq!(child_blocked_mask(&[]), 0);
    }

    /// Fields 1 (pid) and 5 (process group) of the child's /proc/self/stat.
    fn child_pid_and_group(new_group: bool) -> (Pid, String) {
        let (r, w) = pipe();
        let pid = sh(
            "read pid comm state ppid pgrp rest < /proc/self/stat; echo $pid $pgrp >&3",
            &[w.as_fd()],
            new_group,
            &[],
        );
        assert_eq!(wait_code(pid), 0);
        drop(w);
        (pid, read_to_string(r))
    }

    #[test]
    fn new_group_makes_a_group_leader() {
        let _fork = fork_lock();
        let (pid, out) = child_pid_and_group(true);
        assert_eq!(out, format!("{pid} {pid}\n"));
    }

    #[test]
    fn without_new_group_the_child_stays_in_ours() {
        let _fork = fork_lock();
        let (pid, out) = child_pid_and_group(false);
        assert_eq!(out, format!("{pid} {}\n", getpgrp()));
    }

    /// An exec failure is reported to the caller, not left to a child.
    #[test]
    fn exec_failure_is_an_error() {
        let _fork = fork_lock();
        let argv = [c"nonexistent".to_owned()];
        let res = spawn(c"/nonexistent/procstart-test", &argv, &[], &[], false, &[]);
        assert_eq!(res, Err(Errno::ENOENT));
    }

    /// A descriptor that is not open cannot be placed: spawn fails before starting anything.
    #[test]
    fn closed_child_fd_is_an_error() {
        let _fork = fork_lock();
        let (r, w) = pipe();
        let raw = w.into_raw_fd();
        // SAFETY: `raw` is open (just released by `w`) and closed right after being borrowed.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        // SAFETY: nothing else owns `raw`; `fd` is not used after this close until the spawn
        // below, which must fail on it with EBADF.
        unsafe { libc::close(raw) };
        let argv = [c"sh".to_owned()];
        let res = spawn(c"/bin/sh", &argv, &[], &[fd], false, &[]);
        assert_eq!(res, Err(Errno::EBADF));
        drop(r);
    }
}
