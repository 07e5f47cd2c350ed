//! The fork start method: CPython's `popen_fork.Popen._launch` with a pidfd sentinel.

use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;

use nix::errno::Errno;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, Pid};
use pyo3::prelude::*;

use crate::bootstrap::{self, ChildSetup};
use crate::popen::{os_error, Popen};
use crate::sys::fork::{fork, Forked};
use crate::sys::pidfd;

/// How the child learns that this process has gone: a pidfd of this process where the kernel
/// has one, else CPython's pipe whose write end the parent keeps.
struct ParentSentinel {
    child_end: OwnedFd,
    parent_end: Option<OwnedFd>,
}

impl ParentSentinel {
    fn new() -> nix::Result<Self> {
        if pidfd::supported() {
            Ok(ParentSentinel {
                child_end: pidfd::open(Pid::this())?,
                parent_end: None,
            })
        } else {
            let (child_r, parent_w) = pipe2(OFlag::O_CLOEXEC)?;
            Ok(ParentSentinel {
                child_end: child_r,
                parent_end: Some(parent_w),
            })
        }
    }
}

pub fn launch(py: Python<'_>, process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    bootstrap::flush_std_streams(py)?;
    // Everything the child needs exists before fork(): between fork() and
    // PyOS_AfterFork_Child() nothing else runs.
    let setup = ChildSetup::new(process, "fork")?;
    let parent_sentinel = ParentSentinel::new().map_err(os_error)?;
    // Without pidfd the parent's sentinel is CPython's pipe: EOF once the child (and whoever
    // inherited the write end) has exited.
    let exit_pipe = if pidfd::supported() {
        None
    } else {
        Some(pipe2(OFlag::O_CLOEXEC).map_err(os_error)?)
    };
    match fork(py).map_err(os_error)? {
        Forked::Child => {
            let ParentSentinel {
                child_end,
                parent_end,
            } = parent_sentinel;
            drop(parent_end);
            // Both stay open for the child's lifetime: the parent sentinel is read through
            // parent_process(); the exit pipe's write end is what the parent waits on.
            let sentinel_fd = child_end.into_raw_fd();
            if let Some((r, w)) = exit_pipe {
                drop(r);
                let _ = w.into_raw_fd();
            }
            // A panic must not unwind out of start() into the parent's program, now running
            // in the child.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| setup.run(py, sentinel_fd)));
            drop(outcome);
            // SAFETY: _exit ends the child at once; nothing of the parent's runs in it.
            unsafe { libc::_exit(1) }
        }
        Forked::Parent(pid) => {
            drop(setup);
            let ParentSentinel {
                child_end,
                parent_end,
            } = parent_sentinel;
            drop(child_end);
            let (sentinel, is_pidfd) = match exit_pipe {
                Some((r, w)) => {
                    drop(w);
                    (r, false)
                }
                None => match pidfd::open(pid) {
                    Ok(fd) if pidfd::is_own_child(fd.as_fd()) => (fd, true),
                    // Already reaped by someone else (SIGCHLD ignored, a waitpid(-1) in
                    // another thread): the child ran and is gone, its status with it. The
                    // PID may already name a stranger, so it is never signalled or waited on.
                    Ok(_) | Err(Errno::ESRCH) => return Popen::lost(pid, "fork").map_err(os_error),
                    Err(e) => {
                        // No handle on a child that is still ours (unreaped, so its PID is
                        // not reused): stop and reap it rather than leave it running unseen.
                        let _ = kill(pid, Signal::SIGKILL);
                        while let Err(Errno::EINTR) = py.detach(|| waitpid(pid, None)) {}
                        return Err(os_error(e));
                    }
                },
            };
            Ok(Popen::new(pid, "fork", sentinel, is_pidfd, parent_end))
        }
    }
}
