//! Waiting for one descriptor to become readable with a deadline, as `select`/`poll` do for
//! `multiprocessing.connection.wait`.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

pub enum Readiness {
    Ready,
    TimedOut,
    /// A signal arrived: the caller must run Python's signal handlers, then call again with
    /// the remaining time.
    Interrupted,
}

/// Waits until `fd` is readable or `deadline` passes (`None`: no deadline).
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> nix::Result<Readiness> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so a wait never ends early and spins on a 0 ms poll.
            let ms = left
                .as_nanos()
                .div_ceil(Duration::from_millis(1).as_nanos());
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(0) => Ok(Readiness::TimedOut),
        Ok(_) => Ok(Readiness::Ready),
        Err(nix::errno::Errno::EINTR) => Ok(Readiness::Interrupted),
        Err(e) => Err(e),
    }
}
