//! The client side of the fork server: starting it, finding it again, and asking it for a
//! child (CPython's `forkserver.ForkServer`; the launcher that asks is `launch/forkserver.rs`,
//! CPython's `popen_forkserver.Popen`).
//!
//! One server serves a whole process tree. The process that starts it holds the key, the
//! address and the write end of the server's alive pipe; fork children inherit them, spawn and
//! fork-server children receive them in their payload (`procstart/popen_spawn.py`). The server exits
//! when every holder of the alive pipe has exited.
//!
//! Its socket directory does not outlive it. The server removes it when it ends, and the process
//! that started it waits for that at its exit (`_forkserver_at_exit`). A server that was killed
//! leaves it to whoever outlives it: any process that finds the server dead (a start, `_stop`, its
//! exit), and the resource tracker, told of the directory when the server starts, which removes
//! it once the server has died even when every process that used it is gone too. Should all of
//! them have been killed, the next server started in the same temporary directory removes it.
//!
//! The server is the parent of every child it forks: it reaps them and sends each exit status
//! on the connection that asked for the child, and hands the client its pidfd on the child, so
//! that the client waits for and signals exactly that process (no PID reuse). A server that
//! dies does not end its children; their clients learn their exit status from the kernel
//! (`PIDFD_INFO_EXIT`) once whoever inherits them has reaped them (see `popen.rs`).

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::protocol::{self, Key, Refused, Reply, KEY_LEN};
use super::remove_socket;
use crate::errors::os_error;
use crate::program::{reap, send_payload, start_program};
use crate::resource_tracker::register_forkserver_dir;
use crate::sys::pidfd;
use crate::sys::poll::{wait_readable, Readiness};
use crate::sys::socket::{random_bytes, MAX_FDS};

/// The server this process uses.
struct Server {
    pid: Pid,
    /// The process that started the server, which must reap it.
    owner: Pid,
    address: PathBuf,
    key: Key,
    /// Holding it keeps the server running.
    alive_w: OwnedFd,
    /// A pidfd of the server, to tell whether it still runs.
    handle: Option<OwnedFd>,
}

/// Taken only with the GIL held and never across a GIL release (see `sys::fork`); launches
/// clone the `Arc` out.
static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// The key this process presents to its server instead of the server's own, set through
/// `ForkServer._forkserver_authkey` (CPython's tests present a wrong one); forgotten when the
/// server changes, as CPython's attribute is replaced by a new server's key. Locked as `SERVER`.
static KEY_OVERRIDE: Mutex<Option<Vec<u8>>> = Mutex::new(None);

fn forget_key_override() {
    *KEY_OVERRIDE.lock().unwrap() = None;
}

impl Server {
    fn is_running(&self) -> bool {
        running(self.pid, self.handle.as_ref())
    }

    /// Stops using the server: closes this process's alive pipe; the process that started it
    /// waits for it to end (`wait`), any other only looks. Once it has ended, its directory
    /// goes (also when it was killed, which left it behind); while other processes of the tree
    /// still hold it, it stays.
    fn release(self, py: Python<'_>, wait: OwnerWait) -> PyResult<()> {
        let Server {
            pid,
            owner,
            address,
            alive_w,
            handle,
            ..
        } = self;
        drop(alive_w);
        let ended = if owner != Pid::this() {
            !running(pid, handle.as_ref())
        } else {
            match wait {
                OwnerWait::Reap => {
                    reap(py, pid, handle.as_ref())?;
                    true
                }
                OwnerWait::AtMost(limit) => {
                    py.detach(|| wait_for_exit(pid, handle.as_ref(), limit))
                }
            }
        };
        if ended {
            remove_socket(&address);
        }
        Ok(())
    }

    /// After the server died: the process that started it reaps it, and its socket and
    /// directory go (a server that exits normally removes them itself).
    fn clean_up_after(&self) {
        if self.owner == Pid::this() {
            let id = pidfd::wait_id(self.pid, self.handle.as_ref());
            let _ = waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG);
        }
        remove_socket(&self.address);
    }
}

/// How the process that started the server waits for it once it has closed its alive pipe.
enum OwnerWait {
    /// Until it has ended, and reaps it.
    Reap,
    /// At most this long (at exit, the kernel's init reaps it).
    AtMost(Duration),
}

