//! Making a child die with its parent.
//!
//! `PR_SET_PDEATHSIG` is the kernel's way, but it fires when the *thread* that created the
//! child exits, and for the kernel parent only: right for a child started from the main thread
//! by fork or posix_spawn, wrong for one started from a worker thread (it would die with that
//! thread) and for a fork-server child (whose kernel parent is the server). Those get a watcher
//! thread instead, blocked in poll(2) on the parent sentinel (the parent's pidfd, or a pipe the
//! parent holds), that kills the process when the parent has gone.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::{getppid, Pid};

use crate::sys::poll::{wait_readable, Readiness};

/// A small stack: the thread only waits.
const WATCHER_STACK: usize = 64 * 1024;

/// Whether the calling thread is the process's main thread (the one whose exit ends it).
pub fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

fn die() -> ! {
    let _ = kill(Pid::this(), Signal::SIGKILL);
    // SAFETY: not reached (SIGKILL cannot be caught); _exit has no preconditions.
    unsafe { libc::_exit(1) }
}

/// Asks the kernel to SIGKILL this process when its parent (the thread that created it) exits,
/// then checks that `parent` is still the parent: had it died before the request, the process
/// would already have been adopted and the signal never come.
pub fn kill_on_parent_exit(parent: Pid) -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, signal) reads only its integer arguments.
    let res = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::from(Signal::SIGKILL as u32),
            0,
            0,
            0,
        )
    };
    Errno::result(res)?;
    if getppid() != parent {
        die();
    }
    Ok(())
}

/// Starts a thread that kills this process once `sentinel` (the parent's pidfd, or the read
/// end of a pipe only the parent writes to) becomes readable. The thread owns a copy of it.
pub fn watch_parent(sentinel: BorrowedFd<'_>) -> std::io::Result<()> {
    let sentinel = sentinel.try_clone_to_owned()?;
    // The thread starts with every signal blocked (a thread inherits its creator's mask), so
    // that signals meant for the process go to the threads that handle them.
    let previous = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let started = std::thread::Builder::new()
        .name("procstart-parent-watch".into())
        .stack_size(WATCHER_STACK)
        .spawn(move || loop {
            match wait_readable(sentinel.as_raw_fd(), None) {
                Ok(Readiness::Interrupted) => {}
                // Readable (the parent exited, or closed its end), or unwatchable: the child
                // must not run on without a parent it can see.
                _ => die(),
            }
        });
    previous.thread_set_mask()?;
    started.map(drop)
}
