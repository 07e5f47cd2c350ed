//! The fork start method: CPython's `popen_fork.Popen._launch` with a pidfd sentinel, and the
//! check that no other thread runs at the fork.

use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use nix::unistd::Pid;

use crate::bootstrap::{self, ChildSetup};
use crate::errors::os_error;
use crate::imports::{loaded, py_bootstrap};
use crate::launch::LaunchOptions;
use crate::popen::{self, ChildLink, Popen};
use crate::start_method::StartMethod;
use crate::sys::fork::{fork, Forked};
use crate::sys::proctree::lead_new_group;

pub fn launch(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    options: &LaunchOptions,
) -> PyResult<Popen> {
    check_threads(py)?;
    bootstrap::flush_std_streams(py)?;
    // Everything the child needs exists before fork(): between fork() and
    // PyOS_AfterFork_Child() nothing else runs.
    let setup = ChildSetup::new(process, StartMethod::Fork)?.forked_with(options);
    let link = ChildLink::new().map_err(os_error)?;
    let intent = StdlibTrackerIntent::declare(py)?;
    // SAFETY: the GIL is held and no procstart mutex is (they are never held across a call
    // into this function); the child takes only those mutexes, and re-enters Python through
    // PyOS_AfterFork_Child before running anything else.
    let forked = unsafe { fork(py) };
    intent.withdraw(py);
    match forked.map_err(os_error)? {
        Forked::Child => {
            if options.new_group {
                let _ = lead_new_group(Pid::from_raw(0));
            }
            popen::release_inherited_alive_pipes();
            let parent_sentinel = link.into_child();
            // A panic must not unwind out of start() into the parent's program, now running
            // in the child.
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| setup.run(py, parent_sentinel)));
            drop(outcome);
            // SAFETY: _exit ends the child at once; nothing of the parent's runs in it.
            unsafe { libc::_exit(1) }
        }
        Forked::Parent(pid) => {
            drop(setup);
            let popen = link.into_popen(py, pid, StartMethod::Fork)?;
            if options.new_group {
                // Whichever of the child and this runs first makes the group; should both fail
                // (a fork hook moved the child elsewhere), `leading_group` sees it.
                let _ = lead_new_group(pid);
            }
            Ok(popen)
        }
    }
}

/// CPython 3.14's `resource_tracker._fork_intent` (gh-146313): stdlib's tracker keeps its pipe in
/// a fork child only when the fork is a `Process` start, which `popen_fork` declares around its
/// `os.fork()`; for any other fork its at-fork hook closes the pipe, and the child would start a
/// tracker of its own (which unlinks what the child registered when the child exits). A fork
/// child of procstart's is a `Process` start too, so it declares the same (where stdlib's
/// tracker is loaded: otherwise no child can have its pipe).
struct StdlibTrackerIntent<'py>(Option<Bound<'py, PyAny>>);

impl<'py> StdlibTrackerIntent<'py> {
    fn declare(py: Python<'py>) -> PyResult<Self> {
        let intent = match loaded(py, "multiprocessing.resource_tracker")? {
            Some(tracker) => tracker.getattr_opt(intern!(py, "_fork_intent"))?,
            None => None,
        };
        if let Some(intent) = &intent {
            intent.setattr(intern!(py, "preserve_fd"), true)?;
        }
        Ok(Self(intent))
    }

    /// In the parent and the child alike, as `popen_fork`: a later raw `os.fork()` of this
    /// thread is no `Process` start. Infallible: an error here must not return the child into
    /// the parent's program (and setting a `threading.local`'s attribute to a bool only fails
    /// out of memory, which the next allocation reports).
    fn withdraw(self, py: Python<'py>) {
        if let Some(intent) = self.0 {
            let _ = intent.setattr(intern!(py, "preserve_fd"), false);
        }
    }
}

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
fn check_threads(py: Python<'_>) -> PyResult<()> {
    let mode = ThreadCheck::current();
    if mode == ThreadCheck::Ignore || (mode == ThreadCheck::Warn && WARNED.load(Ordering::SeqCst)) {
        return Ok(());
    }
    // Without threading imported, no Python thread was ever started.
    if loaded(py, "threading")?.is_none() {
        return Ok(());
    }
    let names: Vec<String> = py_bootstrap(py)?
        .call_method0(intern!(py, "other_threads"))?
        .extract()?;
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
