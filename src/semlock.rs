//! `SemLock`: a lock or semaphore shared between processes, over a named POSIX semaphore
//! (CPython's `_multiprocessing.SemLock`, same API and messages). `procstart/synchronize.py`
//! builds `Lock`, `RLock`, `Semaphore` and `BoundedSemaphore` on it.
//!
//! Waits release the GIL and stay interruptible: a signal wakes `sem_wait` with `EINTR`, Python's
//! handlers run (Ctrl-C raises `KeyboardInterrupt`), and the wait goes on if they return.

use std::ffi::CString;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use pyo3::exceptions::{PyAssertionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::os_error;

const RECURSIVE_MUTEX: i32 = 0;
const SEMAPHORE: i32 = 1;

/// The semaphore's address, as CPython exposes it (`handle`); valid in this process and in its
/// fork children.
#[derive(Clone, Copy)]
struct Handle(usize);

impl Handle {
    fn ptr(self) -> *mut libc::sem_t {
        self.0 as *mut libc::sem_t
    }
}

fn c_name(name: &str) -> PyResult<CString> {
    CString::new(name).map_err(|_| PyValueError::new_err("embedded null byte"))
}

fn open(name: &str, create: Option<u32>) -> PyResult<Handle> {
    let name = c_name(name)?;
    // SAFETY: sem_open takes a NUL-terminated name (and, with O_CREAT, a mode and an initial
    // value as variadic unsigned ints) and returns SEM_FAILED or a mapping it owns.
    let sem = unsafe {
        match create {
            Some(value) => libc::sem_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                value,
            ),
            None => libc::sem_open(name.as_ptr(), 0),
        }
    };
    if sem == libc::SEM_FAILED {
        return Err(os_error(Errno::last()));
    }
    Ok(Handle(sem as usize))
}

/// `sem_unlink(name)` (CPython's `_multiprocessing.sem_unlink`).
#[pyfunction]
pub fn sem_unlink(name: &str) -> PyResult<()> {
    let name = c_name(name)?;
    // SAFETY: name is NUL-terminated and lives for the call.
    Errno::result(unsafe { libc::sem_unlink(name.as_ptr()) })
        .map(drop)
        .map_err(os_error)
}

/// A flag as CPython's argument clinic takes it (`bool(accept={int})`): a bool or an int.
fn int_flag(value: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(value.extract::<i64>()? != 0)
}

fn thread_ident() -> u64 {
    // SAFETY: returns the calling thread's identifier; no preconditions.
    unsafe { pyo3::ffi::PyThread_get_thread_ident() as u64 }
}

#[pyclass(frozen, module = "procstart._procstart")]
pub struct SemLock {
    handle: Handle,
    #[pyo3(get)]
    kind: i32,
    #[pyo3(get)]
    maxvalue: i32,
    #[pyo3(get)]
    name: Option<String>,
    /// How many times this thread holds it (recursion for RLock; 0 or 1 otherwise).
    count: AtomicI64,
    /// The thread that acquired it last (`_is_mine`).
    last_tid: AtomicU64,
}

impl SemLock {
    fn is_mine(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
            && self.last_tid.load(Ordering::Relaxed) == thread_ident()
    }

    fn value(&self) -> PyResult<i32> {
        let mut value = 0;
        // SAFETY: the handle is an open semaphore of this object; `value` is written by the call.
        Errno::result(unsafe { libc::sem_getvalue(self.handle.ptr(), &mut value) })
            .map_err(os_error)?;
        // Linux reports 0 while waiters queue; never negative to Python.
        Ok(value.max(0))
    }

    fn try_wait(&self) -> Result<(), Errno> {
        // SAFETY: the handle is an open semaphore of this object.
        Errno::result(unsafe { libc::sem_trywait(self.handle.ptr()) }).map(drop)
    }

    /// Waits with the GIL released until acquired or `deadline` (None: no deadline).
    fn wait(&self, py: Python<'_>, deadline: Option<SystemTime>) -> PyResult<bool> {
        let handle = self.handle;
        loop {
            let res = py.detach(|| match deadline {
                // SAFETY: the handle stays open while `self` (borrowed by this call) lives.
                None => Errno::result(unsafe { libc::sem_wait(handle.ptr()) }).map(drop),
                Some(deadline) => {
                    let since = deadline
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or(Duration::ZERO);
                    let ts = libc::timespec {
                        tv_sec: since.as_secs() as libc::time_t,
                        tv_nsec: since.subsec_nanos() as libc::c_long,
                    };
                    // SAFETY: as above; `ts` lives on this frame for the call.
                    Errno::result(unsafe { libc::sem_timedwait(handle.ptr(), &ts) }).map(drop)
                }
            });
            match res {
                Ok(()) => return Ok(true),
                Err(Errno::ETIMEDOUT) => return Ok(false),
                Err(Errno::EINTR) => py.check_signals()?,
                Err(e) => return Err(os_error(e)),
            }
        }
    }
}

