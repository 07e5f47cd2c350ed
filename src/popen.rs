//! The handle on one started child, shared by every start method: its sentinel, waiting,
//! polling, signalling and reaping. Mirrors the protocol of CPython's `popen_fork.Popen`
//! (`pid`, `sentinel`, `returncode`, `poll`, `wait`, `terminate`, `kill`, `close`).
//!
//! The sentinel is a pidfd where the kernel has one: it becomes readable when the child
//! exits, whoever else holds the child's inherited descriptors (CPython's pipe sentinel stays
//! unreadable while a forked grandchild lives), and signals sent through it cannot reach a
//! process that reused the PID.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{Id, WaitPidFlag};
use nix::unistd::{pipe2, Pid};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::os_error;
use crate::link::{AliveWriteEnd, ChildLink};
use crate::start_method::StartMethod;
use crate::sys::pidfd;
use crate::sys::poll::{deadline_after, reader_gone, wait_readable, Readiness};
use crate::sys::wait::{self, Usage};

/// Exit code reported when the child's status was collected by someone else (a `waitpid(-1)`
/// elsewhere, or `SIGCHLD` set to `SIG_IGN`): the child is known to be gone, its status is
/// not. CPython's forkserver uses the same value when it loses a status.
const LOST_STATUS: i32 = 255;

/// How long, once a fork-server child has ended, to wait for the server's report of its status
/// before answering "not known yet" (the report normally follows within microseconds).
const STATUS_GRACE: Duration = Duration::from_secs(1);

/// How long, when the server died, to wait for the init process (or a subreaper) to reap an
/// orphaned child, after which the kernel has its status for us.
const ORPHAN_REAP_GRACE: Duration = Duration::from_millis(200);

/// How a child ended, once known.
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    /// `multiprocessing`'s exit code: the exit code, or minus the signal that killed it.
    pub code: i32,
    /// `None` where it cannot be known: the status was lost, or read from the kernel after
    /// someone else reaped the child.
    pub usage: Option<Usage>,
    /// The status was collected by someone else: `code` is `LOST_STATUS`, not the child's.
    pub lost: bool,
}

impl Ending {
    fn reaped((code, usage): (i32, Usage)) -> Self {
        Ending {
            code,
            usage: Some(usage),
            lost: false,
        }
    }

    const LOST: Ending = Ending {
        code: LOST_STATUS,
        usage: None,
        lost: true,
    };
}

/// How a fork-server child whose server died (which made it an orphan) ended: reaped here if
/// it became this process's child (this process is a subreaper), else from the kernel once
/// whoever adopted it reaped it (Linux >= 6.15); lost if neither.
fn orphan_ending(fd: BorrowedFd<'_>) -> Ending {
    if let Ok(Some(ended)) =
        wait::waitid(Id::PIDFd(fd), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG)
    {
        return Ending::reaped(ended);
    }
    match pidfd::exit_status(fd) {
        Some(status) => Ending {
            code: exit_code_of(status),
            usage: None,
            lost: false,
        },
        None => Ending::LOST,
    }
}

/// `multiprocessing`'s exit code for a wait status: the exit code, or minus the signal.
fn exit_code_of(status: i32) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

