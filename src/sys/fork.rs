//! `fork()` bracketed the way CPython's `os.fork()` brackets it, so that
//! `os.register_at_fork` hooks, the import lock and the GIL state are handled.

use nix::unistd::Pid;
use pyo3::ffi;
use pyo3::Python;

pub enum Forked {
    Parent(Pid),
    /// Back in Python: `PyOS_AfterFork_Child` has run, the calling thread holds the GIL and
    /// is the only thread.
    Child,
}

/// Forks the interpreter. The `Python` token proves the GIL is held, which
/// `PyOS_BeforeFork` requires.
///
/// # Safety
///
/// The child is a copy with only the calling thread: every lock another thread held stays
/// held there for ever. The caller must hold no lock that the child will take, and no other
/// thread may hold one either: procstart's Rust mutexes are taken only with the GIL held and
/// never across a GIL release or a call into Python, so while the caller holds the GIL none
/// of them is held elsewhere. In the child, the caller does nothing that needs another thread.
pub unsafe fn fork(_py: Python<'_>) -> nix::Result<Forked> {
    // SAFETY: called with the GIL held, as PyOS_BeforeFork requires; it takes the import lock
    // and runs the before-fork hooks.
    unsafe { ffi::PyOS_BeforeFork() };
    // SAFETY: fork has no memory-safety preconditions of its own; in the child the only thing
    // done before re-entering Python is PyOS_AfterFork_Child, which CPython's own os.fork calls
    // at the same point. The locks the child may take afterwards are this function's caller's
    // to vouch for (# Safety).
    let pid = unsafe { libc::fork() };
    match pid {
        0 => {
            // SAFETY: first call in the child, as in CPython's os.fork; it re-initialises the
            // GIL, threading state and locks for the single surviving thread.
            unsafe { ffi::PyOS_AfterFork_Child() };
            Ok(Forked::Child)
        }
        -1 => {
            let err = nix::errno::Errno::last();
            // SAFETY: pairs the PyOS_BeforeFork above (releases the import lock).
            unsafe { ffi::PyOS_AfterFork_Parent() };
            Err(err)
        }
        pid => {
            // SAFETY: pairs the PyOS_BeforeFork above (releases the import lock, runs hooks).
            unsafe { ffi::PyOS_AfterFork_Parent() };
            Ok(Forked::Parent(Pid::from_raw(pid)))
        }
    }
}
