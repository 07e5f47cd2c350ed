//! `procstart._procstart`: the operating-system half of procstart. Python code in
//! `python/procstart/` pickles, prepares children and presents the `multiprocessing` API;
//! everything here starts, waits for, signals and reaps processes.

mod buffers;
mod child;
mod context;
mod errors;
mod executable;
mod forkserver;
mod hooks;
mod imports;
mod launch;
mod link;
mod options;
mod popen;
mod process;
mod program;
mod registry;
mod resource_tracker;
mod semlock;
mod start_method;
mod stdlib;
mod streams;
mod sys;
mod thread_check;

use pyo3::prelude::*;

#[pymodule(gil_used = true)]
fn _procstart(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<process::Process>()?;
    m.add_class::<popen::Popen>()?;
    m.add_class::<semlock::SemLock>()?;
    m.add_function(wrap_pyfunction!(semlock::sem_unlink, m)?)?;
    m.add_class::<context::BaseContext>()?;
    m.add_class::<context::DefaultContext>()?;
    m.add_function(wrap_pyfunction!(registry::current_process, m)?)?;
    m.add_function(wrap_pyfunction!(registry::parent_process, m)?)?;
    m.add_function(wrap_pyfunction!(process::active_children, m)?)?;
    m.add_function(wrap_pyfunction!(popen::wait_sentinel, m)?)?;
    m.add_function(wrap_pyfunction!(registry::_set_current_process, m)?)?;
    m.add_function(wrap_pyfunction!(child::_run_child, m)?)?;
    m.add_function(wrap_pyfunction!(child::_prepare_forked_children, m)?)?;
    m.add_function(wrap_pyfunction!(child::_die_with_parent, m)?)?;
    m.add_class::<child::Prefault>()?;
    m.add_function(wrap_pyfunction!(child::_prefault, m)?)?;
    m.add_function(wrap_pyfunction!(launch::_launch, m)?)?;
    m.add_function(wrap_pyfunction!(thread_check::set_fork_thread_check, m)?)?;
    m.add_function(wrap_pyfunction!(thread_check::get_fork_thread_check, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::_register_hooks, m)?)?;
    m.add_function(wrap_pyfunction!(context::_default_context, m)?)?;
    m.add_function(wrap_pyfunction!(executable::get_executable, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::get_preload, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::get_preload_on_error, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_alive, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_start, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_info, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_adopt, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_key, m)?)?;
    m.add_function(wrap_pyfunction!(
        forkserver::client::_forkserver_use_key,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_pid, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_fds, m)?)?;
    m.add_function(wrap_pyfunction!(forkserver::client::_forkserver_stop, m)?)?;
    m.add_function(wrap_pyfunction!(
        forkserver::client::_forkserver_at_exit,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(forkserver::server::_forkserver_serve, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_start, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_write, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_forget, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_fd, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_fds, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_pid, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_adopt, m)?)?;
    m.add_function(wrap_pyfunction!(resource_tracker::_tracker_stop, m)?)?;
    Ok(())
}