#[pyclass(frozen, module = "procstart._procstart")]
pub struct Popen {
    pid: Pid,
    method: StartMethod,
    sentinel_fd: RawFd,
    /// `None` after `close()`. Shared so a wait in progress keeps the fd open.
    sentinel: Mutex<Option<Arc<OwnedFd>>>,
    is_pidfd: bool,
    /// Without pidfd: the write end of the pipe whose read end is the child's parent
    /// sentinel; the child sees EOF when this process closes it or dies.
    parent_alive_w: Mutex<Option<AliveWriteEnd>>,
    /// For a child of the fork server that is not this process's own: the connection on which
    /// the server sends its exit status once it has reaped it.
    server_status: Option<OwnedFd>,
    ending: Mutex<Option<Ending>>,
    /// The last signal sent through this handle, and by which method (`terminate` ...): how
    /// `exit_reason` tells a kill we asked for from one we did not.
    signalled: Mutex<Option<(Signal, &'static str)>>,
    /// The child leads a process group of its own (`new_process_group=True`).
    group: Option<Pid>,
    /// What a spawned or fork-server child's payload references, until the child has it.
    payload_refs: Mutex<Option<PayloadRefs>>,
}

/// A payload's target and arguments, kept alive in the parent until the child has loaded them:
/// a `Queue` passed inline would otherwise unlink its semaphores with its last reference while
/// the child is still unpickling it (CPython: `FileNotFoundError` in `SemLock._rebuild`).
struct PayloadRefs {
    refs: Py<PyAny>,
    /// The write end of the payload pipe (`launch/payload.rs`): it reports `POLLERR` once the
    /// child has closed the read end, which it does when its payload is loaded, or by dying.
    loaded: OwnedFd,
}

impl Popen {
    pub fn new(
        pid: Pid,
        method: StartMethod,
        sentinel: OwnedFd,
        is_pidfd: bool,
        parent_alive_w: Option<AliveWriteEnd>,
    ) -> Self {
        Popen {
            pid,
            method,
            sentinel_fd: sentinel.as_raw_fd(),
            sentinel: Mutex::new(Some(Arc::new(sentinel))),
            is_pidfd,
            parent_alive_w: Mutex::new(parent_alive_w),
            server_status: None,
            payload_refs: Mutex::new(None),
            ending: Mutex::new(None),
            signalled: Mutex::new(None),
            group: None,
        }
    }

    /// A child the fork server made as its own (for a process that did not start the server):
    /// the server reaps it and reports the status on `status`.
    pub fn served(
        pid: Pid,
        sentinel: OwnedFd,
        is_pidfd: bool,
        parent_alive_w: Option<AliveWriteEnd>,
        status: OwnedFd,
    ) -> Self {
        let mut popen = Popen::new(
            pid,
            StartMethod::ForkServer,
            sentinel,
            is_pidfd,
            parent_alive_w,
        );
        popen.server_status = Some(status);
        popen
    }

    /// A child that ended and was reaped by someone else before we had a handle on it: its
    /// status is lost, its sentinel (a pipe with no writer) is ready at once.
    pub fn lost(pid: Pid, method: StartMethod) -> nix::Result<Self> {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        drop(w);
        let popen = Popen::new(pid, method, r, false, None);
        *popen.ending.lock().unwrap() = Some(Ending::LOST);
        Ok(popen)
    }

    /// For a child asked to lead a process group of its own (`new_process_group=True`), which
    /// tree signals then also reach: recorded unless the child is known to be in another group
    /// (a fork hook moved it to a session of its own before it could make one).
    pub fn leading_group(mut self) -> Self {
        if nix::unistd::getpgid(Some(self.pid)).map_or(true, |group| group == self.pid) {
            self.group = Some(self.pid);
        }
        self
    }

    pub fn pid_raw(&self) -> i32 {
        self.pid.as_raw()
    }

    pub fn sentinel_raw(&self) -> RawFd {
        self.sentinel_fd
    }

    pub fn returncode(&self) -> Option<i32> {
        self.ending().map(|ending| ending.code)
    }

    pub fn ending(&self) -> Option<Ending> {
        *self.ending.lock().unwrap()
    }

    /// The signal last sent through this handle and the method that sent it.
    pub fn signalled(&self) -> Option<(Signal, &'static str)> {
        *self.signalled.lock().unwrap()
    }

    fn sentinel_handle(&self) -> Option<Arc<OwnedFd>> {
        self.sentinel.lock().unwrap().clone()
    }

