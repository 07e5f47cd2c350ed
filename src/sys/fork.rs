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

/// Whose child the new process is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parentage {
    /// This process's, as `fork()` makes it.
    Own,
    /// This process's parent's (`clone(CLONE_PARENT)`): the fork server makes the children of
    /// the process that started it this way, so that process reaps them itself and they
    /// outlive a dead server with their exit status intact. Only for a single-threaded caller:
    /// a raw `clone` skips glibc's fork bookkeeping, which only matters for the locks and
    /// thread list of other threads.
    Parents,
}

/// Forks the interpreter. The `Python` token proves the GIL is held, which
/// `PyOS_BeforeFork` requires.
pub fn fork(py: Python<'_>) -> nix::Result<Forked> {
    fork_as(py, Parentage::Own)
}

pub fn fork_as(_py: Python<'_>, parentage: Parentage) -> nix::Result<Forked> {
    // SAFETY: called with the GIL held, as PyOS_BeforeFork requires; it takes the import lock
    // and runs the before-fork hooks.
    unsafe { ffi::PyOS_BeforeFork() };
    // In the child the only thing done before re-entering Python is PyOS_AfterFork_Child, which
    // CPython's own os.fork calls at the same point. After it the child also uses procstart's
    // Rust mutexes, which is sound because they are only ever taken with the GIL held (which
    // this thread holds now) and never across a GIL release or a call into Python: no other
    // thread can be holding one.
    let pid = match parentage {
        // SAFETY: fork has no memory-safety preconditions of its own (see above for the child).
        Parentage::Own => unsafe { libc::fork() },
        // SAFETY: as fork(2): without CLONE_VM the child gets a copy of this address space and
        // no stack or TLS argument is used; the caller is single-threaded (see Parentage).
        Parentage::Parents => unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::c_long::from(libc::CLONE_PARENT | libc::SIGCHLD),
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            ) as libc::pid_t
        },
    };
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
