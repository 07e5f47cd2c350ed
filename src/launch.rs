//! Chooses the launcher for a start method. Each launcher returns the `Popen` through which
//! the parent waits for and signals the child.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::popen::Popen;
use crate::{fork, forkserver, spawn};

pub fn launch(py: Python<'_>, method: &'static str, process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    match method {
        "fork" => fork::launch(py, process),
        "spawn" => spawn::launch(py, process),
        "forkserver" => forkserver::client::launch(py, process),
        other => Err(PyValueError::new_err(format!(
            "cannot find context for {other:?}"
        ))),
    }
}