    fn wait_id<'fd>(&self, sentinel: &'fd Option<Arc<OwnedFd>>) -> Id<'fd> {
        pidfd::wait_id(self.pid, sentinel.as_deref().filter(|_| self.is_pidfd))
    }

    /// Whether the child has ended, without collecting its status (`WNOWAIT`); blocks until
    /// it ends if asked. Takes no lock, so it may run with the GIL released.
    fn has_ended(&self, sentinel: &Option<Arc<OwnedFd>>, blocking: bool) -> nix::Result<bool> {
        if self.server_status.is_some() {
            // The child has ended when its sentinel says so (not when the server's connection
            // closes: a dead server does not end its children).
            let deadline = (!blocking).then(Instant::now);
            let fd = sentinel.as_ref().map_or(-1, |s| s.as_raw_fd());
            return match wait_readable(fd, deadline)? {
                Readiness::Ready => Ok(true),
                Readiness::TimedOut => Ok(false),
                Readiness::Interrupted => Err(Errno::EINTR),
            };
        }
        let nohang = if blocking {
            WaitPidFlag::empty()
        } else {
            WaitPidFlag::WNOHANG
        };
        match nix::sys::wait::waitid(
            self.wait_id(sentinel),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | nohang,
        ) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => Ok(false),
            // ECHILD: already collected, by another thread here or by someone else.
            Ok(_) | Err(Errno::ECHILD) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Collects the status of an ended child, exactly once however many threads ask (a
    /// `join()` in one, `is_alive()` or another `start()` in others): under the
    /// `ending` lock, with the GIL held, never blocking.
    fn collect(&self, sentinel: &Option<Arc<OwnedFd>>) -> nix::Result<Option<i32>> {
        let mut ending = self.ending.lock().unwrap();
        if let Some(ended) = *ending {
            return Ok(Some(ended.code));
        }
        let ended = if let Some(status) = &self.server_status {
            match crate::forkserver::protocol::read_exit_status(status.as_fd()) {
                Ok(ended) => Ending::reaped(ended),
                // Not sent yet: the server has not reaped the child yet (or is stopped).
                Err(Errno::EAGAIN) => return Ok(None),
                // The server died: the kernel keeps the status for the pidfd once whoever
                // inherited the child has reaped it.
                Err(_) => match (self.is_pidfd, sentinel) {
                    (true, Some(fd)) => orphan_ending(fd.as_fd()),
                    _ => Ending::LOST,
                },
            }
        } else {
            match wait::waitid(
                self.wait_id(sentinel),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(Some(ended)) => Ending::reaped(ended),
                Ok(None) => return Ok(None),
                Err(Errno::ECHILD) => Ending::LOST,
                Err(e) => return Err(e),
            }
        };
        *ending = Some(ended);
        Ok(Some(ended.code))
    }

    /// For a child the server reaps, once it has ended: waits (GIL released, for at most
    /// `STATUS_GRACE`) for the server's report, or, if the server is gone, for whoever
    /// inherited the child to reap it so that the kernel has its status.
    fn await_status(&self, py: Python<'_>, sentinel: &Option<Arc<OwnedFd>>) -> PyResult<()> {
        let Some(status) = &self.server_status else {
            return Ok(());
        };
        let deadline = Instant::now() + STATUS_GRACE;
        loop {
            match py.detach(|| wait_readable(status.as_raw_fd(), Some(deadline))) {
                Ok(Readiness::Interrupted) => py.check_signals()?,
                Ok(Readiness::TimedOut) | Err(_) => return Ok(()),
                Ok(Readiness::Ready) => break,
            }
        }
        let mut byte = [0; 1];
        let server_gone = matches!(
            nix::sys::socket::recv(
                status.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Ok(0) | Err(Errno::ECONNRESET)
        );
        if let (true, true, Some(fd)) = (server_gone, self.is_pidfd, sentinel) {
            let reaped_by = Instant::now() + ORPHAN_REAP_GRACE;
            while pidfd::exit_status(fd.as_fd()).is_none()
                && !pidfd::is_own_child(fd.as_fd())
                && Instant::now() < reaped_by
            {
                py.detach(|| std::thread::sleep(Duration::from_millis(2)));
                py.check_signals()?;
            }
        }
        Ok(())
    }

    /// Holds `refs` until the child closes its end of the payload pipe, whose write end is
    /// `loaded`.
    pub fn holding_payload(self, refs: Py<PyAny>, loaded: OwnedFd) -> Self {
        *self.payload_refs.lock().unwrap() = Some(PayloadRefs { refs, loaded });
        self
    }

    /// Lets go of the payload's references once the child has loaded them (or died): checked
    /// whenever the child's state is asked for, as CPython's `_cleanup` does at each start, and
    /// done when its exit is collected (`join()` returns with them released, as CPython's).
    fn release_loaded_payload(&self, ended: bool) {
        let mut slot = self.payload_refs.lock().unwrap();
        // An error polling counts as loaded: the references then go as CPython's would.
        let loaded = slot
            .as_ref()
            .is_some_and(|held| ended || reader_gone(held.loaded.as_fd()).unwrap_or(true));
        let released = if loaded { slot.take() } else { None };
        drop(slot);
        // Dropped without the lock held: the last reference may run finalizers.
        drop(released.map(|held| held.refs));
    }

    /// The exit status, collected if the child has ended; a blocking call releases the GIL
    /// while it waits and lets Ctrl-C through.
    pub fn poll(&self, py: Python<'_>, blocking: bool) -> PyResult<Option<i32>> {
        self.release_loaded_payload(false);
        if let Some(code) = self.returncode() {
            return Ok(Some(code));
        }
        let sentinel = self.sentinel_handle();
        loop {
            let ended = if blocking {
                py.detach(|| self.has_ended(&sentinel, true))
            } else {
                self.has_ended(&sentinel, false)
            };
            match ended {
                Ok(false) if !blocking => return Ok(None),
                Ok(false) => {}
                Ok(true) => {
                    if self.server_status.is_some() {
                        self.await_status(py, &sentinel)?;
                    }
                    match self.collect(&sentinel).map_err(os_error)? {
                        Some(code) => {
                            self.release_loaded_payload(true);
                            return Ok(Some(code));
                        }
                        None if !blocking => return Ok(None),
                        None => {}
                    }
                }
                Err(Errno::EINTR) => py.check_signals()?,
                Err(e) => return Err(os_error(e)),
            }
        }
    }

    /// `join()`'s wait: `None` timeout waits for the exit, otherwise at most `timeout`
    /// seconds; returns the exit code or `None` on timeout.
    pub fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<i32>> {
        self.release_loaded_payload(false);
        if let Some(code) = self.returncode() {
            return Ok(Some(code));
        }
        let Some(timeout) = timeout else {
            return self.poll(py, true);
        };
        let Some(sentinel) = self.sentinel_handle() else {
            return Ok(self.returncode());
        };
        if !wait_fd_readable(py, sentinel.as_raw_fd(), timeout)? {
            return Ok(None);
        }
        if self.is_pidfd && self.server_status.is_none() {
            // A readable pidfd means the child has ended: collecting cannot block.
            return self.poll(py, true);
        }
        // A pipe sentinel is also readable when the child merely closed its end, and a server's
        // report can lag the exit: poll without blocking until the deadline.
        let deadline = deadline_after(timeout);
        loop {
            if let Some(code) = self.poll(py, false)? {
                return Ok(Some(code));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(5)));
            py.check_signals()?;
        }
    }

    /// Sends `signal` to the child (not once it is known to have ended: its PID may be
    /// reused); `by` names the method asking, for `exit_reason`.
    pub fn send_signal(&self, py: Python<'_>, signal: Signal, by: &'static str) -> PyResult<()> {
        if self.returncode().is_some() {
            return Ok(());
        }
        *self.signalled.lock().unwrap() = Some((signal, by));
        let sent = match (self.is_pidfd, self.sentinel_handle()) {
            (true, Some(fd)) => pidfd::send_signal(fd.as_fd(), signal as i32),
            _ => nix::sys::signal::kill(self.pid, signal),
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            // As CPython: an error is only worth raising if the child is still running.
            Err(e) => match self.wait(py, Some(0.1))? {
                Some(_) => Ok(()),
                None => Err(os_error(e)),
            },
        }
    }

    /// Sends `signal` to the child and all its descendants (and its process group, if it leads
    /// one). Once the child has been reaped only the group is left to signal: its PID may name
    /// a stranger now, and its children have been adopted elsewhere.
    pub fn send_signal_tree(
        &self,
        py: Python<'_>,
        signal: Signal,
        by: &'static str,
    ) -> PyResult<()> {
        let sentinel = self.sentinel_handle();
        if self.returncode().is_some() || sentinel.is_none() {
            // The group outlives its reaped leader while it has members, and its number cannot
            // be reused meanwhile: a process with that PID means it is free and reused.
            if let Some(group) = self
                .group
                .filter(|g| !Path::new(&format!("/proc/{g}")).exists())
            {
                let _ = nix::sys::signal::killpg(group, signal);
            }
            return Ok(());
        }
        *self.signalled.lock().unwrap() = Some((signal, by));
        let handle = sentinel
            .as_deref()
            .filter(|_| self.is_pidfd)
            .map(AsFd::as_fd);
        // Read now, with the GIL held: the walk runs without it (see `forkserver::client`).
        let server = crate::forkserver::client::current_address();
        let adopted = || {
            server
                .as_ref()
                .and_then(|(address, pid)| crate::forkserver::tree::read(address, *pid))
        };
        py.detach(|| {
            crate::sys::proctree::signal_tree(self.pid, handle, self.group, signal, &adopted)
        });
        Ok(())
    }

    /// Releases the sentinel; only for a child whose status is collected, so that reaping
    /// and signalling never fall back to the bare PID.
    pub fn close(&self) -> PyResult<()> {
        if self.returncode().is_none() {
            return Err(PyValueError::new_err(STILL_RUNNING));
        }
        let sentinel = self.sentinel.lock().unwrap().take();
        let parent_alive_w = self.parent_alive_w.lock().unwrap().take();
        drop((sentinel, parent_alive_w));
        Ok(())
    }
}

/// Waits with the GIL released until `fd` is readable or `timeout` seconds pass; `true` when
/// readable. Negative timeouts poll once, as `multiprocessing.connection.wait` does.
pub fn wait_fd_readable(py: Python<'_>, fd: RawFd, timeout: f64) -> PyResult<bool> {
    if timeout.is_nan() {
        return Err(PyValueError::new_err("cannot convert float NaN to integer"));
    }
    let deadline = deadline_after(timeout);
    loop {
        match py.detach(|| wait_readable(fd, deadline)) {
            Ok(Readiness::Ready) => return Ok(true),
            Ok(Readiness::TimedOut) => return Ok(false),
            Ok(Readiness::Interrupted) => py.check_signals()?,
            Err(e) => return Err(os_error(e)),
        }
    }
}

/// `parent_process().is_alive()`/`join()` in a child: waits (GIL released) until the parent
/// sentinel `fd` is readable or `timeout` seconds pass; `True` when readable.
#[pyfunction]
#[pyo3(signature = (fd, timeout=None))]
pub fn wait_sentinel(py: Python<'_>, fd: i32, timeout: Option<f64>) -> PyResult<bool> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("invalid sentinel {fd}")));
    }
    wait_fd_readable(py, fd, timeout.unwrap_or(f64::INFINITY))
}

