//! Process file descriptors (Linux >= 5.3): a handle on one process that cannot be confused
//! with a later process reusing the same PID, pollable for exit.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

/// `PROCSTART_DISABLE_PIDFD=1` forces the pipe fallback used on kernels without pidfd, so
/// that path is tested on machines that have pidfd.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var_os("PROCSTART_DISABLE_PIDFD").is_some_and(|v| !v.is_empty() && v != "0") {
            return false;
        }
        // waitid(P_PIDFD) came a release after pidfd_open (5.4 vs 5.3): both must work. On
        // our own pidfd, which is not our child, a working waitid answers ECHILD.
        open(Pid::this()).is_ok_and(|fd| {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
            waitid(Id::PIDFd(fd.as_fd()), flags) == Err(Errno::ECHILD)
        })
    })
}

/// Whether the process behind `fd` is a child of this process (running or not yet reaped).
/// A pidfd opened from a bare PID can name a stranger that reused the PID of a child that
/// someone else already reaped; `waitid` only answers for our own children.
pub fn is_own_child(fd: BorrowedFd<'_>) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::PIDFd(fd), flags).is_ok()
}

/// What `waitid` waits on for the child `pid`: its pidfd when there is one (it never names a
/// process that reused the PID), else the PID.
pub fn wait_id(pid: Pid, handle: Option<&OwnedFd>) -> Id<'_> {
    match handle {
        Some(fd) => Id::PIDFd(fd.as_fd()),
        None => Id::Pid(pid),
    }
}

/// `pidfd_open(2)`; the descriptor is always close-on-exec.
pub fn open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; no memory is
    // shared with the kernel.
    let res = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            libc::c_long::from(pid.as_raw()),
            libc::c_long::from(0u8),
        )
    };
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
            libc::c_long::from(fd.as_raw_fd()),
            libc::c_long::from(signal),
            std::ptr::null::<libc::siginfo_t>(),
            libc::c_long::from(0u8),
        )
    };
    Errno::result(res).map(drop)
}

/// `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` (Linux >= 6.15): the wait status of the process
/// behind `fd` once it has exited *and been reaped*, by whoever its parent was. `None` before
/// that, or on kernels without it.
pub fn exit_status(fd: BorrowedFd<'_>) -> Option<i32> {
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // struct pidfd_info, first version: 64 bytes; `exit_code` is the i32 at byte 60.
    const INFO_SIZE: u64 = 64;
    // _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)
    const PIDFD_GET_INFO: u64 = (3 << 30) | (INFO_SIZE << 16) | (0xFF << 8) | 11;
    let mut info = [0u64; 8];
    info[0] = PIDFD_INFO_EXIT;
    // SAFETY: the kernel reads the request mask from and writes at most INFO_SIZE bytes into
    // `info`, which is exactly that large and exclusively borrowed for the call.
    let res = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO as _, info.as_mut_ptr()) };
    if Errno::result(res).is_err() || info[0] & PIDFD_INFO_EXIT == 0 {
        return None;
    }
    Some((info[7] >> 32) as u32 as i32)
}
