//! A child that dies with its parent (`die_with_parent=True`, or a daemon), armed on arrival.

use std::os::fd::{BorrowedFd, RawFd};

use nix::unistd::Pid;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::os_error;
use crate::options::ParentDeath;
use crate::sys::pdeath;

/// Makes this new child die with its parent `parent`, whose sentinel is `sentinel`.
pub fn arm_parent_death(mode: ParentDeath, parent: Pid, sentinel: RawFd) -> PyResult<()> {
    match mode {
        ParentDeath::Signal => pdeath::kill_on_parent_exit(parent).map_err(os_error),
        ParentDeath::Watch => {
            // SAFETY: the parent sentinel stays open for the child's whole life
            // (`parent_process()` waits on it); the watcher takes its own copy.
            let sentinel = unsafe { BorrowedFd::borrow_raw(sentinel) };
            pdeath::watch_parent(sentinel).map_err(PyErr::from)
        }
    }
}

/// In a spawned or fork-server child, as soon as it has its preparation data and before it
/// imports anything of the parent's: `die_with_parent` as the parent's launcher chose it.
#[pyfunction]
pub fn _die_with_parent(mode: &str, parent_pid: i32, sentinel: RawFd) -> PyResult<()> {
    if sentinel < 0 {
        return Err(PyValueError::new_err(format!(
            "invalid sentinel {sentinel}"
        )));
    }
    arm_parent_death(
        ParentDeath::from_name(mode)?,
        Pid::from_raw(parent_pid),
        sentinel,
    )
}
