//! The fork server's loop (CPython's `forkserver.main`), run in the server interpreter once
//! `procstart/forkserver.py` has preloaded the modules: wait with the GIL released for a
//! connection, the alive pipe's end, or a child's exit; authenticate each connection; fork a
//! child per request with the `PyOS_*Fork*` bracket; report pids and exit statuses.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{accept4, SockFlag};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, getuid, Pid};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;

use super::protocol::{self, Key, Request, FLAG_EXIT_PIPE};
use crate::imports::py_forkserver;
use crate::popen::os_error;
use crate::sys::fork::{fork_as, Forked, Parentage};
use crate::sys::pidfd;
use crate::sys::socket::peer_credentials;

/// A child the server made as its own, until it has reaped it and sent the status.
struct Served {
    pid: Pid,
    handle: Option<OwnedFd>,
    conn: OwnedFd,
}

/// How often children without a pidfd are polled for their exit.
const REAP_INTERVAL: Duration = Duration::from_millis(20);

/// Serves until the alive pipe `alive` reaches its end, then removes the socket at `address`
/// and its directory. Takes ownership of both descriptors.
#[pyfunction]
pub fn _forkserver_serve(
    py: Python<'_>,
    listener: i32,
    alive: i32,
    key: &[u8],
    address: Vec<u8>,
) -> PyResult<()> {
    let key: Key = key
        .try_into()
        .map_err(|_| PyValueError::new_err("fork server key must be 32 bytes"))?;
    // SAFETY: the server's layout (procstart/forkserver.py) gives it these two descriptors
    // and nothing in the server's Python code owns them.
    let (listener, alive) =
        unsafe { (OwnedFd::from_raw_fd(listener), OwnedFd::from_raw_fd(alive)) };
    let address = PathBuf::from(std::ffi::OsString::from_vec(address));
    let served = serve(py, listener, alive, &key);
    let _ = std::fs::remove_file(&address);
    if let Some(dir) = address.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    served
}

fn serve(py: Python<'_>, listener: OwnedFd, alive: OwnedFd, key: &Key) -> PyResult<()> {
    // Readable does not promise a connection (the client may have given up): never block.
    fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(os_error)?;
    let mut children: Vec<Served> = Vec::new();
    loop {
        let timeout = if children.iter().any(|c| c.handle.is_none()) {
            PollTimeout::try_from(REAP_INTERVAL).unwrap_or(PollTimeout::NONE)
        } else {
            PollTimeout::NONE
        };
        let (listener_ready, alive_ended) = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(alive.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                children
                    .iter()
                    .filter_map(|c| c.handle.as_ref())
                    .map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN)),
            );
            match py.detach(|| poll(&mut fds, timeout)) {
                Ok(_) => {}
                Err(Errno::EINTR) => {
                    py.check_signals()?;
                    continue;
                }
                Err(e) => return Err(os_error(e)),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if alive_ended {
            // Every process of the tree that could ask for a child has exited.
            return Ok(());
        }
        report_exits(&mut children);
        if listener_ready {
            if let Some(request) = accept(py, &listener, key, &mut children) {
                // In the new child: nothing of the server's stays open in it.
                drop((listener, alive, children));
                run_child(py, request);
            }
        }
    }
}

/// Reaps the children that have exited and sends their status.
fn report_exits(children: &mut Vec<Served>) {
    children.retain(|child| {
        let id = match &child.handle {
            Some(fd) => Id::PIDFd(fd.as_fd()),
            None => Id::Pid(child.pid),
        };
        let code = match waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
            Ok(WaitStatus::Exited(_, code)) => code,
            Ok(WaitStatus::Signaled(_, signal, _)) => -(signal as i32),
            Ok(_) | Err(Errno::EINTR) => return true,
            // Reaped behind the server's back: the status is lost, and the client learns so.
            Err(_) => {
                return false;
            }
        };
        // A client that went away does not need it.
        let _ = protocol::send_exit_status(child.conn.as_fd(), code);
        false
    });
}

/// Whether this process has one thread: `clone(CLONE_PARENT)` is only used then.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// Takes one connection. Returns the request in the child forked for it; in the server, the
/// child is recorded (or the peer dropped) and `None` returned.
fn accept(
    py: Python<'_>,
    listener: &OwnedFd,
    key: &Key,
    children: &mut Vec<Served>,
) -> Option<Request> {
    let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
            // Out of descriptors: let some children end before accepting again.
            py.detach(|| std::thread::sleep(REAP_INTERVAL));
            return None;
        }
        Err(_) => return None,
    };
    // Only this user's processes; within it, the key decides.
    let peer = peer_credentials(conn.as_fd()).ok()?;
    if peer.uid() != getuid().as_raw() {
        return None;
    }
    let request = py
        .detach(|| protocol::serve_handshake(conn.as_fd(), key))
        .ok()?;
    let parentage = if peer.pid() == getppid().as_raw() && single_threaded() {
        Parentage::Parents
    } else {
        Parentage::Own
    };
    match fork_as(py, parentage) {
        Err(e) => {
            let _ = protocol::send_failed(conn.as_fd(), e);
            None
        }
        Ok(Forked::Child) => {
            drop(conn);
            Some(request)
        }
        Ok(Forked::Parent(pid)) if parentage == Parentage::Parents => {
            let _ = protocol::send_sibling(conn.as_fd(), pid.as_raw());
            None
        }
        Ok(Forked::Parent(pid)) => {
            // Opened before the child can be reaped, so it names exactly this child.
            let handle = if pidfd::supported() {
                pidfd::open(pid).ok()
            } else {
                None
            };
            let _ =
                protocol::send_child(conn.as_fd(), pid.as_raw(), handle.as_ref().map(AsFd::as_fd));
            children.push(Served { pid, handle, conn });
            None
        }
    }
}

/// Runs a forked child: the descriptors the request brought become the child's, and
/// `procstart.forkserver.child_main` reads the payload and runs the process. Never returns.
fn run_child(py: Python<'_>, request: Request) -> ! {
    let mut fds = request.fds.into_iter().map(IntoRawFd::into_raw_fd);
    let payload = fds.next().unwrap_or(-1);
    let parent_sentinel = fds.next().unwrap_or(-1);
    if request.flags & FLAG_EXIT_PIPE != 0 {
        // Held open until the child exits: the parent's sentinel without pidfd.
        fds.next();
    }
    let inherited: Vec<i32> = fds.collect();
    let outcome = py_forkserver(py).and_then(|module| {
        module.call_method1(
            intern!(py, "child_main"),
            (payload, parent_sentinel, inherited),
        )
    });
    if let Err(err) = outcome {
        err.print(py);
    }
    // SAFETY: _exit ends the child without returning into the server's loop.
    unsafe { libc::_exit(1) }
}