impl Drop for SemLock {
    fn drop(&mut self) {
        // SAFETY: the handle came from sem_open for this object and is closed once, here.
        unsafe { libc::sem_close(self.handle.ptr()) };
    }
}

#[pymethods]
impl SemLock {
    #[classattr]
    const SEM_VALUE_MAX: i32 = i32::MAX;

    #[new]
    fn new(
        kind: i32,
        value: i32,
        maxvalue: i32,
        name: &str,
        unlink: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let unlink = int_flag(unlink)?;
        if kind != RECURSIVE_MUTEX && kind != SEMAPHORE {
            return Err(PyValueError::new_err("unrecognized kind"));
        }
        let value = u32::try_from(value).map_err(|_| os_error(Errno::EINVAL))?;
        let handle = open(name, Some(value))?;
        let semlock = SemLock {
            handle,
            kind,
            maxvalue,
            name: (!unlink).then(|| name.to_string()),
            count: AtomicI64::new(0),
            last_tid: AtomicU64::new(0),
        };
        if unlink {
            sem_unlink(name)?;
        }
        Ok(semlock)
    }

    /// A SemLock passed to another process (spawn, forkserver), reopened by name. CPython also
    /// rebuilds from a bare handle (`name` None), trusting any integer as a semaphore's address;
    /// procstart never sends one (fork-context locks are not pickled), so it refuses.
    #[classmethod]
    fn _rebuild(
        _cls: &Bound<'_, PyType>,
        _handle: usize,
        kind: i32,
        maxvalue: i32,
        name: Option<String>,
    ) -> PyResult<Self> {
        let Some(name) = name else {
            return Err(PyValueError::new_err(
                "a SemLock can only be rebuilt from its name",
            ));
        };
        Ok(SemLock {
            handle: open(&name, None)?,
            kind,
            maxvalue,
            name: Some(name),
            count: AtomicI64::new(0),
            last_tid: AtomicU64::new(0),
        })
    }

    #[getter]
    fn handle(&self) -> usize {
        self.handle.0
    }

    #[pyo3(signature = (block = None, timeout = None))]
    fn acquire(
        &self,
        py: Python<'_>,
        block: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let block = block.map_or(Ok(true), int_flag)?;
        if self.kind == RECURSIVE_MUTEX && self.is_mine() {
            self.count.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        let acquired = match self.try_wait() {
            Ok(()) => true,
            Err(Errno::EAGAIN) if !block => false,
            Err(Errno::EAGAIN) => match timeout {
                None => self.wait(py, None)?,
                // CPython's sem_timedwait refuses the deadline it computes from NaN.
                Some(t) if t.is_nan() => return Err(os_error(Errno::EINVAL)),
                Some(t) if t <= 0.0 => false,
                Some(t) => {
                    let deadline = Duration::try_from_secs_f64(t)
                        .ok()
                        .and_then(|d| SystemTime::now().checked_add(d));
                    self.wait(py, deadline)?
                }
            },
            Err(e) => return Err(os_error(e)),
        };
        if acquired {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.last_tid.store(thread_ident(), Ordering::Relaxed);
        }
        Ok(acquired)
    }

    fn release(&self) -> PyResult<()> {
        if self.kind == RECURSIVE_MUTEX {
            if !self.is_mine() {
                return Err(PyAssertionError::new_err(
                    "attempt to release recursive lock not owned by thread",
                ));
            }
            if self.count.load(Ordering::Relaxed) > 1 {
                self.count.fetch_sub(1, Ordering::Relaxed);
                return Ok(());
            }
        } else if self.value()? >= self.maxvalue {
            return Err(PyValueError::new_err(
                "semaphore or lock released too many times",
            ));
        }
        // SAFETY: the handle is an open semaphore of this object.
        Errno::result(unsafe { libc::sem_post(self.handle.ptr()) }).map_err(os_error)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, None, None)
    }

    #[pyo3(signature = (_exc_type = None, _exc_value = None, _traceback = None))]
    fn __exit__(
        &self,
        _exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.release()
    }

    fn _count(&self) -> i64 {
        self.count.load(Ordering::Relaxed)
    }

    fn _is_mine(&self) -> bool {
        self.is_mine()
    }

    fn _get_value(&self) -> PyResult<i32> {
        self.value()
    }

    fn _is_zero(&self) -> PyResult<bool> {
        Ok(self.value()? == 0)
    }

    /// In a fork child: no thread of this process holds it.
    fn _after_fork(&self) {
        self.count.store(0, Ordering::Relaxed);
    }
}
