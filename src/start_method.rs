//! The three start methods, as a type: a launcher, a `Popen` and a child's bootstrap each know
//! which one made them, and a match on it names every method.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StartMethod {
    Fork,
    Spawn,
    ForkServer,
}

impl StartMethod {
    /// In CPython's order (`context._concrete_contexts`).
    pub const ALL: [StartMethod; 3] = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ];

    /// The name `multiprocessing` uses for it.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// The method a Python object (a context's `_name`, a class's `_start_method`) names, with
    /// CPython's error for any other.
    pub fn named(method: &Bound<'_, PyAny>) -> PyResult<Self> {
        for candidate in Self::ALL {
            if method.eq(candidate.name())? {
                return Ok(candidate);
            }
        }
        Err(PyValueError::new_err(format!(
            "cannot find context for {}",
            method.repr()?
        )))
    }
}
