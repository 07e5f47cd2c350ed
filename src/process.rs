//! `Process`: CPython's `BaseProcess` state machine (process.py) with the same attribute
//! names, checks and messages, and `active_children()`. Which process is current, its parent
//! and its children are kept in `registry.rs`.
//!
//! CPython's checks are `assert`s that vanish under `python -O`; procstart raises the same
//! `AssertionError`s under `-O` too, because without them the misuse surfaces later as an
//! unrelated error (or a child that should never have started).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::signal::Signal;
use pyo3::exceptions::{PyAssertionError, PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyMapping, PyString, PyTuple};
use pyo3::{intern, PyTypeInfo};

use crate::hooks::hooks;
use crate::popen::{Popen, STILL_RUNNING};
use crate::{context, launch, registry};

/// An argument that may be left out, told apart from one given as `None`: CPython's `Process`
/// defaults `args` to `()` (so `args=None` is a `TypeError`) and, before 3.14.1, `kwargs` to `{}`.
pub enum Given<'py> {
    Omitted,
    Value(Bound<'py, PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Given<'py> {
    type Error = PyErr;

    fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Given::Value(obj.to_owned()))
    }
}

#[pyclass(subclass, dict, weakref, frozen, module = "procstart._procstart")]
pub struct Process {
    popen: Mutex<Option<Py<Popen>>>,
    /// Set by the first `start()`, before it launches: a second `start()` racing from another
    /// thread fails instead of launching a second child.
    starting: AtomicBool,
    closed: AtomicBool,
}

fn same_object(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> bool {
    a.as_ptr() == b.as_ptr()
}

fn is_current(slf: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(same_object(slf, &registry::current_process(slf.py())?))
}

fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// `_parent_pid == os.getpid()`: the object was created by this process.
fn created_here(slf: &Bound<'_, PyAny>) -> PyResult<bool> {
    let parent_pid = slf.getattr(intern!(slf.py(), "_parent_pid"))?;
    Ok(!parent_pid.is_none() && parent_pid.extract::<i32>()? == getpid())
}

/// Drops finished children from the registry: CPython's `process._cleanup()`.
fn cleanup(py: Python<'_>) -> PyResult<()> {
    for child in registry::children(py) {
        let child = child.bind(py).cast::<Process>()?;
        if let Some(popen) = child.get().popen(py) {
            if popen.get().poll(py, false)?.is_some() {
                registry::discard_child(child);
            }
        }
    }
    Ok(())
}

/// `active_children()`: the children started here and still running.
#[pyfunction]
pub fn active_children(py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
    cleanup(py)?;
    Ok(registry::children(py))
}

/// Name of an exit code as CPython's repr shows it (`-SIGTERM`), else the number.
fn exitcode_name(py: Python<'_>, code: i32) -> PyResult<String> {
    let names = hooks(py)?.exitcode_to_name.bind(py);
    match names.get_item(code) {
        Ok(name) => name.str().map(|s| s.to_string()),
        Err(_) => Ok(code.to_string()),
    }
}

impl Process {
    fn popen<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Popen>> {
        self.popen
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.bind(py).clone())
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(PyValueError::new_err("process object is closed"));
        }
        Ok(())
    }

    fn config<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "_config"))
    }
}

