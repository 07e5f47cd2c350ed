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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::signal::Signal;

    use super::*;
    use crate::sys::testutil::{fork_lock, readable_within, sh, sleeper, wait_code};
    use crate::sys::wait;

    #[test]
    fn supported_on_this_kernel() {
        // The test machines run Linux >= 5.4; the fallback is exercised through
        // PROCSTART_DISABLE_PIDFD by the Python tests.
        if std::env::var_os("PROCSTART_DISABLE_PIDFD").is_none() {
            assert!(supported());
        }
    }

    #[test]
    fn open_is_close_on_exec() {
        let fd = open(Pid::this()).unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn open_of_no_process_is_esrch() {
        // Above the largest pid_max Linux allows (2^22).
        assert_eq!(open(Pid::from_raw(1 << 23)).map(drop), Err(Errno::ESRCH));
    }

    #[test]
    fn readable_exactly_when_the_child_has_exited() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        let fd = open(pid).unwrap();
        assert!(!readable_within(fd.as_fd(), 0.05), "readable while running");
        drop(hold);
        assert!(readable_within(fd.as_fd(), 10.0), "not readable after exit");
        // Readable before being reaped, and still after.
        assert_eq!(wait_code(pid), 0);
        assert!(readable_within(fd.as_fd(), 0.0));
    }

    #[test]
    fn own_child_and_not() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        let fd = open(pid).unwrap();
        assert!(is_own_child(fd.as_fd()), "running child");
        drop(hold);
        assert!(readable_within(fd.as_fd(), 10.0));
        assert!(is_own_child(fd.as_fd()), "exited, unreaped child");
        assert_eq!(wait_code(pid), 0);
        assert!(!is_own_child(fd.as_fd()), "reaped child");
        let me = open(Pid::this()).unwrap();
        assert!(!is_own_child(me.as_fd()), "this process");
    }

    #[test]
    fn send_signal_reaches_exactly_that_child() {
        let _fork = fork_lock();
        let (target, hold_target) = sleeper(false);
        let (bystander, hold_bystander) = sleeper(false);
        let target_fd = open(target).unwrap();
        let bystander_fd = open(bystander).unwrap();
        send_signal(target_fd.as_fd(), Signal::SIGTERM as i32).unwrap();
        assert_eq!(wait_code(target), -(Signal::SIGTERM as i32));
        // The bystander runs on.
        assert!(!readable_within(bystander_fd.as_fd(), 0.1));
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        assert_eq!(wait::waitid(Id::Pid(bystander), flags), Ok(None));
        drop(hold_bystander);
        assert_eq!(wait_code(bystander), 0);
        // Once the target is reaped, its pidfd names no process: never a PID's next owner.
        assert_eq!(
            send_signal(target_fd.as_fd(), Signal::SIGTERM as i32),
            Err(Errno::ESRCH)
        );
        drop(hold_target);
    }

    #[test]
    fn signal_zero_probes() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        let fd = open(pid).unwrap();
        assert_eq!(send_signal(fd.as_fd(), 0), Ok(()));
        drop(hold);
        assert_eq!(wait_code(pid), 0);
        assert_eq!(send_signal(fd.as_fd(), 0), Err(Errno::ESRCH));
    }

    #[test]
    fn wait_id_prefers_the_pidfd() {
        let fd = open(Pid::this()).unwrap();
        assert!(
            matches!(wait_id(Pid::this(), Some(&fd)), Id::PIDFd(f) if f.as_raw_fd() == fd.as_raw_fd())
        );
        assert!(matches!(wait_id(Pid::from_raw(42), None), Id::Pid(p) if p.as_raw() == 42));
    }

    /// The ioctl (PIDFD_GET_INFO, Linux >= 6.15): nothing while the child runs or is unreaped,
    /// its raw wait status once reaped. On older kernels it answers nothing at all.
    #[test]
    fn exit_status_after_reaping() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        let fd = open(pid).unwrap();
        assert_eq!(exit_status(fd.as_fd()), None, "running");
        drop(hold);
        assert_eq!(wait_code(pid), 0);
        let exited = exit_status(fd.as_fd());

        let pid = sh("exit 3", &[], false, &[]);
        let fd3 = open(pid).unwrap();
        assert_eq!(wait_code(pid), 3);
        let status3 = exit_status(fd3.as_fd());

        let (pid, hold) = sleeper(false);
        let killed_fd = open(pid).unwrap();
        send_signal(killed_fd.as_fd(), Signal::SIGKILL as i32).unwrap();
        assert_eq!(wait_code(pid), -(Signal::SIGKILL as i32));
        drop(hold);
        let killed = exit_status(killed_fd.as_fd());

        if kernel_at_least(6, 15) {
            assert_eq!(exited, Some(0));
            assert_eq!(status3, Some(3 << 8));
            assert_eq!(killed, Some(Signal::SIGKILL as i32));
        } else {
            assert_eq!((exited, status3, killed), (None, None, None));
        }
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = nix::sys::utsname::uname().unwrap();
        let release = release.release().to_string_lossy().into_owned();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
    }
}
