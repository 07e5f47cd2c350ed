//! Waiting for one descriptor to become readable with a deadline, as `select`/`poll` do for
//! `multiprocessing.connection.wait`.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;

pub enum Readiness {
    Ready,
    TimedOut,
    /// A signal arrived: the caller must run Python's signal handlers, then call again.
    Interrupted,
}

/// The deadline `seconds` from now; `None` (no deadline) when it is too far to represent.
pub fn deadline_after(seconds: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(seconds.max(0.0))
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
}

/// Waits until `fd` is readable or `deadline` passes (`None`: no deadline). A descriptor
/// that is not open counts as readable (`POLLNVAL`), as for `select`.
pub fn wait_readable(fd: RawFd, deadline: Option<Instant>) -> nix::Result<Readiness> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up so a wait never ends early; long waits are done in slices.
                left.as_nanos()
                    .div_ceil(Duration::from_millis(1).as_nanos())
                    .min(i32::MAX as u128) as i32
            }
        };
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd owned by this frame, its count passed as 1; poll(2) only writes
        // its revents field and never dereferences the descriptor number.
        let res = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        match Errno::result(res) {
            Ok(0) if deadline.is_some_and(|d| Instant::now() < d) => continue,
            Ok(0) => return Ok(Readiness::TimedOut),
            Ok(_) => return Ok(Readiness::Ready),
            Err(Errno::EINTR) => return Ok(Readiness::Interrupted),
            Err(e) => return Err(e),
        }
    }
}
