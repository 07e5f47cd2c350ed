//! procstart's Python half as the extension sees it: the classes and functions Rust calls back,
//! handed over once by `procstart/_hooks.py` when the package is imported. The extension imports
//! no module of procstart's by name, so the dependency points one way (Python imports the
//! extension), and every call from Rust into procstart's Python is one of the fields below.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

macro_rules! hooks {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        pub struct Hooks {
            $($(#[$doc])* pub $field: Py<PyAny>,)*
        }

        impl Hooks {
            fn read(namespace: &Bound<'_, PyAny>) -> PyResult<Self> {
                Ok(Hooks {
                    $($field: namespace.getattr(stringify!($field))?.unbind(),)*
                })
            }
        }
    };
}

hooks! {
    /// `context._concrete_contexts`: `{'fork': ForkContext(), ...}`.
    concrete_contexts,
    /// `context._default_context`: the `DefaultContext` behind the module-level API.
    default_context,
    /// `context._platform_default()`: the default context, decided when first needed.
    platform_default,
    /// `process._MainProcess`: the current process of a program that procstart did not start.
    main_process,
    /// `process._ParentProcess(name, pid, sentinel)`: what `parent_process()` returns in a child.
    parent_process,
    /// `process._exitcode_to_name`: `-signal` → signal name, for `repr()`.
    exitcode_to_name,
    /// `process.ResourceUsage`: `Process.rusage`.
    resource_usage,
    /// `process.exit_reason(code, lost, signalled, usage)`: `Process.exit_reason`.
    exit_reason,
    /// `process.AuthenticationString`: what `authkey` holds.
    authentication_string,
    /// `process._exit_function()`: CPython's `util._exit_function`, run last in a child with
    /// children of its own.
    exit_function,
    /// `_bootstrap.devnull_stdin()`: every child's `sys.stdin`, made once in the parent.
    devnull_stdin,
    /// `_bootstrap.exit_code_for(process, exc)`: the exit code of a `run()` that raised.
    exit_code_for,
    /// `_bootstrap.other_threads()`: the threads a fork would drop, for the fork thread check.
    other_threads,
    /// `popen_spawn.payload(process, method, parent_death)`: the pickled child, as a list of the
    /// segments to write (`launch/transport.rs`), the descriptors it inherits, and what the parent
    /// keeps alive until the child has loaded it, for a spawned or fork-server child.
    payload,
    /// `spawn.command_line()`: the argv of a spawned child.
    spawn_command_line,
    /// `forkserver.ensure_running()`: this process's fork server, started if need be.
    forkserver_ensure_running,
    /// `forkserver.child_main(payload_fd, parent_sentinel, inherited)`: what a fork-server child
    /// runs, in the child.
    forkserver_child_main,
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

/// The registered hooks: `procstart` registers them before anything can start a process.
pub fn hooks(py: Python<'_>) -> PyResult<&Hooks> {
    HOOKS.get(py).ok_or_else(|| {
        PyRuntimeError::new_err(
            "procstart._procstart is used without procstart: its Python half registers the \
             extension's hooks when `procstart` is imported",
        )
    })
}

/// Registers procstart's Python half (`procstart/_hooks.py`, which names each hook): once per
/// process; a fork child keeps its parent's.
#[pyfunction]
pub fn _register_hooks(namespace: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = namespace.py();
    let hooks = Hooks::read(namespace)?;
    HOOKS
        .set(py, hooks)
        .map_err(|_| PyRuntimeError::new_err("procstart's hooks are registered already"))
}
