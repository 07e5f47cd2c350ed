//! The fork server's loop (CPython's `forkserver.main`), run in the server interpreter once
//! `procstart/forkserver.py` has preloaded the modules: wait with the GIL released for a
//! connection, the alive pipe's end, or a child's exit; authenticate each connection; fork a
//! child per request with the `PyOS_*Fork*` bracket; report pids and exit statuses.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{accept4, SockFlag};
use nix::sys::time::TimeSpec;
use nix::sys::wait::WaitPidFlag;
use nix::unistd::{getuid, Pid};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::protocol::{self, Handshake, Key, Progress, Request, FLAG_EXIT_PIPE, FLAG_NEW_GROUP};
use super::tree::Published;
use crate::errors::os_error;
use crate::hooks::hooks;
use crate::sys::fork::{fork, Forked};
use crate::sys::pidfd;
use crate::sys::proctree::{join_group_of, lead_new_group};
use crate::sys::socket::peer_credentials;
use crate::sys::wait;

/// A child the server made as its own, until it has reaped it and sent the status.
struct Served {
    pid: Pid,
    /// The process that asked for it: its parent in the user's tree.
    requester: i32,
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
    let served = serve(py, listener, alive, &key, &address);
    super::remove_socket(&address);
    served
}

/// A connection whose peer has not yet proved that it holds the key.
struct Authenticating {
    conn: OwnedFd,
    handshake: Handshake,
    /// The peer's PID, from its credentials: who asks for the child.
    peer: i32,
}

/// More connections than this authenticating at once are refused at `accept`.
const MAX_AUTHENTICATING: usize = 128;

fn serve(
    py: Python<'_>,
    listener: OwnedFd,
    alive: OwnedFd,
    key: &Key,
    address: &Path,
) -> PyResult<()> {
    // Readable does not promise a connection (the client may have given up): never block.
    fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(os_error)?;
    let mut authenticating: Vec<Authenticating> = Vec::new();
    let mut children: Vec<Served> = Vec::new();
    let mut list = Published::create(address);
    // procstart/forkserver.py blocks SIGTERM in the server: it is let in only while waiting
    // here, so that it interrupts the wait (and ends the loop, which removes the socket) but
    // never lands between a fork and the child's own signal set-up.
    let mut waiting_mask = SigSet::thread_get_mask().map_err(os_error)?;
    waiting_mask.remove(Signal::SIGTERM);
    loop {
        let now = Instant::now();
        // A peer that stays silent (or trickles) past its deadline is dropped.
        authenticating.retain(|a| a.handshake.deadline > now);
        let mut wake = authenticating
            .iter()
            .map(|a| a.handshake.deadline - now)
            .min();
        if children.iter().any(|c| c.handle.is_none()) {
            wake = Some(wake.map_or(REAP_INTERVAL, |w| w.min(REAP_INTERVAL)));
        }
        let timeout = wake.map(TimeSpec::from_duration);
        let ready: Vec<bool> = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(alive.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                authenticating
                    .iter()
                    .map(|a| PollFd::new(a.conn.as_fd(), PollFlags::POLLIN)),
            );
            fds.extend(
                children
                    .iter()
                    .filter_map(|c| c.handle.as_ref())
                    .map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN)),
            );
            match py.detach(|| ppoll(&mut fds, timeout, Some(waiting_mask))) {
                Ok(_) => {}
                Err(Errno::EINTR) => {
                    py.check_signals()?;
                    continue;
                }
                Err(e) => return Err(os_error(e)),
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready[1] {
            // Every process of the tree that could ask for a child has exited.
            return Ok(());
        }
        if report_exits(&mut children) {
            publish(&mut list, &children, None);
        }
        let mut index = 0;
        let mut conn_ready = ready[2..].iter();
        while index < authenticating.len() {
            if !conn_ready.next().copied().unwrap_or(false) {
                index += 1;
                continue;
            }
            let entry = &mut authenticating[index];
            match entry.handshake.advance(entry.conn.as_fd(), key) {
                Ok(Progress::Pending) => index += 1,
                // Failed a challenge, sent garbage or hung up: dropped (a wrong digest was told
                // `#FAILURE#`, as CPython tells it; nothing else is said why).
                Err(_) => drop(authenticating.remove(index)),
                Ok(Progress::Done(request)) => {
                    let Authenticating { conn, peer, .. } = authenticating.remove(index);
                    publish(&mut list, &children, Some(peer));
                    let forked = fork_for(py, conn, request, peer, &mut children);
                    if let Some(request) = forked {
                        // In the new child: nothing of the server's stays open in it.
                        drop((listener, alive, authenticating, children, list));
                        run_child(py, request);
                    }
                    publish(&mut list, &children, None);
                }
            }
        }
        if ready[0] {
            accept(py, &listener, &mut authenticating);
        }
    }
}

