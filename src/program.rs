//! Starting a program (an interpreter for a spawned child or the fork server, or the resource
//! tracker) with chosen descriptors as its 3, 4, ..., writing a child's payload to it, and
//! reaping procstart's own helper programs (the fork server, the tracker).

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::errors::os_error;
use crate::options::LaunchOptions;
use crate::sys::mem::Span;
use crate::sys::pidfd;
use crate::sys::pipe::write_all;
use crate::sys::spawn::spawn;
use crate::sys::wait;

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

/// Writes a payload to the pipe or socket a child reads it from, with the GIL released.
pub fn send_payload(py: Python<'_>, fd: BorrowedFd<'_>, data: &[u8]) -> PyResult<()> {
    py.detach(|| write_all(fd, &[Span::of(data)]))
        .map(drop)
        .map_err(os_error)
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

/// Waits, with the GIL released and Ctrl-C let through, for this process's child `pid` (by its
/// pidfd when there is one) to exit, and reaps it; its exit code, `None` if it is not (or no
/// longer) this process's child to reap.
pub fn reap(py: Python<'_>, pid: Pid, handle: Option<&OwnedFd>) -> PyResult<Option<i32>> {
    loop {
        match py.detach(|| wait::waitid(pidfd::wait_id(pid, handle), WaitPidFlag::WEXITED)) {
            Ok(ended) => return Ok(ended.map(|(code, _)| code)),
            Err(Errno::ECHILD) => return Ok(None),
            Err(Errno::EINTR) => py.check_signals()?,
            Err(e) => return Err(os_error(e)),
        }
    }
}
