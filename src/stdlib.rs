//! Keeping stdlib `multiprocessing` consistent inside procstart children.
//!
//! Objects from stdlib (Queue, Pipe, Lock, Manager proxies) ride along into procstart
//! children, and libraries inside a child call `multiprocessing.current_process()`. The parts
//! of stdlib `multiprocessing` the parent has loaded are brought, in the child, to the state
//! CPython's own child bootstrap (`BaseProcess._bootstrap`) leaves them in. Nothing is
//! imported that the parent had not loaded, and the work is skipped where stdlib has nothing
//! to do, because every Python object touched in a fork child costs a page copy.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PySet;

use crate::imports::{itertools, loaded};

/// The stdlib modules loaded in the parent, looked up before `fork()`.
pub struct Stdlib {
    process: Option<Py<PyAny>>,
    context: Option<Py<PyAny>>,
    util: Option<Py<PyAny>>,
}

fn is_empty(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.len()? == 0)
}

impl Stdlib {
    pub fn find(py: Python<'_>) -> PyResult<Self> {
        itertools(py)?;
        Ok(Stdlib {
            process: loaded(py, "multiprocessing.process")?.map(Bound::unbind),
            context: loaded(py, "multiprocessing.context")?.map(Bound::unbind),
            util: loaded(py, "multiprocessing.util")?.map(Bound::unbind),
        })
    }

    pub fn is_loaded(&self) -> bool {
        self.process.is_some() || self.context.is_some() || self.util.is_some()
    }

    /// In the child, before `run()`: stdlib's current and parent process are the child's,
    /// its default start method is the child's, and inherited stdlib objects (Queue feeder
    /// threads, Manager connections, fork-aware locks) run their after-fork hooks.
    pub fn enter_child(
        &self,
        py: Python<'_>,
        process: &Bound<'_, PyAny>,
        parent: &Bound<'_, PyAny>,
        method: &str,
        forked: bool,
    ) -> PyResult<()> {
        if let Some(module) = &self.process {
            let module = module.bind(py);
            module.setattr(intern!(py, "_current_process"), process)?;
            module.setattr(intern!(py, "_parent_process"), parent)?;
            let counter = itertools(py)?.getattr(intern!(py, "count"))?.call1((1,))?;
            module.setattr(intern!(py, "_process_counter"), counter)?;
            module.setattr(intern!(py, "_children"), PySet::empty(py)?)?;
        }
        if let Some(module) = &self.context {
            // The body of `context._force_start_method(method)`, without a Python frame.
            let module = module.bind(py);
            let ctx = module
                .getattr(intern!(py, "_concrete_contexts"))?
                .get_item(method)?;
            module
                .getattr(intern!(py, "_default_context"))?
                .setattr(intern!(py, "_actual_context"), ctx)?;
        }
        // A spawned child inherited nothing to reset (CPython's SpawnProcess._after_fork).
        if let Some(util) = self.util.as_ref().filter(|_| forked) {
            let util = util.bind(py);
            util.getattr(intern!(py, "_finalizer_registry"))?
                .call_method0(intern!(py, "clear"))?;
            // A WeakValueDictionary; its `data` dict is what holds the entries.
            let hooks = util
                .getattr(intern!(py, "_afterfork_registry"))?
                .getattr(intern!(py, "data"))?;
            if !is_empty(&hooks)? {
                util.call_method0(intern!(py, "_run_after_forkers"))?;
            }
        }
        Ok(())
    }

    /// At the child's exit, after its atexit handlers: stdlib's `util._exit_function` (run
    /// finalizers, which flush Queue feeder threads; terminate and join stdlib children),
    /// which a CPython child registers first so that it runs last.
    pub fn exit_child(&self, py: Python<'_>) -> PyResult<()> {
        let Some(util) = &self.util else {
            return Ok(());
        };
        let util = util.bind(py);
        let finalizers = util.getattr(intern!(py, "_finalizer_registry"))?;
        let children = match &self.process {
            Some(module) => module.bind(py).getattr(intern!(py, "_children"))?,
            None => PySet::empty(py)?.into_any(),
        };
        if !is_empty(&finalizers)? || !is_empty(&children)? {
            util.call_method0(intern!(py, "_exit_function"))?;
        }
        Ok(())
    }
}
