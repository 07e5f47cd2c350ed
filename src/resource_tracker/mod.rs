//! The resource tracker, client side (CPython's `resource_tracker.ResourceTracker`): starting the
//! tracker process, sending it CPython's lines, and handing it to children. The tracker itself
//! is `program.rs`, a small program of its own that `build.rs` compiles and this extension
//! carries; it is started from an anonymous memory file, so nothing is written to disk.
//!
//! One tracker serves a whole process tree: fork children inherit the pipe's write end, spawn and
//! fork-server children receive it (`procstart/popen_spawn.py`). It unlinks what is still registered
//! when every holder of the write end has exited. `procstart/resource_tracker.py` holds the
//! Python API and the relaunch policy.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{pipe2, Pid};
use pyo3::prelude::*;

use crate::errors::os_error;

use crate::program::{reap, start_program};
use crate::sys::pidfd;

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/procstart-resource-tracker"));

struct Tracker {
    pid: Pid,
    /// The process that started the tracker, which must reap it.
    owner: Pid,
    /// The pipe's write end: every line goes here, and holding it keeps the tracker running.
    fd: OwnedFd,
    /// A pidfd of the tracker (in the process that started it).
    handle: Option<OwnedFd>,
}

/// Taken only with the GIL held and never across a GIL release (see `sys::fork`).
static TRACKER: Mutex<Option<Arc<Tracker>>> = Mutex::new(None);

fn current() -> Option<Arc<Tracker>> {
    TRACKER.lock().unwrap().clone()
}

/// An executable copy of the tracker program in memory.
fn program_file() -> nix::Result<OwnedFd> {
    let name = CString::new("procstart-resource-tracker").expect("no NUL in the name");
    // MFD_EXEC (Linux >= 6.3) asks for an executable memfd where the system's policy makes
    // them non-executable by default; older kernels refuse the flag.
    const MFD_EXEC: u32 = 0x10;
    let create = |flags: u32| {
        // SAFETY: memfd_create takes a NUL-terminated name, which `name` is, and returns a new
        // descriptor or -1.
        Errno::result(unsafe { libc::memfd_create(name.as_ptr(), flags) })
    };
    let fd = create(libc::MFD_CLOEXEC | MFD_EXEC).or_else(|_| create(libc::MFD_CLOEXEC))?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut data = PROGRAM;
    while !data.is_empty() {
        match nix::unistd::write(&file, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(file)
}

/// Starts a tracker for this process (and the children it will have). Its stdout and stdin
/// are this process's, its stderr too (for its warnings).
#[pyfunction]
pub fn _tracker_start(py: Python<'_>) -> PyResult<()> {
    let program = program_file().map_err(os_error)?;
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
    // The tracker's descriptors: 3 the pipe, 4 the program, which it is executed from.
    let argv = [b"/proc/self/fd/4".to_vec()];
    // Blocked until the program has set them to be ignored: a Ctrl-C or a SIGTERM to the process
    // group right after the start must not kill it (CPython: bpo-33613).
    let blocked = [Signal::SIGINT, Signal::SIGTERM];
    let pid = start_program(py, &argv, &[r.as_fd(), program.as_fd()], None, &blocked)?;
    let handle = pidfd::supported().then(|| pidfd::open(pid).ok()).flatten();
    *TRACKER.lock().unwrap() = Some(Arc::new(Tracker {
        pid,
        owner: Pid::this(),
        fd: w,
        handle,
    }));
    Ok(())
}

/// Writes one line (a single `write`, atomic on a pipe for up to 512 bytes); `false` when the
/// tracker is gone (or none was started).
#[pyfunction]
pub fn _tracker_write(py: Python<'_>, msg: &[u8]) -> bool {
    let Some(tracker) = current() else {
        return false;
    };
    // With the GIL released: a stopped tracker with a full pipe blocks only this thread.
    py.detach(|| loop {
        match nix::unistd::write(&tracker.fd, msg) {
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    })
}

/// Forgets a tracker that died, reaping it if this process started it. Its pipe broke when its
/// descriptors were closed, which can come a moment before it has fully exited: the wait
/// blocks (GIL released) for that moment.
#[pyfunction]
pub fn _tracker_forget(py: Python<'_>) -> PyResult<()> {
    let Some(tracker) = TRACKER.lock().unwrap().take() else {
        return Ok(());
    };
    if tracker.owner == Pid::this() {
        reap(py, tracker.pid, tracker.handle.as_ref())?;
    }
    Ok(())
}

/// Tells this process's tracker about a fork server's socket directory, which it removes once
/// the server `server` has died (or, before the server runs, at its own end) unless a server
/// listens there: so the directory goes even when the server and every process that used it
/// are SIGKILLed. `forkserver_dir` is the tracker's one type of procstart's own; the name is the
/// path in hex (any bytes, never a `:` or a newline), then `.` and the server's pid. Nothing
/// without a tracker.
pub fn register_forkserver_dir(py: Python<'_>, dir: &Path, server: Option<Pid>) {
    let mut line = String::from("REGISTER:");
    for byte in dir.as_os_str().as_bytes() {
        line.push_str(&format!("{byte:02x}"));
    }
    if let Some(pid) = server {
        line.push_str(&format!(".{pid}"));
    }
    line.push_str(":forkserver_dir\n");
    // A socket's address fits in 108 bytes, so the line in one atomic write (PIPE_BUF).
    _tracker_write(py, line.as_bytes());
}

/// The pipe's write end, to pass to a child; `None` without a tracker.
#[pyfunction]
pub fn _tracker_fd() -> Option<i32> {
    current().map(|t| t.fd.as_raw_fd())
}

/// The descriptors this process holds for its tracker (the pipe, its pidfd).
#[pyfunction]
pub fn _tracker_fds() -> Vec<i32> {
    current().map_or_else(Vec::new, |t| {
        let mut fds = vec![t.fd.as_raw_fd()];
        fds.extend(t.handle.as_ref().map(AsRawFd::as_raw_fd));
        fds
    })
}

#[pyfunction]
pub fn _tracker_pid() -> Option<i32> {
    current().map(|t| t.pid.as_raw())
}

/// In a spawned or fork-server child: use the parent's tracker, whose write end is `fd`
/// (taken over) and whose pid is `pid`.
#[pyfunction]
pub fn _tracker_adopt(fd: i32, pid: i32) -> PyResult<()> {
    if fd < 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "not a file descriptor",
        ));
    }
    // SAFETY: the payload names this descriptor as the tracker pipe the parent passed; nothing
    // else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    *TRACKER.lock().unwrap() = Some(Arc::new(Tracker {
        pid: Pid::from_raw(pid),
        owner: Pid::from_raw(0),
        fd,
        handle: None,
    }));
    Ok(())
}

/// Closes this process's write end and, in the process that started the tracker, waits for it
/// to exit and returns its exit code (CPython's `ResourceTracker._stop`).
#[pyfunction]
pub fn _tracker_stop(py: Python<'_>) -> PyResult<Option<i32>> {
    let Some(tracker) = TRACKER.lock().unwrap().take() else {
        return Ok(None);
    };
    let Ok(Tracker {
        pid,
        owner,
        fd,
        handle,
        ..
    }) = Arc::try_unwrap(tracker)
    else {
        return Ok(None);
    };
    drop(fd);
    if owner != Pid::this() {
        return Ok(None);
    }
    reap(py, pid, handle.as_ref())
}
