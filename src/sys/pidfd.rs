//! Process file descriptors (Linux >= 5.3): a handle on one process that cannot be confused
//! with a later process reusing the same PID, pollable for exit.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::unistd::Pid;

/// `PROCSTART_DISABLE_PIDFD=1` forces the pipe fallback used on kernels without pidfd, so
/// that path is tested on machines that have pidfd.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var_os("PROCSTART_DISABLE_PIDFD").is_some_and(|v| !v.is_empty() && v != "0") {
            return false;
        }
        open(Pid::this()).is_ok()
    })
}

/// `pidfd_open(2)`; the descriptor is always close-on-exec.
pub fn open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; no memory is
    // shared with the kernel.
    let res = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(res)?;
    // SAFETY: on success the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`: signals exactly the process the descriptor refers to.
pub fn send_signal(fd: BorrowedFd<'_>, signal: i32) -> nix::Result<()> {
    // SAFETY: the info pointer may be NULL (the kernel then fills it as kill(2) would); the fd is
    // borrowed, so it stays open for the duration of the call.
    let res = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(res).map(drop)
}
