//! `waitid(2)` that also returns the reaped child's resource usage: the raw system call takes
//! a fifth argument, a `struct rusage`, which glibc's wrapper (and nix's) leave out.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag};

/// What the kernel accounted to a child by the time it was reaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size, in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    pub user_us: u64,
    pub system_us: u64,
}

fn micros(tv: libc::timeval) -> u64 {
    let seconds = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    seconds * 1_000_000 + micros
}

/// `multiprocessing`'s exit code of an ended child (its exit code, or minus the signal that
/// killed it) with its usage; `None` when `WNOHANG` found nothing ended.
pub fn waitid(id: Id<'_>, flags: WaitPidFlag) -> nix::Result<Option<(i32, Usage)>> {
    let (idtype, idval): (libc::idtype_t, libc::id_t) = match id {
        Id::All => (libc::P_ALL, 0),
        Id::Pid(pid) => (libc::P_PID, pid.as_raw() as libc::id_t),
        Id::PGid(pid) => (libc::P_PGID, pid.as_raw() as libc::id_t),
        Id::PIDFd(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        _ => return Err(Errno::EINVAL),
    };
    // Zeroed: with WNOHANG and nothing to report the kernel leaves si_pid as it finds it.
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let mut usage = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: both pointers are to writable storage of the kernel's struct sizes, exclusively
    // borrowed for the call; an fd in idval is borrowed from `id`, so it stays open.
    let res = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::c_long::from(idtype),
            libc::c_long::from(idval),
            info.as_mut_ptr(),
            libc::c_long::from(flags.bits()),
            usage.as_mut_ptr(),
        )
    };
    Errno::result(res)?;
    // SAFETY: zero-initialised above and possibly filled by the kernel: valid either way.
    let (info, usage) = unsafe { (info.assume_init(), usage.assume_init()) };
    // SAFETY: for SIGCHLD-style results (all waitid reports) the union holds si_pid/si_status.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    let code = match info.si_code {
        _ if pid == 0 => return Ok(None),
        libc::CLD_EXITED => status,
        libc::CLD_KILLED | libc::CLD_DUMPED => -status,
        // Stopped or continued: only asked for with WSTOPPED/WCONTINUED, which we never do.
        _ => return Ok(None),
    };
    Ok(Some((
        code,
        Usage {
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            user_us: micros(usage.ru_utime),
            system_us: micros(usage.ru_stime),
        },
    )))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    use super::*;
    use crate::sys::pidfd;
    use crate::sys::testutil::{fork_lock, sh, sleeper, wait_code};

    #[test]
    fn exit_codes() {
        let _fork = fork_lock();
        for code in [0, 1, 7, 255] {
            assert_eq!(
                wait_code(sh(&format!("exit {code}"), &[], false, &[])),
                code
            );
        }
    }

    #[test]
    fn signal_deaths_are_negative() {
        let _fork = fork_lock();
        for signal in [Signal::SIGTERM, Signal::SIGKILL, Signal::SIGUSR1] {
            let pid = sh(
                &format!("kill -{} $$; sleep 5", signal as i32),
                &[],
                false,
                &[],
            );
            assert_eq!(wait_code(pid), -(signal as i32), "{signal}");
        }
    }

    /// A signal whose default action dumps core is reported as the signal, whether the
    /// kernel says CLD_DUMPED or (core files being off here) CLD_KILLED.
    #[test]
    fn core_signal_is_negative() {
        let _fork = fork_lock();
        // SIGABRT, not SIGQUIT: a shell started in the background (`cmd &`) inherits SIGQUIT
        // ignored, and cannot undo that.
        let pid = sh("ulimit -c 0; kill -ABRT $$; sleep 5", &[], false, &[]);
        assert_eq!(wait_code(pid), -(Signal::SIGABRT as i32));
    }

    #[test]
    fn wnohang_on_a_running_child_is_none() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        assert_eq!(waitid(Id::Pid(pid), flags), Ok(None));
        drop(hold);
        assert_eq!(wait_code(pid), 0);
        // Reaped: there is nothing left to wait for.
        assert_eq!(waitid(Id::Pid(pid), flags), Err(Errno::ECHILD));
    }

    /// WNOWAIT reports the child but leaves it to be reaped again.
    #[test]
    fn wnowait_leaves_the_child() {
        let _fork = fork_lock();
        let pid = sh("exit 3", &[], false, &[]);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        assert_eq!(waitid(Id::Pid(pid), flags).unwrap().map(|r| r.0), Some(3));
        assert_eq!(wait_code(pid), 3);
    }

    #[test]
    fn usage_is_reported() {
        let _fork = fork_lock();
        // Busy for a while in user space, so that some CPU time is accounted.
        let pid = sh(
            "i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done; exit 4",
            &[],
            false,
            &[],
        );
        let (code, usage) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED).unwrap().unwrap();
        assert_eq!(code, 4);
        assert!(usage.max_rss_kib > 0, "{usage:?}");
        assert!(usage.user_us + usage.system_us > 0, "{usage:?}");
    }

    #[test]
    fn by_pidfd() {
        let _fork = fork_lock();
        let pid = sh("exit 5", &[], false, &[]);
        let fd = pidfd::open(pid).unwrap();
        let res = waitid(Id::PIDFd(fd.as_fd()), WaitPidFlag::WEXITED).unwrap();
        assert_eq!(res.map(|r| r.0), Some(5));
    }

    #[test]
    fn by_process_group() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(true);
        kill(pid, Signal::SIGTERM).unwrap();
        let res = waitid(Id::PGid(pid), WaitPidFlag::WEXITED).unwrap();
        assert_eq!(res.map(|r| r.0), Some(-(Signal::SIGTERM as i32)));
        drop(hold);
    }

    #[test]
    fn not_our_child() {
        let _fork = fork_lock();
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        assert_eq!(waitid(Id::Pid(Pid::from_raw(1)), flags), Err(Errno::ECHILD));
        assert_eq!(waitid(Id::Pid(Pid::this()), flags), Err(Errno::ECHILD));
    }

    #[test]
    fn micros_adds_seconds() {
        let tv = libc::timeval {
            tv_sec: 3,
            tv_usec: 250,
        };
        assert_eq!(micros(tv), 3_000_250);
        let negative = libc::timeval {
            tv_sec: -1,
            tv_usec: -1,
        };
        assert_eq!(micros(negative), 0);
    }
}
