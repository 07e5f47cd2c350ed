//! Starting a child, in the parent: one launcher per start method (`fork.rs`, `spawn.rs`,
//! `forkserver.rs`; the last two share `payload.rs`), chosen here. Each returns the `Popen`
//! through which the parent waits for and signals the child.

mod fork;
mod forkserver;
mod payload;
mod spawn;
mod transport;

use pyo3::prelude::*;

use crate::options::LaunchOptions;
use crate::popen::Popen;
use crate::start_method::StartMethod;

pub fn launch(py: Python<'_>, method: StartMethod, process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    let options = LaunchOptions::of(process, method)?;
    let popen = match method {
        StartMethod::Fork => fork::launch(py, process, &options),
        StartMethod::Spawn => spawn::launch(py, process, &options),
        StartMethod::ForkServer => forkserver::launch(py, process, &options),
    }?;
    Ok(if options.new_group {
        popen.leading_group()
    } else {
        popen
    })
}

/// Starts a process object that is not a `procstart.Process` (a stdlib `multiprocessing`
/// process under `procstart.install()`) with the start method its class names, or the default
/// one: the child runs it as its current process; the returned `Popen` has the protocol
/// stdlib's `start()`, `join()` and `terminate()` use.
#[pyfunction]
pub fn _launch(process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    launch(
        process.py(),
        crate::context::start_method_for(process)?,
        process,
    )
}