/// The server's list of who asked for each child (`tree.rs`); `forking`: a requester whose
/// child is being forked.
fn publish(list: &mut Option<Published>, children: &[Served], forking: Option<i32>) {
    if let Some(list) = list {
        let forking = forking.map(|requester| (0, requester));
        let served = children.iter().map(|c| (c.pid.as_raw(), c.requester));
        list.publish(served.chain(forking));
    }
}

/// Reaps the children that have exited and sends their status; whether any had.
fn report_exits(children: &mut Vec<Served>) -> bool {
    let before = children.len();
    children.retain(|child| {
        let id = pidfd::wait_id(child.pid, child.handle.as_ref());
        let (code, usage) = match wait::waitid(id, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG) {
            Ok(Some(ended)) => ended,
            Ok(None) => return true,
            Err(Errno::EINTR) => return true,
            // Reaped behind the server's back: the status is lost, and the client learns so.
            Err(_) => {
                return false;
            }
        };
        // A client that went away does not need it.
        let _ = protocol::send_exit_status(child.conn.as_fd(), code, usage);
        false
    });
    children.len() != before
}

/// Takes a new connection from this user and sends it the server's challenge.
fn accept(py: Python<'_>, listener: &OwnedFd, authenticating: &mut Vec<Authenticating>) {
    let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
            // Out of descriptors: let some children end before accepting again.
            py.detach(|| std::thread::sleep(REAP_INTERVAL));
            return;
        }
        Err(_) => return,
    };
    // Only this user's processes; within it, the key decides.
    let Ok(peer) = peer_credentials(conn.as_fd()) else {
        return;
    };
    if peer.uid() != getuid().as_raw() || authenticating.len() >= MAX_AUTHENTICATING {
        return;
    }
    if let Ok(handshake) = Handshake::start(conn.as_fd()) {
        authenticating.push(Authenticating {
            conn,
            handshake,
            peer: peer.pid(),
        });
    }
}

/// Forks the child a peer asked for. Returns the request in the child; in the server, the
/// child is recorded (or the failure reported) and `None` returned.
fn fork_for(
    py: Python<'_>,
    conn: OwnedFd,
    request: Request,
    requester: i32,
    children: &mut Vec<Served>,
) -> Option<Request> {
    // SAFETY: the GIL is held; the server's loop runs on its main thread and procstart starts
    // no other thread in it, so no procstart mutex is held elsewhere (a preloaded module that
    // starts threads is as unsafe here as in CPython's server, which forks the same way).
    match unsafe { fork(py) } {
        Err(e) => {
            let _ = protocol::send_failed(conn.as_fd(), e);
            None
        }
        Ok(Forked::Child) => {
            drop(conn);
            place_in_group(Pid::from_raw(0), &request, requester);
            Some(request)
        }
        Ok(Forked::Parent(pid)) => {
            place_in_group(pid, &request, requester);
            // Opened before the child can be reaped, so it names exactly this child.
            let handle = if pidfd::supported() {
                match pidfd::open(pid) {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        // No handle for the client (out of descriptors): the child must not
                        // run unseen. It has not read its payload yet.
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = py.detach(|| nix::sys::wait::waitpid(pid, None));
                        let _ = protocol::send_failed(conn.as_fd(), e);
                        return None;
                    }
                }
            } else {
                None
            };
            let _ =
                protocol::send_child(conn.as_fd(), pid.as_raw(), handle.as_ref().map(AsFd::as_fd));
            children.push(Served {
                pid,
                requester,
                handle,
                conn,
            });
            None
        }
    }
}

/// The process group a new child starts in (`pid`, 0 for the caller): its own with
/// `new_process_group=True`, else its requester's, where a child of the requester's own would
/// be (rather than the server's, the group of whoever started the server). Called by both
/// the child and the server, so that it holds whichever runs first.
fn place_in_group(pid: Pid, request: &Request, requester: i32) {
    let _ = if request.flags & FLAG_NEW_GROUP != 0 {
        lead_new_group(pid)
    } else {
        join_group_of(pid, Pid::from_raw(requester))
    };
}

/// Runs a forked child: the descriptors the request brought become the child's, and
/// `procstart.forkserver.child_main` reads the payload and runs the process. Never returns.
fn run_child(py: Python<'_>, request: Request) -> ! {
    let mut fds: Vec<i32> = request
        .fds
        .into_iter()
        .map(IntoRawFd::into_raw_fd)
        .collect();
    if request.flags & FLAG_EXIT_PIPE != 0 {
        // Held open until the child exits: the parent's sentinel without pidfd.
        fds.pop();
    }
    let mut fds = fds.into_iter();
    let payload = fds.next().unwrap_or(-1);
    let parent_sentinel = fds.next().unwrap_or(-1);
    let inherited: Vec<i32> = fds.collect();
    let outcome = hooks(py).and_then(|hooks| {
        hooks
            .forkserver_child_main
            .call1(py, (payload, parent_sentinel, inherited))
    });
    if let Err(err) = outcome {
        err.print(py);
    }
    // SAFETY: _exit ends the child without returning into the server's loop.
    unsafe { libc::_exit(1) }
}