#[pymethods]
impl Process {
    /// Accepts anything: subclasses define their own `__init__` signatures and call
    /// `super().__init__(...)`; the real initialisation is `__init__` below.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Process {
            popen: Mutex::new(None),
            starting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        group=None, target=None, name=None, args=Given::Omitted, kwargs=Given::Omitted, *,
        daemon=None, die_with_parent=None, new_process_group=None, env=None
    ))]
    fn __init__<'py>(
        slf: &Bound<'py, Self>,
        group: Option<&Bound<'py, PyAny>>,
        target: Option<&Bound<'py, PyAny>>,
        name: Option<&Bound<'py, PyAny>>,
        args: Given<'py>,
        kwargs: Given<'py>,
        daemon: Option<&Bound<'_, PyAny>>,
        die_with_parent: Option<&Bound<'_, PyAny>>,
        new_process_group: Option<&Bound<'_, PyAny>>,
        env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        if group.is_some_and(|g| !g.is_none()) {
            return Err(PyAssertionError::new_err(
                "group argument must be None for now",
            ));
        }
        let current = registry::current_process(py)?;
        let count = registry::next_number();
        let parent_identity = current.getattr(intern!(py, "_identity"))?;
        let identity = parent_identity.add(PyTuple::new(py, [count])?)?;
        let obj = slf.as_any();
        obj.setattr(intern!(py, "_identity"), &identity)?;
        obj.setattr(
            intern!(py, "_config"),
            current
                .getattr(intern!(py, "_config"))?
                .call_method0(intern!(py, "copy"))?,
        )?;
        obj.setattr(intern!(py, "_parent_pid"), getpid())?;
        obj.setattr(
            intern!(py, "_parent_name"),
            current.getattr(intern!(py, "name"))?,
        )?;
        obj.setattr(intern!(py, "_target"), target)?;
        // `tuple(args)`, `dict(kwargs)`, as CPython: `args=None` is a TypeError on every version.
        let args = match args {
            Given::Value(a) => PyTuple::type_object(py).call1((a,))?,
            Given::Omitted => PyTuple::empty(py).into_any(),
        };
        obj.setattr(intern!(py, "_args"), args)?;
        let kwargs = match kwargs {
            // gh-138813 (3.14.1): `dict(kwargs) if kwargs else {}`, so that `kwargs=None` (the new
            // default) is no keyword arguments; before, `dict(None)` is a TypeError.
            Given::Value(k) if !k.is_truthy()? && falsy_kwargs_mean_none(py)? => {
                PyDict::new(py).into_any()
            }
            Given::Value(k) => PyDict::type_object(py).call1((k,))?,
            Given::Omitted => PyDict::new(py).into_any(),
        };
        obj.setattr(intern!(py, "_kwargs"), kwargs)?;
        let name = match name {
            Some(n) if n.is_truthy()? => n.clone(),
            _ => {
                let numbers: Vec<String> = identity
                    .try_iter()?
                    .map(|i| i.and_then(|i| i.str().map(|s| s.to_string())))
                    .collect::<PyResult<_>>()?;
                let type_name = obj.get_type().name()?;
                pyo3::types::PyString::new(py, &format!("{}-{}", type_name, numbers.join(":")))
                    .into_any()
            }
        };
        obj.setattr(intern!(py, "_name"), name)?;
        if let Some(daemon) = daemon.filter(|d| !d.is_none()) {
            obj.setattr(intern!(py, "daemon"), daemon)?;
        }
        // procstart's own options, kept only when given, so that a process object (and its
        // payload) is CPython's otherwise.
        if flag("die_with_parent", die_with_parent)? {
            obj.setattr(intern!(py, "_die_with_parent"), true)?;
        }
        if flag("new_process_group", new_process_group)? {
            obj.setattr(intern!(py, "_new_process_group"), true)?;
        }
        if let Some(env) = env.filter(|e| !e.is_none()) {
            obj.setattr(intern!(py, "_env"), checked_env(env)?)?;
        }
        Ok(())
    }

    /// `None` here: a `procstart.Process` starts with the default context's method. The
    /// per-method subclasses (`ForkProcess` …) name theirs.
    #[classattr]
    fn _start_method(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }

    /// Method to be run in the child; overridable.
    fn run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let target = slf.getattr(intern!(py, "_target"))?;
        if target.is_truthy()? {
            let args = slf.getattr(intern!(py, "_args"))?;
            let kwargs = slf.getattr(intern!(py, "_kwargs"))?;
            target.call(args.cast_into::<PyTuple>()?, Some(kwargs.cast::<PyDict>()?))?;
        }
        Ok(())
    }

    fn start(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if this.starting.swap(true, Ordering::SeqCst) {
            return Err(PyAssertionError::new_err("cannot start a process twice"));
        }
        match Self::launch(slf) {
            Ok(popen) => *this.popen.lock().unwrap() = Some(popen),
            Err(err) => {
                this.starting.store(false, Ordering::SeqCst);
                return Err(err);
            }
        }
        // The parent no longer needs them (bpo-30775: do not keep the target alive).
        for attr in [
            intern!(py, "_target"),
            intern!(py, "_args"),
            intern!(py, "_kwargs"),
        ] {
            let _ = slf.as_any().delattr(attr);
        }
        registry::add_child(slf.as_any());
        Ok(())
    }

    /// SIGTERM; with `tree=True` to every descendant too (procstart's extension).
    #[pyo3(signature = (*, tree=None))]
    fn terminate(&self, py: Python<'_>, tree: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.signal_child(py, "terminate", Signal::SIGTERM, flag("tree", tree)?)
    }

    #[pyo3(signature = (*, tree=None))]
    fn kill(&self, py: Python<'_>, tree: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.signal_child(py, "kill", Signal::SIGKILL, flag("tree", tree)?)
    }

    /// SIGINT (Python 3.14's `Process.interrupt()`, offered on every version): the child
    /// gets `KeyboardInterrupt`.
    #[pyo3(signature = (*, tree=None))]
    fn interrupt(&self, py: Python<'_>, tree: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.signal_child(py, "interrupt", Signal::SIGINT, flag("tree", tree)?)
    }

    /// The ended child's resource usage (`procstart.process.ResourceUsage`: peak RSS in
    /// bytes, user and system CPU seconds); `None` before it has ended, or where it cannot be
    /// known (its status was collected by someone else).
    #[getter]
    fn rusage(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.check_closed()?;
        let Some(popen) = self.popen(py) else {
            return Ok(None);
        };
        popen.get().poll(py, false)?;
        let Some(usage) = popen.get().ending().and_then(|e| e.usage) else {
            return Ok(None);
        };
        let usage = hooks(py)?.resource_usage.bind(py).call1((
            usage.max_rss_kib * 1024,
            usage.user_us as f64 / 1e6,
            usage.system_us as f64 / 1e6,
        ))?;
        Ok(Some(usage.unbind()))
    }

    /// Why the child ended, in words (`exited with 3`, `killed by SIGKILL ...`); `None`
    /// before it has ended.
    #[getter]
    fn exit_reason(slf: &Bound<'_, Self>) -> PyResult<Option<String>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        let Some(popen) = this.popen(py) else {
            return Ok(None);
        };
        if popen.get().poll(py, false)?.is_none() {
            return Ok(None);
        }
        let Some(ending) = popen.get().ending() else {
            return Ok(None);
        };
        let signalled = popen
            .get()
            .signalled()
            .map(|(signal, by)| (signal as i32, by));
        hooks(py)?
            .exit_reason
            .bind(py)
            .call1((ending.code, ending.lost, signalled, Self::rusage(this, py)?))?
            .extract()
            .map(Some)
    }

    #[pyo3(signature = (timeout=None))]
    fn join(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if !created_here(slf.as_any())? {
            return Err(PyAssertionError::new_err("can only join a child process"));
        }
        let Some(popen) = this.popen(py) else {
            return Err(PyAssertionError::new_err("can only join a started process"));
        };
        if popen.get().wait(py, timeout)?.is_some() {
            registry::discard_child(slf);
        }
        Ok(())
    }

    fn is_alive(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed()?;
        if is_current(slf.as_any())? {
            return Ok(true);
        }
        if !created_here(slf.as_any())? {
            return Err(PyAssertionError::new_err("can only test a child process"));
        }
        let Some(popen) = this.popen(py) else {
            return Ok(false);
        };
        if popen.get().poll(py, false)?.is_none() {
            return Ok(true);
        }
        registry::discard_child(slf);
        Ok(false)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if let Some(popen) = this.popen(py) {
            if popen.get().poll(py, false)?.is_none() {
                return Err(PyValueError::new_err(STILL_RUNNING));
            }
            popen.get().close()?;
            this.popen.lock().unwrap().take();
            registry::discard_child(slf);
        }
        this.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[getter]
    fn get_name<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "_name"))
    }

    #[setter]
    fn set_name(slf: &Bound<'_, Self>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        if !name.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyAssertionError::new_err("name must be a string"));
        }
        slf.as_any().setattr(intern!(slf.py(), "_name"), name)
    }

    #[getter]
    fn get_daemon<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        Self::config(slf)?.call_method1(intern!(py, "get"), (intern!(py, "daemon"), false))
    }

    #[setter]
    fn set_daemon(slf: &Bound<'_, Self>, daemonic: &Bound<'_, PyAny>) -> PyResult<()> {
        if slf.get().popen.lock().unwrap().is_some() {
            return Err(PyAssertionError::new_err("process has already started"));
        }
        Self::config(slf)?.set_item(intern!(slf.py(), "daemon"), daemonic)
    }

    #[getter]
    fn get_authkey<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::config(slf)?.get_item(intern!(slf.py(), "authkey"))
    }

    #[setter]
    fn set_authkey(slf: &Bound<'_, Self>, authkey: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let key = hooks(py)?
            .authentication_string
            .bind(py)
            .call1((authkey,))?;
        Self::config(slf)?.set_item(intern!(py, "authkey"), key)
    }

    #[getter]
    fn exitcode(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        self.check_closed()?;
        match self.popen(py) {
            None => Ok(None),
            Some(popen) => popen.get().poll(py, false),
        }
    }

    #[getter]
    fn ident(slf: &Bound<'_, Self>) -> PyResult<Option<i32>> {
        let this = slf.get();
        this.check_closed()?;
        if is_current(slf.as_any())? {
            return Ok(Some(getpid()));
        }
        Ok(this.popen(slf.py()).map(|p| p.get().pid_raw()))
    }

    #[getter]
    fn pid(slf: &Bound<'_, Self>) -> PyResult<Option<i32>> {
        Self::ident(slf)
    }

    #[getter]
    fn sentinel(&self, py: Python<'_>) -> PyResult<i32> {
        self.check_closed()?;
        match self.popen(py) {
            Some(popen) => Ok(popen.get().sentinel_raw()),
            None => Err(PyValueError::new_err("process not started")),
        }
    }

    #[getter(_popen)]
    fn get_popen(&self, py: Python<'_>) -> Option<Py<Popen>> {
        self.popen(py).map(Bound::unbind)
    }

    #[getter(_closed)]
    fn get_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        let mut exitcode = None;
        let status = if is_current(slf.as_any())? {
            "started"
        } else if this.closed.load(Ordering::SeqCst) {
            "closed"
        } else if !created_here(slf.as_any())? {
            "unknown"
        } else {
            match this.popen(py) {
                None => "initial",
                Some(popen) => {
                    exitcode = popen.get().poll(py, false)?;
                    if exitcode.is_some() {
                        "stopped"
                    } else {
                        "started"
                    }
                }
            }
        };
        let mut info = vec![
            slf.get_type().name()?.to_string(),
            format!("name={}", slf.getattr(intern!(py, "_name"))?.repr()?),
        ];
        if let Some(popen) = this.popen(py) {
            info.push(format!("pid={}", popen.get().pid_raw()));
        }
        info.push(format!(
            "parent={}",
            slf.getattr(intern!(py, "_parent_pid"))?.str()?
        ));
        info.push(status.to_string());
        if let Some(code) = exitcode {
            info.push(format!("exitcode={}", exitcode_name(py, code)?));
        }
        if slf.getattr(intern!(py, "daemon"))?.is_truthy()? {
            info.push("daemon".to_string());
        }
        Ok(format!("<{}>", info.join(" ")))
    }

    /// Pickling (spawn and forkserver send the object to the child) carries the instance
    /// `__dict__`, as for CPython's pure-Python class; the handle on a started child does not
    /// cross processes.
    fn __getstate__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let state = slf
            .getattr(intern!(py, "__dict__"))?
            .call_method0(intern!(py, "copy"))?;
        // The authkey goes as procstart's AuthenticationString, so that unpickling it does not
        // import stdlib multiprocessing (whose class the main process's may be).
        if let Ok(config) = state.get_item(intern!(py, "_config")) {
            let config = config.call_method0(intern!(py, "copy"))?;
            if let Ok(key) = config.get_item(intern!(py, "authkey")) {
                let bytes = crate::imports::builtins(py)?
                    .getattr(intern!(py, "bytes"))?
                    .call1((key,))?;
                let key = hooks(py)?.authentication_string.bind(py).call1((bytes,))?;
                config.set_item(intern!(py, "authkey"), key)?;
            }
            state.set_item(intern!(py, "_config"), config)?;
        }
        Ok(state)
    }

    fn __setstate__(slf: &Bound<'_, Self>, state: &Bound<'_, PyDict>) -> PyResult<()> {
        slf.getattr(intern!(slf.py(), "__dict__"))?
            .call_method1("update", (state,))
            .map(drop)
    }
}

