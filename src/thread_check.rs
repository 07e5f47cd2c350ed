//! What starting a fork child does while other Python threads run
//! (`procstart.set_fork_thread_check`): a fork copies only the calling thread, so a lock
//! another thread holds at that moment stays locked in the child.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning, PyValueError};
use pyo3::prelude::*;

use crate::hooks::hooks;
use crate::imports::loaded;

/// What starting a fork child does while other Python threads run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadCheck {
    Warn = 0,
    Error = 1,
    Ignore = 2,
}

impl ThreadCheck {
    const ALL: [ThreadCheck; 3] = [ThreadCheck::Warn, ThreadCheck::Error, ThreadCheck::Ignore];

    fn name(self) -> &'static str {
        match self {
            ThreadCheck::Warn => "warn",
            ThreadCheck::Error => "error",
            ThreadCheck::Ignore => "ignore",
        }
    }

    fn current() -> Self {
        Self::ALL[usize::from(THREAD_CHECK.load(Ordering::SeqCst))]
    }
}

/// The current `ThreadCheck`, as its discriminant.
static THREAD_CHECK: AtomicU8 = AtomicU8::new(ThreadCheck::Warn as u8);
/// The warning is given once per process.
static WARNED: AtomicBool = AtomicBool::new(false);

/// `procstart.set_fork_thread_check('warn' | 'error' | 'ignore')`: what `start()` with the
/// fork method does when other threads are running. Setting it re-arms the one warning.
#[pyfunction]
pub fn set_fork_thread_check(mode: &Bound<'_, PyAny>) -> PyResult<()> {
    let chosen = mode
        .extract::<String>()
        .ok()
        .and_then(|m| ThreadCheck::ALL.into_iter().find(|known| known.name() == m));
    match chosen {
        Some(check) => {
            THREAD_CHECK.store(check as u8, Ordering::SeqCst);
            forget_thread_warning();
            Ok(())
        }
        None => Err(PyValueError::new_err(format!(
            "fork thread check must be 'warn', 'error' or 'ignore', not {}",
            mode.repr()?
        ))),
    }
}

#[pyfunction]
pub fn get_fork_thread_check() -> &'static str {
    ThreadCheck::current().name()
}

/// Warn again at the next fork with threads (a new fork child, or a new setting).
pub fn forget_thread_warning() {
    WARNED.store(false, Ordering::SeqCst);
}

/// Before a fork: other threads may hold locks (the import lock, a logging handler's, a
/// Queue's) that stay locked for ever in the child, which has only the forking thread. Names
/// them in a warning (once) or an error, as `set_fork_thread_check` says.
pub fn check_threads(py: Python<'_>) -> PyResult<()> {
    let mode = ThreadCheck::current();
    if mode == ThreadCheck::Ignore || (mode == ThreadCheck::Warn && WARNED.load(Ordering::SeqCst)) {
        return Ok(());
    }
    // Without threading imported, no Python thread was ever started.
    if loaded(py, "threading")?.is_none() {
        return Ok(());
    }
    let names: Vec<String> = hooks(py)?.other_threads.bind(py).call0()?.extract()?;
    if names.is_empty() {
        return Ok(());
    }
    let message = format!(
        "fork() while other threads run ({}): the child gets only the calling thread, so a \
         lock another thread holds at that moment stays locked in the child for ever, which \
         can hang it. Use the 'forkserver' or 'spawn' start method, or \
         procstart.set_fork_thread_check('ignore') if these threads are fork-safe.",
        names.join(", ")
    );
    if mode == ThreadCheck::Error {
        return Err(PyRuntimeError::new_err(message));
    }
    WARNED.store(true, Ordering::SeqCst);
    let message = CString::new(message).map_err(|e| PyValueError::new_err(e.to_string()))?;
    PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)
}
