//! Helpers for the `sys` tests, which start real processes.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag};
use nix::unistd::{pipe2, Pid};

use crate::sys::{spawn, wait};

/// Held exclusively by every test that starts a process, as nix's test suite does its `FORK`
/// mutex: no two of them create children at once, so no descriptor of one test leaks into
/// another's child and no `waitid` of one test can see another's child. Held shared by tests
/// that check that every copy of a descriptor is closed (the fork server's probes): a child
/// created meanwhile holds copies of all of them, if only until it execs.
static FORK: RwLock<()> = RwLock::new(());

/// For a test that starts processes.
pub fn fork_lock() -> RwLockWriteGuard<'static, ()> {
    // A test that failed while holding it poisons it; the next ones still run.
    FORK.write().unwrap_or_else(|e| e.into_inner())
}

/// For a test that needs no process to be started while it runs. Take it once per test: a
/// thread that takes a shared lock twice may deadlock against a waiting writer.
pub fn no_new_processes() -> RwLockReadGuard<'static, ()> {
    FORK.read().unwrap_or_else(|e| e.into_inner())
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    pipe2(OFlag::O_CLOEXEC).expect("pipe2")
}

/// Starts `/bin/sh -c script` through `spawn::spawn`.
pub fn sh(script: &str, child_fds: &[BorrowedFd<'_>], new_group: bool, blocked: &[Signal]) -> Pid {
    let argv = [
        c"sh".to_owned(),
        c"-c".to_owned(),
        CString::new(script).unwrap(),
    ];
    let envp = [c"PATH=/usr/bin:/bin".to_owned()];
    spawn::spawn(c"/bin/sh", &argv, &envp, child_fds, new_group, blocked).expect("spawn")
}

/// Blocks until `pid` ends and returns its exit code (minus the signal that killed it).
pub fn wait_code(pid: Pid) -> i32 {
    wait::waitid(Id::Pid(pid), WaitPidFlag::WEXITED)
        .expect("waitid")
        .expect("an ended child")
        .0
}

/// Everything readable from `fd` until every write end is closed.
pub fn read_to_string(fd: OwnedFd) -> String {
    let mut out = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut out)
        .expect("read");
    out
}

/// Starts a child that waits until `hold` (the write end of a pipe whose read end it gets)
/// is closed; returns its PID and the write end.
pub fn sleeper(new_group: bool) -> (Pid, OwnedFd) {
    let (r, w) = pipe();
    let pid = sh("read x <&3; exit 0", &[r.as_fd()], new_group, &[]);
    (pid, w)
}

/// Whether `fd` (a pidfd, a pipe's read end) becomes readable within `seconds`.
pub fn readable_within(fd: BorrowedFd<'_>, seconds: f64) -> bool {
    let deadline = crate::sys::poll::deadline_after(seconds);
    loop {
        match crate::sys::poll::wait_readable(std::os::fd::AsRawFd::as_raw_fd(&fd), deadline)
            .unwrap()
        {
            crate::sys::poll::Readiness::Ready => return true,
            crate::sys::poll::Readiness::TimedOut => return false,
            crate::sys::poll::Readiness::Interrupted => {}
        }
    }
}
