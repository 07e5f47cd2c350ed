//! The child side of the bootstrap shared by every start method: CPython's
//! `BaseProcess._bootstrap` with Python 3.13's exit semantics.
//!
//! A fork child pays for every memory page it writes (copy-on-write), and running Python code
//! writes many: reference counts, specialising bytecode, frames. So what can be prepared is
//! prepared in the parent before `fork()` ([`ChildSetup`]), and the child does its own
//! bookkeeping here in Rust; Python runs only for `run()` itself and for what the user's
//! program brought in (stdlib `multiprocessing` state, atexit handlers, child processes of its
//! own). A spawned child builds the same setup itself, once its payload is unpickled.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use nix::unistd::Pid;

use super::parent_death::arm_parent_death;
use crate::hooks::hooks;
use crate::imports::{atexit, loaded, sys};
use crate::options::{LaunchOptions, ParentDeath};
use crate::start_method::StartMethod;
use crate::stdlib::Stdlib;
use crate::streams::flush_std_streams;
use crate::{context, registry};

/// What a child needs from its parent: gathered before `fork()` for a fork child, from the
/// payload in a spawned one.
pub struct ChildSetup {
    process: Py<PyAny>,
    /// The start method that made the child: "spawn" children start from a fresh
    /// interpreter, the others from a copy of one.
    launcher: StartMethod,
    /// The process class's own start method, which becomes the child's default
    /// (`None` for `procstart.Process`: the child keeps the default it was given).
    start_method: Option<StartMethod>,
    parent_name: Py<PyAny>,
    parent_pid: i32,
    /// Every child's `sys.stdin`: one devnull reader made once in the parent.
    stdin: Py<PyAny>,
    /// What of stdlib `multiprocessing` is loaded, whose state must follow the child's.
    stdlib: Stdlib,
    /// `env=`, for a fork child to set (see `forked_with`).
    env: Vec<(String, String)>,
    /// For a fork child: how it dies with its parent (see `forked_with`).
    parent_death: Option<ParentDeath>,
}

/// What every fork child of this process needs, made once here instead of in each child:
/// the devnull reader that becomes its `sys.stdin`, and `atexit`, which its bootstrap calls
/// (imported now, so that the child finds it kept instead of importing it).
pub fn prepare_children(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    static STDIN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let stdin = STDIN.get_or_try_init(py, || hooks(py)?.devnull_stdin.call0(py))?;
    atexit(py)?;
    Ok(stdin)
}

impl ChildSetup {
    pub fn new(process: &Bound<'_, PyAny>, launcher: StartMethod) -> PyResult<Self> {
        let py = process.py();
        let stdin = prepare_children(py)?;
        Ok(ChildSetup {
            process: process.clone().unbind(),
            launcher,
            start_method: context::class_start_method(process)?,
            parent_name: process.getattr(intern!(py, "_parent_name"))?.unbind(),
            parent_pid: process.getattr(intern!(py, "_parent_pid"))?.extract()?,
            stdin: stdin.clone_ref(py),
            stdlib: Stdlib::find(py)?,
            env: Vec::new(),
            parent_death: None,
        })
    }

    /// For a fork child: what of procstart's options it applies itself, in `bootstrap`.
    /// Spawned and fork-server children have them before they import the parent's modules
    /// (in their environment and payload), and `die_with_parent` armed on arrival.
    pub fn forked_with(mut self, options: &LaunchOptions) -> Self {
        self.env = options.env.clone();
        self.parent_death = options.parent_death;
        self
    }

    /// Runs the process in this new child and exits with its exit code.
    pub fn run(self, py: Python<'_>, parent_sentinel: i32) -> ! {
        let code = self.bootstrap(py, parent_sentinel).unwrap_or_else(|err| {
            // run_process reports the process's own errors; this is the bootstrap failing.
            err.print(py);
            1
        });
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // unwinding into the parent's Python frames, as os._exit in CPython's popen_fork.
        unsafe { libc::_exit(code) }
    }

