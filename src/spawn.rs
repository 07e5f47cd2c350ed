//! The spawn start method: a fresh interpreter started with `posix_spawn`, fed the payload
//! that `procstart/spawn.py` pickles (CPython's `popen_spawn_posix.Popen._launch`). The wire
//! layout between the two is described in `procstart/spawn.py`.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::bootstrap::{self, ChildSetup};
use crate::imports::py_spawn;
use crate::popen::{os_error, ChildLink, Popen};
use crate::sys::spawn::spawn;

fn c_string(bytes: &[u8]) -> PyResult<CString> {
    CString::new(bytes).map_err(|_| PyValueError::new_err("embedded null byte"))
}

/// The parent's environment as it is now (`os.environ` changes reach it through `putenv`).
fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect()
}

/// Writes all of `data` to `fd`, retrying on EINTR. A child that died before reading it all
/// (EPIPE) is not an error here: its exit code tells what happened.
fn write_payload(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn launch(py: Python<'_>, process: &Bound<'_, PyAny>) -> PyResult<Popen> {
    let spawn_module = py_spawn(py)?;
    // Pickled first: an unpicklable target fails here, before anything is started or opened.
    let (payload, inherited): (Bound<'_, PyBytes>, Vec<i32>) = spawn_module
        .call_method1(intern!(py, "payload"), (process,))?
        .extract()?;
    let argv: Vec<Vec<u8>> = spawn_module
        .call_method0(intern!(py, "command_line"))?
        .extract()?;
    let argv: Vec<CString> = argv.iter().map(|a| c_string(a)).collect::<PyResult<_>>()?;
    let executable = argv[0].clone();
    bootstrap::flush_std_streams(py)?;

    let (payload_r, payload_w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
    let link = ChildLink::new().map_err(os_error)?;
    // The layout of procstart/spawn.py: payload, parent sentinel, stdlib objects' fds, then
    // (without pidfd) the exit pipe's write end.
    let link_fds = link.child_fds();
    let mut child_fds = vec![payload_r.as_fd(), link_fds[0]];
    for &fd in &inherited {
        // SAFETY: these are descriptors of the stdlib objects being passed (a Queue's pipe, a
        // Connection), kept open by those objects, which `process` references for the whole
        // call; a number closed meanwhile makes the dup in spawn() fail with EBADF.
        child_fds.push(unsafe { BorrowedFd::borrow_raw(fd) });
    }
    child_fds.extend(link_fds.into_iter().skip(1));
    let envp = environment();
    let pid = py
        .detach(|| spawn(&executable, &argv, &envp, &child_fds))
        .map_err(|e| {
            let path = String::from_utf8_lossy(executable.as_bytes()).into_owned();
            PyOSError::new_err((e as i32, e.desc(), path))
        })?;
    drop(child_fds);
    drop(payload_r);
    let popen = link.into_popen(py, pid, "spawn")?;
    let data = payload.as_bytes();
    py.detach(|| write_payload(payload_w.as_fd(), data))
        .map_err(os_error)?;
    drop::<OwnedFd>(payload_w);
    Ok(popen)
}

/// The end of a spawned child's entry (`procstart.spawn.spawn_main`): run the unpickled
/// process with the bootstrap every start method shares, and exit.
#[pyfunction]
pub fn _run_spawned(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    parent_sentinel: i32,
) -> PyResult<()> {
    ChildSetup::new(process, "spawn")?.run(py, parent_sentinel)
}
