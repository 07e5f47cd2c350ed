//! The parent's standard streams around a start.

use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use crate::imports::sys;

/// `util._flush_std_streams()`: flush `sys.stdout`/`sys.stderr`, tolerating `None` and
/// closed streams, so a child neither loses nor repeats what the parent had buffered.
pub fn flush_std_streams(py: Python<'_>) -> PyResult<()> {
    let sys = sys(py)?;
    for name in [intern!(py, "stdout"), intern!(py, "stderr")] {
        match sys.getattr(name)?.call_method0(intern!(py, "flush")) {
            Err(e)
                if e.is_instance_of::<PyAttributeError>(py)
                    || e.is_instance_of::<PyValueError>(py) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}