/// Whether the server `pid` (held by `handle` when pidfds are supported) still runs.
fn running(pid: Pid, handle: Option<&OwnedFd>) -> bool {
    match handle {
        Some(fd) => matches!(
            wait_readable(std::os::fd::AsRawFd::as_raw_fd(fd), Some(Instant::now())),
            Ok(Readiness::TimedOut)
        ),
        None => nix::sys::signal::kill(pid, None).is_ok(),
    }
}

/// Waits up to `timeout` for the server `pid` to exit, reaping it (this process started it);
/// whether it has exited. Called with the GIL released.
fn wait_for_exit(pid: Pid, handle: Option<&OwnedFd>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let Some(fd) = handle else {
        // Without a pidfd: polled, as the server's loop polls such children.
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                // Exited, or reaped already (SIGCHLD ignored: the kernel reaps it).
                Ok(_) | Err(_) => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    loop {
        match wait_readable(std::os::fd::AsRawFd::as_raw_fd(fd), Some(deadline)) {
            Ok(Readiness::Ready) | Err(_) => break,
            Ok(Readiness::TimedOut) => return false,
            // Python's handlers run once the GIL is taken again, after the wait.
            Ok(Readiness::Interrupted) => {}
        }
    }
    let _ = waitid(
        Id::PIDFd(fd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    );
    true
}

fn current() -> Option<Arc<Server>> {
    SERVER.lock().unwrap().clone()
}

/// Stops using `server` if it is still the current one.
fn forget(server: &Arc<Server>) {
    let mut current = SERVER.lock().unwrap();
    if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, server)) {
        *current = None;
        drop(current);
        forget_key_override();
    } else {
        drop(current);
    }
    if !server.is_running() {
        server.clean_up_after();
    }
}

/// Whether this process has a running server; a dead one is cleaned up and forgotten, so the
/// next start launches another (CPython's `ensure_running`, bpo-31308).
#[pyfunction]
pub fn _forkserver_alive() -> bool {
    match current() {
        Some(server) if server.is_running() => true,
        Some(server) => {
            forget(&server);
            false
        }
        None => false,
    }
}

/// A private directory for the server's socket: `$TMPDIR/procstart-XXXXXXXX`, mode 0700, so
/// that no other user can even reach the socket (never the abstract namespace, which any
/// process in the network namespace can reach: CVE-2022-42919).
fn private_dir() -> PyResult<PathBuf> {
    // Absolute, so that a relative TMPDIR still names the same socket after a chdir.
    let base = std::path::absolute(std::env::temp_dir())?;
    loop {
        let mut suffix = [0u8; 6];
        random_bytes(&mut suffix).map_err(os_error)?;
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("procstart-{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long after its last change a server directory where nothing listens is taken to be
/// abandoned: longer than any server start (making the directory, binding, listening) takes.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Removes the directories of dead servers that nobody was left to remove (the server killed
/// with every process that used it and their tracker): this user's `procstart-<12 hex digits>`
/// directories in `base`, unchanged for `ABANDONED_AFTER`, where nothing listens.
fn remove_abandoned_dirs(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(suffix) = name.to_str().and_then(|n| n.strip_prefix("procstart-")) else {
            continue;
        };
        if suffix.len() != 12 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let dir = entry.path();
        // Not followed: a symlink is not a server's directory.
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        let unchanged = meta.modified().ok().and_then(|m| m.elapsed().ok());
        if !meta.is_dir()
            || std::os::unix::fs::MetadataExt::uid(&meta) != uid
            || unchanged.is_none_or(|age| age < ABANDONED_AFTER)
        {
            continue;
        }
        let address = dir.join("socket");
        if !listening(&address) {
            remove_socket(&address);
        }
    }
}

/// Whether a server listens at `address`: a connection is refused only when none does (a dead
/// server leaves its socket file). Never blocks: a full backlog (`EAGAIN`) is a live server's.
fn listening(address: &std::path::Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let Ok(addr) = UnixAddr::new(address) else {
        return true;
    };
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return true;
    };
    !matches!(
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr),
        Err(Errno::ECONNREFUSED | Errno::ENOENT)
    )
}