impl Process {
    /// `start()`'s checks after the start-twice one, in CPython's order, then the launch.
    fn launch(slf: &Bound<'_, Self>) -> PyResult<Py<Popen>> {
        let py = slf.py();
        if !created_here(slf.as_any())? {
            return Err(PyAssertionError::new_err(
                "can only start a process object created by current process",
            ));
        }
        let current_config = registry::current_process(py)?.getattr(intern!(py, "_config"))?;
        let daemonic = current_config
            .call_method1(intern!(py, "get"), (intern!(py, "daemon"),))?
            .is_truthy()?;
        if daemonic {
            return Err(PyAssertionError::new_err(
                "daemonic processes are not allowed to have children",
            ));
        }
        cleanup(py)?;
        let method = context::start_method_for(slf.as_any())?;
        Py::new(py, launch::launch(py, method, slf.as_any())?)
    }

    fn signal_child(
        &self,
        py: Python<'_>,
        method: &'static str,
        signal: Signal,
        tree: bool,
    ) -> PyResult<()> {
        self.check_closed()?;
        match self.popen(py) {
            Some(popen) if tree => popen.get().send_signal_tree(py, signal, method),
            Some(popen) => popen.get().send_signal(py, signal, method),
            None => Err(PyAttributeError::new_err(format!(
                "'NoneType' object has no attribute '{method}'"
            ))),
        }
    }
}

