//! Start-method selection: CPython's `context.py` state machine (the default context, its
//! lock-in on first use, the concrete per-method singletons) and the module-level API bound to
//! it. The Python subclasses in `procstart/context.py` add the factories (`Queue`, `Pool` …)
//! and name each context's `Process` class.

use std::sync::Mutex;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::hooks::hooks;
use crate::start_method::StartMethod;
use crate::{executable, forkserver};

/// `{'fork': ForkContext(), ...}` (`procstart/context.py`).
fn registry(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    Ok(hooks(py)?.concrete_contexts.bind(py).cast::<PyDict>()?)
}

fn default_context(py: Python<'_>) -> PyResult<&Bound<'_, DefaultContext>> {
    Ok(hooks(py)?
        .default_context
        .bind(py)
        .cast::<DefaultContext>()?)
}

/// The `DefaultContext` behind the module-level API, for modules below `procstart.context`
/// (`synchronize`: a `Lock()` made without a context uses it, as in CPython).
#[pyfunction]
pub fn _default_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(hooks(py)?.default_context.clone_ref(py))
}

/// `_concrete_contexts[method]` plus the availability check.
fn concrete_context<'py>(
    py: Python<'py>,
    method: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let Some(ctx) = registry(py)?.get_item(method)? else {
        return Err(PyValueError::new_err(format!(
            "cannot find context for {}",
            method.repr()?
        )));
    };
    Ok(ctx)
}

/// The start method a `Process` of this type launches with: its class's `_start_method`, or
/// for `procstart.Process` the default context's (which locks the default in, as CPython).
pub fn start_method_for(process: &Bound<'_, PyAny>) -> PyResult<StartMethod> {
    match class_start_method(process)? {
        Some(method) => Ok(method),
        None => default_start_method(process.py()),
    }
}

/// The `_start_method` of the process's class (`None` for `procstart.Process`).
pub fn class_start_method(process: &Bound<'_, PyAny>) -> PyResult<Option<StartMethod>> {
    let method = process
        .get_type()
        .getattr(intern!(process.py(), "_start_method"))?;
    if method.is_none() {
        return Ok(None);
    }
    StartMethod::named(&method).map(Some)
}

/// The default context's start method, locking the default in as CPython does.
pub fn default_start_method(py: Python<'_>) -> PyResult<StartMethod> {
    let ctx = DefaultContext::get_context(default_context(py)?, None)?;
    StartMethod::named(&ctx.getattr(intern!(py, "_name"))?)
}

fn version_at_least(py: Python<'_>, minor: u8) -> bool {
    py.version_info() >= (3, minor)
}

/// The running interpreter's `(minor, patch)`, for changes CPython made in a patch release.
fn minor_patch(py: Python<'_>) -> (u8, u8) {
    let version = py.version_info();
    (version.minor, version.patch)
}

/// Whether the running CPython's `freeze_support()` reads the start method with
/// `get_start_method()`, locking the default in: 3.14.0 to 3.14.3 (gh-80334); 3.14.4 and 3.15
/// pass `allow_none=True` instead (gh-140814), and before 3.14 it is a no-op outside Windows.
fn freeze_support_locks_in(py: Python<'_>) -> bool {
    let (minor, patch) = minor_patch(py);
    minor == 14 && patch < 4
}

/// `on_error` of `set_forkserver_preload` (Python 3.15): how the fork server treats a preload
/// module that fails to import.
pub const PRELOAD_ON_ERROR: [&str; 3] = ["ignore", "warn", "fail"];

#[pyclass(subclass, frozen, module = "procstart._procstart")]
pub struct BaseContext;