/// `Process.close()`'s and `Popen.close()`'s refusal, CPython's text.
pub const STILL_RUNNING: &str = "Cannot close a process while it is still running. \
                                 You should first call join() or terminate().";

impl Popen {
    /// In the parent, for a child the fork server made as its own (the child's ends of
    /// `link` are closed here): `pidfd` is the server's
    /// pidfd on it, opened before the server could reap it, so it cannot name a stranger.
    pub fn served_from_link(
        link: ChildLink,
        pid: Pid,
        pidfd: Option<OwnedFd>,
        status: OwnedFd,
    ) -> nix::Result<Popen> {
        let (exit_r, parent_alive_w) = link.into_parent_ends();
        match (exit_r, pidfd) {
            (Some(r), _) => Ok(Popen::served(pid, r, false, parent_alive_w, status)),
            (None, Some(fd)) => Ok(Popen::served(pid, fd, true, parent_alive_w, status)),
            // The server had no pidfd where this process has one.
            (None, None) => Err(Errno::EPROTO),
        }
    }

    /// In the parent once the child `pid` exists: the handle on it. The child's ends are
    /// closed here.
    pub fn from_link(
        link: ChildLink,
        py: Python<'_>,
        pid: Pid,
        method: StartMethod,
    ) -> PyResult<Popen> {
        let (exit_r, parent_alive_w) = link.into_parent_ends();
        if let Some(r) = exit_r {
            return Ok(Popen::new(pid, method, r, false, parent_alive_w));
        }
        match pidfd::open(pid) {
            Ok(fd) if pidfd::is_own_child(fd.as_fd()) => {
                Ok(Popen::new(pid, method, fd, true, parent_alive_w))
            }
            // Already reaped by someone else (SIGCHLD ignored, a waitpid(-1) in another
            // thread): the child ran and is gone, its status with it. The PID may already
            // name a stranger, so it is never signalled or waited on.
            Ok(_) | Err(Errno::ESRCH) => Popen::lost(pid, method).map_err(os_error),
            Err(e) => {
                // No handle on a child that is still ours (unreaped, so its PID is not
                // reused): stop and reap it rather than leave it running unseen.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                while let Err(Errno::EINTR) = py.detach(|| nix::sys::wait::waitpid(pid, None)) {}
                Err(os_error(e))
            }
        }
    }
}

