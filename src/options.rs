//! What a `Process` asks of its start beyond CPython's attributes: procstart's own keyword
//! arguments (`die_with_parent`, `new_process_group`, `env`), read once in the parent for
//! whichever launcher runs, and carried by a fork child's setup.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::start_method::StartMethod;

/// How a child is made to die with its parent (`die_with_parent=True`, or a daemon).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParentDeath {
    /// `PR_SET_PDEATHSIG`: the child's kernel parent is this process, started from its main
    /// thread.
    Signal,
    /// A watcher thread in the child: the kernel parent is the fork server, or the launching
    /// thread is not the main thread (whose exit alone would fire the signal).
    Watch,
}

impl ParentDeath {
    pub fn name(self) -> &'static str {
        match self {
            ParentDeath::Signal => "signal",
            ParentDeath::Watch => "watch",
        }
    }

    pub fn from_name(name: &str) -> PyResult<Self> {
        match name {
            "signal" => Ok(ParentDeath::Signal),
            "watch" => Ok(ParentDeath::Watch),
            other => Err(PyValueError::new_err(format!(
                "unknown parent-death mode {other:?}"
            ))),
        }
    }
}

/// What a `Process` asks of its launch beyond CPython's: procstart's own keyword arguments,
/// read once, in the parent, for whichever launcher runs.
pub struct LaunchOptions {
    pub parent_death: Option<ParentDeath>,
    /// The child leads a new process group (`new_process_group=True`).
    pub new_group: bool,
    /// Set over the parent's environment (`env=`): in a spawned program's initial
    /// environment, by a forked child when it starts.
    pub env: Vec<(String, String)>,
}

impl LaunchOptions {
    pub fn of(process: &Bound<'_, PyAny>, method: StartMethod) -> PyResult<Self> {
        let py = process.py();
        let flag = |name: &Bound<'_, pyo3::types::PyString>| -> PyResult<bool> {
            match process.getattr_opt(name)? {
                Some(value) => value.is_truthy(),
                None => Ok(false),
            }
        };
        let dies = flag(intern!(py, "_die_with_parent"))?
            || process.getattr(intern!(py, "daemon"))?.is_truthy()?;
        let parent_death = dies.then(|| {
            if method != StartMethod::ForkServer && crate::sys::pdeath::on_main_thread() {
                ParentDeath::Signal
            } else {
                ParentDeath::Watch
            }
        });
        let env = match process.getattr_opt(intern!(py, "_env"))? {
            Some(env) if !env.is_none() => env
                .cast::<PyDict>()?
                .iter()
                .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                .collect::<PyResult<_>>()?,
            _ => Vec::new(),
        };
        Ok(LaunchOptions {
            parent_death,
            new_group: flag(intern!(py, "_new_process_group"))?,
            env,
        })
    }
}
