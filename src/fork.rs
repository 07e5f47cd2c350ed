//! The fork start method: CPython's `popen_fork.Popen._launch` with a pidfd sentinel.

use std::panic::AssertUnwindSafe;

use pyo3::prelude::*;

use crate::bootstrap::{self, ChildSetup};
use crate::popen::{os_error, ChildLink, Popen};
use crate::sys::fork::{fork, Forked};

pub fn launch(py: Python<'_>, process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    bootstrap::flush_std_streams(py)?;
    // Everything the child needs exists before fork(): between fork() and
    // PyOS_AfterFork_Child() nothing else runs.
    let setup = ChildSetup::new(process, "fork")?;
    let link = ChildLink::new().map_err(os_error)?;
    match fork(py).map_err(os_error)? {
        Forked::Child => {
            let parent_sentinel = link.into_child();
            // A panic must not unwind out of start() into the parent's program, now running
            // in the child.
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| setup.run(py, parent_sentinel)));
            drop(outcome);
            // SAFETY: _exit ends the child at once; nothing of the parent's runs in it.
            unsafe { libc::_exit(1) }
        }
        Forked::Parent(pid) => {
            drop(setup);
            link.into_popen(py, pid, "fork")
        }
    }
}