#[pymethods]
impl BaseContext {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, pyo3::types::PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        BaseContext
    }

    #[pyo3(signature = (method=None))]
    fn get_context<'py>(
        slf: &Bound<'py, Self>,
        method: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match method.filter(|m| !m.is_none()) {
            None => Ok(slf.clone().into_any()),
            Some(method) => concrete_context(slf.py(), method),
        }
    }

    #[pyo3(signature = (allow_none=false))]
    fn get_start_method<'py>(
        slf: &Bound<'py, Self>,
        allow_none: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = allow_none;
        slf.getattr(intern!(slf.py(), "_name"))
    }

    #[pyo3(signature = (method, force=false))]
    fn set_start_method(&self, method: &Bound<'_, PyAny>, force: bool) -> PyResult<()> {
        let _ = (method, force);
        Err(PyValueError::new_err(
            "cannot set start method of concrete context",
        ))
    }

    /// `os.cpu_count()`, as CPython (not affinity-aware).
    fn cpu_count(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let n = crate::imports::os(py)?.call_method0("cpu_count")?;
        if n.is_none() {
            return Err(PyNotImplementedError::new_err(
                "cannot determine number of cpus",
            ));
        }
        Ok(n.unbind())
    }

    /// Interpreter for spawn children, the fork server and the tracker (`str`, `bytes` or
    /// path-like; `None` as CPython).
    fn set_executable(&self, executable: &Bound<'_, PyAny>) -> PyResult<()> {
        executable::set(executable)
    }

    /// `module_names` must be strings (CPython's check, 3.11 on). `on_error` (keyword-only)
    /// exists from Python 3.15 on, as in CPython: `'ignore'` (the default), `'warn'` or `'fail'`.
    #[pyo3(signature = (module_names, **kwargs))]
    fn set_forkserver_preload(
        &self,
        module_names: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let py = module_names.py();
        let mut on_error = None;
        if let Some(kwargs) = kwargs {
            for (key, value) in kwargs.iter() {
                if version_at_least(py, 15) && key.eq("on_error")? {
                    on_error = Some(value);
                    continue;
                }
                return Err(PyTypeError::new_err(format!(
                    "BaseContext.set_forkserver_preload() got an unexpected keyword argument {}",
                    key.repr()?
                )));
            }
        }
        let mut names = Vec::new();
        for name in module_names.try_iter()? {
            let name = name?;
            if !name.get_type().is(py.get_type::<PyString>()) {
                return Err(PyTypeError::new_err(
                    "module_names must be a list of strings",
                ));
            }
            names.push(name.extract::<String>()?);
        }
        let on_error = match on_error {
            None => PRELOAD_ON_ERROR[0],
            Some(value) => {
                let known = PRELOAD_ON_ERROR.iter().find(|policy| {
                    value.is_exact_instance_of::<PyString>() && value.eq(**policy).unwrap_or(false)
                });
                match known {
                    Some(policy) => policy,
                    None => {
                        return Err(PyValueError::new_err(format!(
                            "on_error must be 'ignore', 'warn', or 'fail', not {}",
                            value.repr()?
                        )))
                    }
                }
            }
        };
        forkserver::set_preload(names, on_error);
        Ok(())
    }

    /// As CPython on POSIX: a no-op up to Python 3.13; 3.14.0 to 3.14.3 read the start method
    /// first, locking the default in (gh-80334), which 3.14.4 undid (gh-140814: it asks with
    /// `allow_none=True`, and only in a frozen executable, which procstart does not support).
    fn freeze_support(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if freeze_support_locks_in(py) {
            slf.call_method0(intern!(py, "get_start_method"))?;
        }
        Ok(())
    }
}

/// The module-level context: `procstart.get_context` & co. are its bound methods.
#[pyclass(extends = BaseContext, subclass, frozen, module = "procstart._procstart")]
pub struct DefaultContext {
    /// The context used until a start method is set: the platform's, or `run --start-method`'s.
    /// `None` until first needed when the platform's is determined lazily (Python 3.14,
    /// CPython's `_default_context` cached property: `procstart.context._platform_default`).
    default: Mutex<Option<Py<PyAny>>>,
    actual: Mutex<Option<Py<PyAny>>>,
}

impl DefaultContext {
    fn default_context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(ctx) = self.default.lock().unwrap().as_ref() {
            return Ok(ctx.clone_ref(py));
        }
        // Determined without the lock held (it runs Python code); the first answer stays.
        let ctx = hooks(py)?.platform_default.call0(py)?;
        let mut default = self.default.lock().unwrap();
        Ok(default.get_or_insert(ctx).clone_ref(py))
    }

    /// The context in use, locking the default in if none is set yet (CPython's
    /// `get_context()`).
    fn lock_in<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(ctx) = self.actual.lock().unwrap().as_ref() {
            return Ok(ctx.bind(py).clone());
        }
        let default = self.default_context(py)?;
        let mut actual = self.actual.lock().unwrap();
        Ok(actual.get_or_insert(default).bind(py).clone())
    }
}

