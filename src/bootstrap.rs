//! The Rust side of the child bootstrap: every start method ends up calling the one Python
//! function `procstart._bootstrap.child_main` in the child, and exits with what it returns.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

fn bootstrap_attr<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("procstart._bootstrap").map(Bound::unbind))?
        .bind(py)
        .getattr(name)
}

/// Flushes `sys.stdout`/`sys.stderr` so the child does not inherit (and print twice) what
/// the parent has buffered.
pub fn flush_std_streams(py: Python<'_>) -> PyResult<()> {
    bootstrap_attr(py, "flush_std_streams")?.call0().map(drop)
}

/// Runs the process in this (child) interpreter and never returns: the exit code of
/// `child_main` becomes the process's.
pub fn run_child(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    parent_sentinel: i32,
    method: &str,
) -> ! {
    let code = bootstrap_attr(py, "child_main")
        .and_then(|main| main.call1((process, parent_sentinel, method)))
        .and_then(|code| code.extract::<i32>());
    let code = code.unwrap_or_else(|err| {
        // child_main handles the process's own errors; reaching here means the bootstrap
        // itself failed (e.g. it could not be imported).
        err.print(py);
        1
    });
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // unwinding into the parent's Python frames, exactly as os._exit in CPython's popen_fork.
    unsafe { libc::_exit(code) }
}
