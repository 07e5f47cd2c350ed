//! The one way an operating-system error becomes a Python exception: `OSError(errno, text)`,
//! which Python turns into the matching subclass (`FileNotFoundError`, `PermissionError` …) as
//! it does for its own `os` functions.

use nix::errno::Errno;
use pyo3::exceptions::PyOSError;
use pyo3::PyErr;

pub fn os_error(e: Errno) -> PyErr {
    PyOSError::new_err((e as i32, e.desc()))
}
