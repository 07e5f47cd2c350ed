//! Where a Python buffer object's bytes are (`bytes`, `bytearray`, `memoryview`, a NumPy array's
//! data), as a `Span` for the kernel: through CPython's old buffer calls, which the stable ABI
//! keeps for abi3 extensions (abi3 for 3.10 has no `PyObject_GetBuffer`). A span stays right as
//! long as the object keeps that memory: its holder must pin it (a `memoryview`'s export keeps a
//! `bytearray` from being resized).

use std::ffi::{c_int, c_void};

use pyo3::ffi::{PyObject, Py_ssize_t};
use pyo3::prelude::*;

use crate::sys::mem::Span;

extern "C" {
    fn PyObject_AsReadBuffer(
        obj: *mut PyObject,
        buffer: *mut *const c_void,
        len: *mut Py_ssize_t,
    ) -> c_int;
    fn PyObject_AsWriteBuffer(
        obj: *mut PyObject,
        buffer: *mut *mut c_void,
        len: *mut Py_ssize_t,
    ) -> c_int;
}

fn span(py: Python<'_>, res: c_int, start: usize, len: Py_ssize_t) -> PyResult<Span> {
    if res != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(Span {
        start,
        len: usize::try_from(len).unwrap_or(0),
    })
}

/// The bytes of a contiguous buffer (`TypeError` for an object that is none).
pub fn readable(obj: &Bound<'_, PyAny>) -> PyResult<Span> {
    let mut start: *const c_void = std::ptr::null();
    let mut len: Py_ssize_t = 0;
    // SAFETY: `obj` is alive (borrowed, the GIL held); the call writes only the two
    // out-parameters, which live across it.
    let res = unsafe { PyObject_AsReadBuffer(obj.as_ptr(), &mut start, &mut len) };
    span(obj.py(), res, start as usize, len)
}

/// The bytes of a contiguous, writable buffer (`TypeError` for an object that is none).
pub fn writable(obj: &Bound<'_, PyAny>) -> PyResult<Span> {
    let mut start: *mut c_void = std::ptr::null_mut();
    let mut len: Py_ssize_t = 0;
    // SAFETY: as in `readable`.
    let res = unsafe { PyObject_AsWriteBuffer(obj.as_ptr(), &mut start, &mut len) };
    span(obj.py(), res, start as usize, len)
}