    fn bootstrap(self, py: Python<'_>, parent_sentinel: i32) -> PyResult<i32> {
        if let Some(mode) = self.parent_death {
            arm_parent_death(mode, Pid::from_raw(self.parent_pid), parent_sentinel)?;
        }
        let atexit = atexit(py)?;
        let forked = self.launcher != StartMethod::Spawn;
        if !self.env.is_empty() {
            let environ = crate::imports::os(py)?.getattr(intern!(py, "environ"))?;
            for (key, value) in &self.env {
                environ.set_item(key, value)?;
            }
        }
        if forked {
            crate::thread_check::forget_thread_warning();
            // The parent's exit handlers are the parent's; the child runs those it registers.
            atexit.call_method0(intern!(py, "_clear"))?;
        }
        if let Some(method) = self.start_method {
            context::force_start_method(py, method)?;
        }
        registry::enter_child(
            self.process.clone_ref(py),
            registry::ParentInfo {
                name: self.parent_name.clone_ref(py),
                pid: self.parent_pid,
                sentinel: parent_sentinel,
            },
        );
        self.close_stdin(py)?;
        // CPython: threading.main_thread()._set_native_id(), without its two Python frames;
        // a child that has not imported threading has no thread objects to update.
        if let Some(threading) = loaded(py, "threading")? {
            let native_id = threading.call_method0(intern!(py, "get_native_id"))?;
            threading
                .getattr(intern!(py, "_main_thread"))?
                .setattr(intern!(py, "_native_id"), native_id)?;
        }
        if self.stdlib.is_loaded() {
            let parent = registry::parent_process(py)?.unwrap_or_else(|| py.None());
            let method = context::default_start_method(py)?;
            self.stdlib.enter_child(
                py,
                self.process.bind(py),
                parent.bind(py),
                method.name(),
                forked,
            )?;
        }
        let code = self.run_process(py)?;
        atexit.call_method0(intern!(py, "_run_exitfuncs"))?;
        self.stdlib.exit_child(py)?;
        // CPython's util._exit_function, registered first in a child so it runs last.
        if registry::has_children() {
            hooks(py)?.exit_function.call0(py)?;
        }
        // Then the fork server this child started follows it (`procstart/__init__.py` registers
        // the same at exit in a program's main process).
        crate::forkserver::client::_forkserver_at_exit(py)?;
        flush_std_streams(py)?;
        Ok(code)
    }

    /// `run()`, then CPython's exit code for how it ended; non-daemonic threads are waited
    /// for and the std streams flushed whatever happened.
    fn run_process(&self, py: Python<'_>) -> PyResult<i32> {
        let process = self.process.bind(py);
        let outcome = match process.call_method0(intern!(py, "run")) {
            Ok(_) => Ok(0),
            Err(err) => hooks(py)?
                .exit_code_for
                .bind(py)
                .call1((process, err.into_value(py)))
                .and_then(|code| code.extract::<i32>()),
        };
        let shutdown = shutdown_threading(py);
        flush_std_streams(py)?;
        shutdown?;
        outcome
    }

    /// CPython's `util._close_stdin()`: `sys.stdin` reads from devnull; fd 0 is left alone.
    fn close_stdin(&self, py: Python<'_>) -> PyResult<()> {
        let sys = sys(py)?;
        let stdin = sys.getattr(intern!(py, "stdin"))?;
        if stdin.is_none() {
            return Ok(());
        }
        if !stdin.is(self.stdin.bind(py)) {
            // As CPython, a failing close does not stop the child.
            let _ = stdin.call_method0(intern!(py, "close"));
        }
        sys.setattr(intern!(py, "stdin"), self.stdin.bind(py))
    }
}

/// `threading._shutdown()`: waits for the child's non-daemonic threads and runs threading's
/// exit hooks. Skipped, with its Python frames, when only the main thread ever ran and there
/// is nothing to wait for; called whenever that cannot be read.
fn shutdown_threading(py: Python<'_>) -> PyResult<()> {
    // Without threading imported, the child never started a thread.
    let Some(threading) = loaded(py, "threading")? else {
        return Ok(());
    };
    let nothing_to_do = || -> PyResult<bool> {
        Ok(threading.getattr(intern!(py, "_active"))?.len()? <= 1
            && threading.getattr(intern!(py, "_limbo"))?.len()? == 0
            && threading.getattr(intern!(py, "_shutdown_locks"))?.len()? == 0
            && threading
                .getattr(intern!(py, "_threading_atexits"))?
                .len()?
                == 0)
    };
    if nothing_to_do().unwrap_or(false) {
        return Ok(());
    }
    threading.call_method0(intern!(py, "_shutdown")).map(drop)
}
