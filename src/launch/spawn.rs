//! The spawn start method: a fresh interpreter started with `posix_spawn`, fed the payload
//! that `procstart/popen_spawn.py` pickles (CPython's `popen_spawn_posix.Popen._launch`).

use pyo3::prelude::*;

use super::payload::PayloadLaunch;
use crate::hooks::hooks;
use crate::options::LaunchOptions;
use crate::popen::Popen;
use crate::program::start_program;
use crate::start_method::StartMethod;

pub fn launch(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    options: &LaunchOptions,
) -> PyResult<Popen> {
    let launch = PayloadLaunch::prepare(process, StartMethod::Spawn, options)?;
    let argv: Vec<Vec<u8>> = hooks(py)?.spawn_command_line.bind(py).call0()?.extract()?;
    let pid = start_program(py, &argv, &launch.child_fds(), Some(options), &[])?;
    launch.finish(py, |link| {
        Popen::from_link(link, py, pid, StartMethod::Spawn)
    })
}
