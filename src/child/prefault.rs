//! The pages of a big object a spawned or fork-server child reads from its payload pipe
//! (`procstart/spawn.py`'s `_PayloadReader`), faulted in from the end on a second thread while
//! the reading thread copies into them from the start. The object is new: every page of it costs
//! the reader a fault (the kernel zeroes it) before the copy, as much again as the copy itself.
//! With two threads the faults of the back half are taken beside the copy of the front half;
//! the two meet where the reader has got to, and the rest of the walk finds its pages in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use pyo3::prelude::*;

use crate::buffers;
use crate::sys::mem::{populate_write, Span};
use crate::sys::thread::spawn_deaf;

/// How much the walk populates per step: small enough to stop soon once the read is done.
const STEP: usize = 256 << 10;
/// A small stack: the thread only makes system calls.
const STACK: usize = 64 << 10;

/// The walk from the end of a buffer to its start, while the reader is at it.
#[pyclass(module = "procstart._procstart")]
pub struct Prefault {
    done: Arc<AtomicBool>,
    walk: Option<JoinHandle<()>>,
}

impl Prefault {
    fn finish(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(walk) = self.walk.take() {
            let _ = walk.join();
        }
    }
}

#[pymethods]
impl Prefault {
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Ends the walk before the reader lets go of the buffer.
    fn __exit__(
        &mut self,
        py: Python<'_>,
        _type: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> bool {
        py.detach(|| self.finish());
        false
    }
}

impl Drop for Prefault {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts faulting in `buffer`'s pages from its end; a context manager the reader holds while
/// it reads into `buffer` from its start.
#[pyfunction]
pub fn _prefault(buffer: &Bound<'_, PyAny>) -> PyResult<Prefault> {
    let buffer = buffers::writable(buffer)?;
    let done = Arc::new(AtomicBool::new(false));
    let walking = Arc::clone(&done);
    // A thread that cannot start (a thread limit reached) only leaves the faults to the reader.
    let walk = spawn_deaf("procstart-prefault", STACK, move || {
        let mut end = buffer.len;
        while end > 0 && !walking.load(Ordering::Relaxed) {
            let from = end.saturating_sub(STEP);
            let step = Span {
                start: buffer.start + from,
                len: end - from,
            };
            // Before Linux 5.14 (EINVAL) the reader takes the faults itself, as without us.
            if populate_write(step).is_err() {
                return;
            }
            end = from;
        }
    })
    .ok();
    Ok(Prefault { done, walk })
}