/// Starts a server: `argv` is its command line (`procstart/forkserver.py`'s `server_main`),
/// `data` what it reads after the key. Its descriptors: 3 the payload, 4 the listening
/// socket, 5 the alive pipe's read end.
#[pyfunction]
pub fn _forkserver_start(py: Python<'_>, argv: Vec<Vec<u8>>, data: &[u8]) -> PyResult<()> {
    let dir = private_dir()?;
    if let Some(base) = dir.parent() {
        py.detach(|| remove_abandoned_dirs(base));
    }
    // Told to the tracker before anything can die, so that the directory never outlives both
    // the server and this process (the tracker outlives them: `resource_tracker/program.rs`).
    register_forkserver_dir(py, &dir, None);
    let address = dir.join("socket");
    let bound = UnixListener::bind(&address).and_then(|listener| {
        std::fs::set_permissions(&address, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    });
    let listener = match bound {
        Ok(listener) => listener,
        Err(e) => {
            remove_socket(&address);
            return Err(e.into());
        }
    };
    let started = (|| -> PyResult<(Pid, OwnedFd, OwnedFd)> {
        let key = protocol::new_key().map_err(os_error)?;
        let (alive_r, alive_w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
        let (payload_r, payload_w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
        let pid = start_program(
            py,
            &argv,
            &[payload_r.as_fd(), listener.as_fd(), alive_r.as_fd()],
            None,
            &[],
        )?;
        let mut payload = Vec::with_capacity(KEY_LEN + 8 + address.as_os_str().len() + data.len());
        payload.extend_from_slice(&key);
        payload.extend_from_slice(&(address.as_os_str().len() as u64).to_le_bytes());
        payload.extend_from_slice(address.as_os_str().as_bytes());
        payload.extend_from_slice(data);
        send_payload(py, payload_w.as_fd(), &payload)?;
        drop(payload_w);
        // Now also watched by the tracker, which removes the directory once the server dies.
        register_forkserver_dir(py, &dir, Some(pid));
        let handle = pidfd::supported().then(|| pidfd::open(pid).ok()).flatten();
        forget_key_override();
        *SERVER.lock().unwrap() = Some(Arc::new(Server {
            pid,
            owner: Pid::this(),
            address: address.clone(),
            key,
            alive_w,
            handle,
        }));
        Ok((pid, alive_r, payload_r))
    })();
    if started.is_err() {
        remove_socket(&address);
    }
    started.map(drop)
}

/// What a child needs to use this process's server: (address, key, alive fd, server pid).
#[pyfunction]
pub fn _forkserver_info(py: Python<'_>) -> Option<(Py<PyBytes>, Py<PyBytes>, i32, i32)> {
    current().map(|s| {
        (
            PyBytes::new(py, s.address.as_os_str().as_bytes()).unbind(),
            PyBytes::new(py, &s.key).unbind(),
            std::os::fd::AsRawFd::as_raw_fd(&s.alive_w),
            s.pid.as_raw(),
        )
    })
}

/// In a spawned or fork-server child: use the parent's server (CPython starts one per process,
/// gh-86354). Takes ownership of `alive_fd`.
#[pyfunction]
pub fn _forkserver_adopt(address: Vec<u8>, key: &[u8], alive_fd: i32, pid: i32) -> PyResult<()> {
    let key: Key = key
        .try_into()
        .map_err(|_| PyValueError::new_err("fork server key must be 32 bytes"))?;
    // SAFETY: the payload names this descriptor as the alive pipe the parent passed; nothing
    // else in this process owns it.
    let alive_w = unsafe { OwnedFd::from_raw_fd(alive_fd) };
    let pid = Pid::from_raw(pid);
    // The parent holds the server alive while this child starts, so the pid is still its.
    let handle = pidfd::supported().then(|| pidfd::open(pid).ok()).flatten();
    forget_key_override();
    *SERVER.lock().unwrap() = Some(Arc::new(Server {
        pid,
        owner: Pid::from_raw(0),
        address: PathBuf::from(OsString::from_vec(address)),
        key,
        alive_w,
        handle,
    }));
    Ok(())
}

/// The descriptors this process holds for its server (the alive pipe, the server's pidfd).
#[pyfunction]
pub fn _forkserver_fds() -> Vec<i32> {
    current().map_or_else(Vec::new, |s| {
        let mut fds = vec![std::os::fd::AsRawFd::as_raw_fd(&s.alive_w)];
        fds.extend(s.handle.as_ref().map(std::os::fd::AsRawFd::as_raw_fd));
        fds
    })
}

/// The key this process presents to its server: the one set by `_forkserver_use_key`, else
/// the server's own; `None` without either (CPython's `ForkServer._forkserver_authkey`).
#[pyfunction]
pub fn _forkserver_key(py: Python<'_>) -> Option<Py<PyBytes>> {
    let key = KEY_OVERRIDE
        .lock()
        .unwrap()
        .clone()
        .or_else(|| current().map(|s| s.key.to_vec()))?;
    Some(PyBytes::new(py, &key).unbind())
}

/// Presents `key` (any length) to the server from now on instead of its own key; `None`: its
/// own again. A new server forgets it.
#[pyfunction]
pub fn _forkserver_use_key(key: Option<&[u8]>) {
    *KEY_OVERRIDE.lock().unwrap() = key.map(<[u8]>::to_vec);
}

/// The pid of this process's server, if it has one.
#[pyfunction]
pub fn _forkserver_pid() -> Option<i32> {
    current().map(|s| s.pid.as_raw())
}

/// Stops using the server: closes this process's alive pipe and, in the process that started
/// it, waits for it to exit (CPython's `ForkServer._stop`, used by tests). Its socket and
/// directory go unless it still serves other processes of the tree.
#[pyfunction]
pub fn _forkserver_stop(py: Python<'_>) -> PyResult<()> {
    let mut slot = SERVER.lock().unwrap();
    if slot.as_ref().is_some_and(|s| Arc::strong_count(s) > 1) {
        return Err(PyOSError::new_err(
            "the fork server is in use by another thread",
        ));
    }
    let Some(server) = slot.take().and_then(Arc::into_inner) else {
        return Ok(());
    };
    drop(slot);
    forget_key_override();
    server.release(py, OwnerWait::Reap)
}

/// How long the process that started the server waits at its exit for the server to follow.
/// The server ends as soon as the last holder of its alive pipe has closed it, and removes its
/// directory; while processes of the tree that outlive this one hold it, it serves them, and
/// this process stops waiting after this long.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// At this process's exit, once its children are joined: stops using the server, so that none
/// of it outlives the process. The process that started it closes its alive pipe and waits (up
/// to `EXIT_WAIT`) for the server to exit, which removes the socket directory before this
/// process is gone (regrtest's `-j` workers have their temporary directory checked right then),
/// also when the server was killed; any other process removes the directory of a server that
/// died. Nothing without a server; a second call does nothing.
#[pyfunction]
pub fn _forkserver_at_exit(py: Python<'_>) -> PyResult<()> {
    let Some(server) = SERVER.lock().unwrap().take() else {
        return Ok(());
    };
    forget_key_override();
    let server = match Arc::try_unwrap(server) {
        Ok(server) => server,
        // Another thread is still asking it for a child: only a dead server's directory goes.
        Err(server) => {
            if !server.is_running() {
                remove_socket(&server.address);
            }
            return Ok(());
        }
    };
    server.release(py, OwnerWait::AtMost(EXIT_WAIT))
}

enum Failure {
    /// Nothing listens at the address: the server is gone.
    Unreachable,
    Refused(Refused),
}

/// Connects, authenticates with `key` and sends the request; the connection and the server's
/// reply.
fn ask(
    server: &Server,
    key: &[u8],
    flags: u16,
    fds: &[BorrowedFd<'_>],
) -> Result<(OwnedFd, Reply), Failure> {
    let conn = match UnixStream::connect(&server.address) {
        Ok(conn) => OwnedFd::from(conn),
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            return Err(match errno {
                Errno::ENOENT | Errno::ECONNREFUSED => Failure::Unreachable,
                e => Failure::Refused(Refused::Os(e)),
            });
        }
    };
    let gone = |refused: Refused| {
        if server.is_running() {
            Failure::Refused(refused)
        } else {
            Failure::Unreachable
        }
    };
    protocol::request(conn.as_fd(), key, flags, fds).map_err(gone)?;
    let reply = protocol::read_reply(conn.as_fd()).map_err(|e| gone(Refused::Os(e)))?;
    Ok((conn, reply))
}

/// `message=b'...'`, as CPython's f-strings `{message=}` show it.
fn message_repr(py: Python<'_>, message: &[u8]) -> PyResult<String> {
    Ok(format!("message={}", PyBytes::new(py, message).repr()?))
}

/// A refused handshake as CPython's `answer_challenge` and `deliver_challenge` report it.
fn refused_error(py: Python<'_>, refused: Refused) -> PyErr {
    let message = match refused {
        Refused::Authentication => Ok("digest received was wrong".to_string()),
        Refused::Rejected => Ok("digest sent was rejected".to_string()),
        Refused::NotChallenge(message) => message_repr(py, &message)
            .map(|message| format!("Protocol error, expected challenge: {message}")),
        Refused::ShortChallenge(len) => Ok(format!("challenge too short: {len} bytes")),
        Refused::UnsupportedDigest(message) => message_repr(py, &message).map(|message| {
            format!(
                "unsupported message length, missing digest prefix, or unsupported digest: \
                 {message}"
            )
        }),
        Refused::Os(e) => return os_error(e),
    };
    match message {
        Ok(message) => authentication_error(py, &message),
        Err(err) => err,
    }
}

fn authentication_error(py: Python<'_>, message: &str) -> PyErr {
    match py
        .import("multiprocessing")
        .and_then(|mp| mp.getattr("AuthenticationError"))
        .and_then(|cls| cls.call1((message,)))
    {
        Ok(err) => PyErr::from_value(err),
        Err(err) => err,
    }
}

/// With `set_forkserver_preload(..., on_error='fail')` (Python 3.15), a server that cannot be
/// reached, or that hangs up during the handshake, may have died of a preload import: CPython's
/// note on the error (an `EOFError` or a `ConnectionError`) says so.
pub fn preload_crash_note(py: Python<'_>, err: PyErr) -> PyErr {
    let lost = err.is_instance_of::<pyo3::exceptions::PyEOFError>(py)
        || err.is_instance_of::<pyo3::exceptions::PyConnectionError>(py);
    if lost && super::get_preload_on_error() == "fail" && !super::get_preload().is_empty() {
        let note = "Forkserver process may have crashed during module preloading. Check stderr.";
        if let Err(e) = err.value(py).call_method1(intern!(py, "add_note"), (note,)) {
            return e;
        }
    }
    err
}

/// What asking this process's server for a child came to.
pub enum Asked {
    /// The server made the child (or failed to): its reply, and the connection on which a
    /// server-made child's exit status arrives.
    Answered(OwnedFd, Reply),
    /// Nothing listens at the server's address: it is gone, and forgotten here, so that
    /// `ensure_running` starts another.
    ServerGone,
    /// A signal arrived while waiting for the server, and its handler has run: a request left
    /// half-way makes at most a child that finds no payload.
    Interrupted,
}

/// CPython's `ForkServer.connect_to_new_process`: connects to the running server,
/// authenticates and sends a request for a child that starts with `fds`.
pub fn connect_to_new_process(
    py: Python<'_>,
    flags: u16,
    fds: &[BorrowedFd<'_>],
) -> PyResult<Asked> {
    if fds.len() > MAX_FDS {
        return Err(PyValueError::new_err("too many fds"));
    }
    let server = current().ok_or_else(|| PyOSError::new_err("the fork server did not start"))?;
    let key = KEY_OVERRIDE.lock().unwrap().clone();
    let asked = py.detach(|| ask(&server, key.as_deref().unwrap_or(&server.key), flags, fds));
    match asked {
        Ok((conn, reply)) => Ok(Asked::Answered(conn, reply)),
        Err(Failure::Unreachable) => {
            forget(&server);
            Ok(Asked::ServerGone)
        }
        Err(Failure::Refused(Refused::Os(Errno::EINTR))) => {
            py.check_signals()?;
            Ok(Asked::Interrupted)
        }
        Err(Failure::Refused(refused)) => Err(preload_crash_note(py, refused_error(py, refused))),
    }
}

/// The address and PID of the server this process uses, if any.
pub fn current_address() -> Option<(PathBuf, Pid)> {
    current().map(|server| (server.address.clone(), server.pid))
}
