//! Python modules procstart calls into, each imported once and kept. Going through the import
//! machinery again on every use costs time, and in a fork child it costs dozens of
//! copy-on-write page faults; a kept reference costs neither.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

fn kept<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyModule>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyModule>> {
    cell.get_or_try_init(py, || py.import(name).map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// `sys.modules.get(name)`: a module only if something already imported it.
pub fn loaded<'py>(py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let module = sys(py)?
        .getattr(pyo3::intern!(py, "modules"))?
        .call_method1(pyo3::intern!(py, "get"), (name,))?;
    Ok((!module.is_none()).then_some(module))
}

macro_rules! modules {
    ($($fn_name:ident => $module:literal),* $(,)?) => {
        $(
            pub fn $fn_name(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
                static CELL: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
                kept(py, &CELL, $module)
            }
        )*
    };
}

modules! {
    sys => "sys",
    builtins => "builtins",
    os => "os",
    atexit => "atexit",
    itertools => "itertools",
}