impl Drop for Popen {
    fn drop(&mut self) {
        // Last chance to collect an exited child nobody joined; a running one is left alone.
        if self.returncode().is_none() {
            let sentinel = self.sentinel_handle();
            if let Ok(true) = self.has_ended(&sentinel, false) {
                let _ = self.collect(&sentinel);
            }
        }
    }
}

#[pymethods]
impl Popen {
    #[getter]
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    #[getter]
    fn sentinel(&self) -> RawFd {
        self.sentinel_fd
    }

    #[getter]
    fn method(&self) -> &'static str {
        self.method.name()
    }

    #[getter(returncode)]
    fn py_returncode(&self) -> Option<i32> {
        self.returncode()
    }

    #[pyo3(name = "poll", signature = (flag = libc::WNOHANG))]
    fn py_poll(&self, py: Python<'_>, flag: i32) -> PyResult<Option<i32>> {
        self.poll(py, flag & libc::WNOHANG == 0)
    }

    #[pyo3(name = "wait", signature = (timeout = None))]
    fn py_wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<i32>> {
        self.wait(py, timeout)
    }

    fn terminate(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(py, Signal::SIGTERM, "terminate")
    }

    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(py, Signal::SIGKILL, "kill")
    }

    fn interrupt(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(py, Signal::SIGINT, "interrupt")
    }

    #[pyo3(name = "close")]
    fn py_close(&self) -> PyResult<()> {
        self.close()
    }

    /// Fork children inherit every descriptor as is.
    fn duplicate_for_child(&self, fd: RawFd) -> RawFd {
        fd
    }

    fn __repr__(&self) -> String {
        format!(
            "<procstart Popen method={} pid={} returncode={:?}>",
            self.method.name(),
            self.pid,
            self.returncode()
        )
    }
}
