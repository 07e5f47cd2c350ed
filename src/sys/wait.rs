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
