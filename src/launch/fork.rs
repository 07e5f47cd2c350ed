//! The fork start method: CPython's `popen_fork.Popen._launch` with a pidfd sentinel, and the
//! check that no other thread runs at the fork.

use std::panic::AssertUnwindSafe;

use nix::unistd::Pid;
use pyo3::intern;
use pyo3::prelude::*;

use crate::child::ChildSetup;
use crate::errors::os_error;
use crate::imports::loaded;
use crate::link::{self, ChildLink};
use crate::options::LaunchOptions;
use crate::popen::Popen;
use crate::start_method::StartMethod;
use crate::streams::flush_std_streams;
use crate::sys::fork::{fork, Forked};
use crate::sys::proctree::lead_new_group;
use crate::thread_check::check_threads;

pub fn launch(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    options: &LaunchOptions,
) -> PyResult<Popen> {
    check_threads(py)?;
    flush_std_streams(py)?;
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
            link::release_inherited_alive_pipes();
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
            let popen = Popen::from_link(link, py, pid, StartMethod::Fork)?;
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
