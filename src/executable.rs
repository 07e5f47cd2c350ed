//! The interpreter that spawn children, the fork server and the tracker run:
//! CPython's `spawn.set_executable`/`get_executable`.

use std::sync::Mutex;

use pyo3::prelude::*;

/// `None` until `set_executable` is called; then what it stored (possibly Python `None`).
static EXECUTABLE: Mutex<Option<Py<PyAny>>> = Mutex::new(None);

/// Stores `os.fsencode(executable)` (so `str`, `bytes` and path-like all work), or `None`.
pub fn set(executable: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = executable.py();
    let value = if executable.is_none() {
        executable.clone()
    } else {
        crate::imports::os(py)?.call_method1("fsencode", (executable,))?
    };
    let old = EXECUTABLE.lock().unwrap().replace(value.unbind());
    // Released after the lock: its finalizer may run Python code.
    drop(old);
    Ok(())
}

/// `sys.executable` unless `set_executable` chose another.
#[pyfunction]
pub fn get_executable(py: Python<'_>) -> PyResult<Py<PyAny>> {
    if let Some(exe) = EXECUTABLE.lock().unwrap().as_ref() {
        return Ok(exe.clone_ref(py));
    }
    Ok(crate::imports::sys(py)?.getattr("executable")?.unbind())
}
