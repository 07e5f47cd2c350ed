//! The spawn start method: a fresh interpreter started with `posix_spawn`, fed the payload
//! that `procstart/spawn.py` pickles (CPython's `popen_spawn_posix.Popen._launch`). The wire
//! layout between the two is described in `procstart/spawn.py`.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{pipe2, Pid};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::bootstrap::{self, ChildSetup};
use crate::errors::os_error;
use crate::hooks::hooks;
use crate::launch::{LaunchOptions, ParentDeath};
use crate::popen::{ChildLink, Popen};
use crate::start_method::StartMethod;
use crate::sys::spawn::spawn;

fn c_string(bytes: &[u8]) -> PyResult<CString> {
    CString::new(bytes).map_err(|_| PyValueError::new_err("embedded null byte"))
}

/// The parent's environment as it is now (`os.environ` changes reach it through `putenv`),
/// with `overrides` set over it.
fn environment(overrides: &[(String, String)]) -> Vec<CString> {
    let overridden = |key: &std::ffi::OsStr| overrides.iter().any(|(k, _)| key == k.as_str());
    let entry = |key: &[u8], value: &[u8]| CString::new([key, b"=", value].concat()).ok();
    std::env::vars_os()
        .filter(|(key, _)| !overridden(key))
        .filter_map(|(key, value)| entry(key.as_bytes(), value.as_bytes()))
        .chain(
            overrides
                .iter()
                .filter_map(|(key, value)| entry(key.as_bytes(), value.as_bytes())),
        )
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

/// Starts `argv` (an interpreter, or the resource tracker) with `child_fds` as its descriptors
/// 3, 4, ... and nothing else open besides 0, 1, 2; `options` for a process's child, `None`
/// for procstart's own helpers; `blocked`: signals it starts with blocked.
pub fn start_program(
    py: Python<'_>,
    argv: &[Vec<u8>],
    child_fds: &[BorrowedFd<'_>],
    options: Option<&LaunchOptions>,
    blocked: &[Signal],
) -> PyResult<Pid> {
    let argv: Vec<CString> = argv.iter().map(|a| c_string(a)).collect::<PyResult<_>>()?;
    let executable = &argv[0];
    let envp = environment(options.map_or(&[], |o| &o.env[..]));
    let new_group = options.is_some_and(|o| o.new_group);
    py.detach(|| spawn(executable, &argv, &envp, child_fds, new_group, blocked))
        .map_err(|e| {
            let path = String::from_utf8_lossy(executable.as_bytes()).into_owned();
            PyOSError::new_err((e as i32, e.desc(), path))
        })
}

/// Writes a payload to the pipe a child reads it from, with the GIL released, and closes it.
pub fn send_payload(py: Python<'_>, pipe: OwnedFd, data: &[u8]) -> PyResult<()> {
    py.detach(|| write_payload(pipe.as_fd(), data))
        .map_err(os_error)
}

pub fn launch(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    options: &LaunchOptions,
) -> PyResult<Popen> {
    let hooks = hooks(py)?;
    // Pickled first: an unpicklable target fails here, before anything is started or opened.
    let (payload, inherited): (Bound<'_, PyBytes>, Vec<i32>) = hooks
        .payload
        .bind(py)
        .call1((
            process,
            StartMethod::Spawn.name(),
            options.parent_death.map(ParentDeath::name),
        ))?
        .extract()?;
    let argv: Vec<Vec<u8>> = hooks.spawn_command_line.bind(py).call0()?.extract()?;
    bootstrap::flush_std_streams(py)?;

    let (payload_r, payload_w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
    let link = ChildLink::new().map_err(os_error)?;
    // The layout of procstart/spawn.py: payload, parent sentinel, stdlib objects' fds, then
    // (without pidfd) the exit pipe's write end.
    let link_fds = link.child_fds();
    let mut child_fds = vec![payload_r.as_fd(), link_fds[0]];
    child_fds.extend(borrow_inherited(&inherited));
    child_fds.extend(link_fds.into_iter().skip(1));
    let pid = start_program(py, &argv, &child_fds, Some(options), &[])?;
    drop(child_fds);
    drop(payload_r);
    let popen = link.into_popen(py, pid, StartMethod::Spawn)?;
    send_payload(py, payload_w, payload.as_bytes())?;
    Ok(popen)
}

/// The descriptors of the stdlib objects a payload refers to (`duplicate_for_child`).
pub fn borrow_inherited(fds: &[i32]) -> impl Iterator<Item = BorrowedFd<'_>> {
    fds.iter().map(|&fd| {
        // SAFETY: these are descriptors of the stdlib objects being passed (a Queue's pipe, a
        // Connection), kept open by those objects, which the process object being started
        // references for the whole launch; a number closed meanwhile makes passing it fail
        // with EBADF.
        unsafe { BorrowedFd::borrow_raw(fd) }
    })
}

/// The end of a spawned or fork-server child's entry (`procstart.spawn.run_child`): run the
/// unpickled process with the bootstrap every start method shares, and exit.
#[pyfunction]
pub fn _run_child(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    parent_sentinel: i32,
    forked: bool,
) -> PyResult<()> {
    let launcher = if forked {
        StartMethod::ForkServer
    } else {
        StartMethod::Spawn
    };
    ChildSetup::new(process, launcher)?.run(py, parent_sentinel)
}
