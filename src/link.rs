//! The descriptors that tie a parent and a new child together, whichever start method makes
//! it: the child's parent sentinel and, on kernels without pidfd, the pipes that stand in for
//! one.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::fcntl::OFlag;
use nix::unistd::{pipe2, Pid};

use crate::sys::pidfd;

/// The write ends of the parent-alive pipes (kernels without pidfd) this process holds, one per
/// child not yet closed: a fork child inherits them all, and would keep its siblings' parent
/// sentinels from ever reading end-of-file, so it lets go of them
/// ([`release_inherited_alive_pipes`]). Only touched with the GIL held.
static ALIVE_WRITE_ENDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// A parent-alive pipe's write end, listed in `ALIVE_WRITE_ENDS` while open.
pub struct AliveWriteEnd(OwnedFd);

impl AliveWriteEnd {
    fn new(fd: OwnedFd) -> Self {
        ALIVE_WRITE_ENDS.lock().unwrap().push(fd.as_raw_fd());
        AliveWriteEnd(fd)
    }
}

impl Drop for AliveWriteEnd {
    fn drop(&mut self) {
        let fd = self.0.as_raw_fd();
        ALIVE_WRITE_ENDS
            .lock()
            .unwrap()
            .retain(|&listed| listed != fd);
    }
}

/// In a new fork child: closes the parent-alive pipes it inherited from its parent (devnull
/// takes their numbers, which the inherited `Popen` objects still own and will close).
pub fn release_inherited_alive_pipes() {
    let fds = std::mem::take(&mut *ALIVE_WRITE_ENDS.lock().unwrap());
    if fds.is_empty() {
        return;
    }
    let Ok(devnull) = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    for fd in fds {
        // SAFETY: dup3 only replaces descriptor `fd` (one of the listed write ends, open in this
        // child) by a copy of devnull; nothing else about either descriptor changes.
        unsafe { libc::dup3(devnull.as_raw_fd(), fd, libc::O_CLOEXEC) };
    }
}

/// The descriptors that tie a parent and a new child together, made before the child
/// starts: how the child learns that the parent has gone, and, without pidfd, how the parent
/// learns that the child has.
pub struct ChildLink {
    /// The child's parent sentinel: a pidfd of this process, or the read end of a pipe whose
    /// write end (`parent_alive_w`) this process keeps until the child is closed.
    parent_sentinel: OwnedFd,
    parent_alive_w: Option<AliveWriteEnd>,
    /// Without pidfd: CPython's pipe, read by the parent, written end held by the child until
    /// it exits.
    exit_pipe: Option<(OwnedFd, OwnedFd)>,
}

impl ChildLink {
    pub fn new() -> nix::Result<Self> {
        if pidfd::supported() {
            return Ok(ChildLink {
                parent_sentinel: pidfd::open(Pid::this())?,
                parent_alive_w: None,
                exit_pipe: None,
            });
        }
        let (child_r, parent_w) = pipe2(OFlag::O_CLOEXEC)?;
        Ok(ChildLink {
            parent_sentinel: child_r,
            parent_alive_w: Some(AliveWriteEnd::new(parent_w)),
            exit_pipe: Some(pipe2(OFlag::O_CLOEXEC)?),
        })
    }

    /// The descriptors the child holds: its parent sentinel, then the exit pipe's write end
    /// when there is one.
    pub fn child_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds = vec![self.parent_sentinel.as_fd()];
        fds.extend(self.exit_pipe.as_ref().map(|(_, w)| w.as_fd()));
        fds
    }

    /// In a fork child: the child's ends stay open for its whole life, the parent's are
    /// closed; returns the parent sentinel's number.
    pub fn into_child(self) -> RawFd {
        drop(self.parent_alive_w);
        if let Some((r, w)) = self.exit_pipe {
            drop(r);
            let _ = w.into_raw_fd();
        }
        self.parent_sentinel.into_raw_fd()
    }

    /// In the parent once the child holds its ends: closes them here, and returns what the
    /// parent keeps without pidfd (the exit pipe's read end, the parent-alive pipe's write end).
    pub fn into_parent_ends(self) -> (Option<OwnedFd>, Option<AliveWriteEnd>) {
        (self.exit_pipe.map(|(r, _w)| r), self.parent_alive_w)
    }
}