/// Whether the running CPython's `Process` takes a falsy `kwargs` (`None`, its default from
/// 3.14.1 on, gh-138813) as no keyword arguments: read from the running stdlib (its
/// `BaseProcess.__init__` defaults), so that a patch release carrying the change is followed too.
/// Asked only for a falsy `kwargs`, where the two behaviours differ.
fn falsy_kwargs_mean_none(py: Python<'_>) -> PyResult<bool> {
    let defaults = py
        .import(intern!(py, "multiprocessing.process"))?
        .getattr(intern!(py, "BaseProcess"))?
        .getattr(intern!(py, "__init__"))?
        .getattr(intern!(py, "__defaults__"))?;
    let defaults = defaults.cast::<PyTuple>()?;
    Ok(defaults.len() > 0 && defaults.get_item(defaults.len() - 1)?.is_none())
}

/// The name of `obj`'s type, for error messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// procstart's own boolean options: `True` or `False` (or left out), not merely truthy, so that a
/// misplaced argument (`kill(1)` meant as a signal, `die_with_parent='no'`) is caught.
fn flag(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(false),
        Some(v) => v.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be True or False, not {}",
                type_name(v)
            ))
        }),
    }
}

/// `env=` as given to `Process`: a mapping of str to str, checked now rather than in the child,
/// with `subprocess`'s messages for what no environment can hold.
fn checked_env<'py>(env: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let py = env.py();
    let mapping = env.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "env must be a mapping of str to str, not {}",
            type_name(env)
        ))
    })?;
    let checked = PyDict::new(py);
    for item in mapping.items()?.iter() {
        let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
        for part in [&key, &value] {
            if !part.is_instance_of::<PyString>() {
                return Err(PyTypeError::new_err(format!(
                    "env keys and values must be str, not {}",
                    type_name(part)
                )));
            }
        }
        let (k, v): (String, String) = (key.extract()?, value.extract()?);
        if k.contains('\0') || v.contains('\0') {
            return Err(PyValueError::new_err("embedded null byte"));
        }
        if k.is_empty() || k.contains('=') {
            return Err(PyValueError::new_err("illegal environment variable name"));
        }
        checked.set_item(key, value)?;
    }
    Ok(checked)
}