#[pymethods]
impl DefaultContext {
    #[new]
    #[pyo3(signature = (context=None))]
    fn new(context: Option<Py<PyAny>>) -> PyClassInitializer<Self> {
        PyClassInitializer::from(BaseContext).add_subclass(DefaultContext {
            default: Mutex::new(context),
            actual: Mutex::new(None),
        })
    }

    #[pyo3(signature = (method=None))]
    fn get_context<'py>(
        slf: &Bound<'py, Self>,
        method: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match method.filter(|m| !m.is_none()) {
            Some(method) => concrete_context(py, method),
            None => slf.get().lock_in(py),
        }
    }

    #[pyo3(signature = (method, force=false))]
    fn set_start_method(
        slf: &Bound<'_, Self>,
        method: Option<&Bound<'_, PyAny>>,
        force: bool,
    ) -> PyResult<()> {
        let this = slf.get();
        let method = method.filter(|m| !m.is_none());
        let already_set = || PyRuntimeError::new_err("context has already been set");
        if this.actual.lock().unwrap().is_some() && !force {
            return Err(already_set());
        }
        // Resolved without the lock held (it runs Python code), then set if still allowed.
        let ctx = match method {
            Some(method) => concrete_context(slf.py(), method)?.unbind(),
            None if force => {
                *this.actual.lock().unwrap() = None;
                return Ok(());
            }
            None => this.default_context(slf.py())?,
        };
        let mut actual = this.actual.lock().unwrap();
        if actual.is_some() && !force {
            return Err(already_set());
        }
        *actual = Some(ctx);
        Ok(())
    }

    #[pyo3(signature = (allow_none=false))]
    fn get_start_method<'py>(
        slf: &Bound<'py, Self>,
        allow_none: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        if allow_none && this.actual.lock().unwrap().is_none() {
            return Ok(None);
        }
        this.lock_in(py)?.getattr(intern!(py, "_name")).map(Some)
    }

    /// Makes `method` the default: the start method until one is set (procstart's `run
    /// --start-method`; a program may still set its own).
    fn _set_default(&self, method: &Bound<'_, PyAny>) -> PyResult<()> {
        let ctx = concrete_context(method.py(), method)?.unbind();
        *self.default.lock().unwrap() = Some(ctx);
        Ok(())
    }

    /// The context used until a start method is set (CPython's `_default_context` attribute),
    /// determining the platform's if not done yet; locks nothing in.
    fn _get_default(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.default_context(py)
    }

    /// Python <= 3.13 lists CPython's fixed order; 3.14 lists the default first.
    fn get_all_start_methods<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if !version_at_least(py, 14) {
            return PyList::new(py, StartMethod::ALL.map(StartMethod::name));
        }
        let default: String = self
            .default_context(py)?
            .bind(py)
            .getattr(intern!(py, "_name"))?
            .extract()?;
        let mut methods = vec![default.clone()];
        methods.extend(
            StartMethod::ALL
                .map(StartMethod::name)
                .into_iter()
                .filter(|m| *m != default)
                .map(str::to_string),
        );
        PyList::new(py, methods)
    }
}

/// Forces the default context of this process to `method`: a child's default is the method
/// that started it. A no-op when it already is (the usual fork case), which spares a fork
/// child the copy of the pages the assignment would write.
pub fn force_start_method(py: Python<'_>, method: StartMethod) -> PyResult<()> {
    let ctx = registry(py)?.get_item(method.name())?.ok_or_else(|| {
        PyValueError::new_err(format!("cannot find context for {:?}", method.name()))
    })?;
    let default = default_context(py)?.get();
    let mut actual = default.actual.lock().unwrap();
    if actual.as_ref().is_some_and(|a| a.is(&ctx)) {
        return Ok(());
    }
    *actual = Some(ctx.unbind());
    Ok(())
}
