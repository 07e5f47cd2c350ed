//! Waiting for one descriptor to become readable with a deadline, as `select`/`poll` do for
//! `multiprocessing.connection.wait`; and whether a pipe's reader is gone.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
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

/// Whether the pipe whose write end is `fd` has no reader left (every read end closed), without
/// waiting: `poll` asked for no event reports `POLLERR` alone, which a pipe's write end has then.
/// False when interrupted.
pub fn reader_gone(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd owned by this frame, its count passed as 1; poll(2) only writes its
    // revents field; the descriptor is borrowed, so open for the call.
    let res = unsafe { libc::poll(&mut pollfd, 1, 0) };
    match Errno::result(res) {
        Ok(_) => Ok(pollfd.revents & libc::POLLERR != 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};

    use super::*;
    use crate::sys::testutil::pipe;

    #[test]
    fn deadline_after_clamps_and_saturates() {
        let before = Instant::now();
        let d = deadline_after(0.5).unwrap();
        assert!(d >= before + Duration::from_millis(500));
        assert!(d <= Instant::now() + Duration::from_millis(500));
        // Negative means now.
        assert!(deadline_after(-3.0).unwrap() <= Instant::now());
        // Too far: no deadline.
        assert_eq!(deadline_after(f64::INFINITY), None);
        assert_eq!(deadline_after(1e30), None);
        // NaN is not a number of seconds; `f64::max` turns it into 0: now.
        assert!(deadline_after(f64::NAN).unwrap() <= Instant::now());
    }

    #[test]
    fn reader_gone_once_every_read_end_is_closed() {
        // No child may hold a copy of the read end meanwhile.
        let _guard = crate::sys::testutil::no_new_processes();
        let (r, w) = pipe();
        assert!(!reader_gone(w.as_fd()).unwrap());
        drop(r);
        assert!(reader_gone(w.as_fd()).unwrap());
    }

    #[test]
    fn times_out_not_early() {
        let (r, _w) = pipe();
        let start = Instant::now();
        let res = wait_readable(r.as_raw_fd(), Some(start + Duration::from_millis(30))).unwrap();
        assert!(matches!(res, Readiness::TimedOut));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn past_deadline_polls_once() {
        let (r, w) = pipe();
        let past = Some(Instant::now());
        assert!(matches!(
            wait_readable(r.as_raw_fd(), past),
            Ok(Readiness::TimedOut)
        ));
        nix::unistd::write(&w, b"x").unwrap();
        assert!(matches!(
            wait_readable(r.as_raw_fd(), past),
            Ok(Readiness::Ready)
        ));
    }

    #[test]
    fn ready_with_data_and_at_end_of_stream() {
        let (r, w) = pipe();
        nix::unistd::write(&w, b"x").unwrap();
        assert!(matches!(
            wait_readable(r.as_raw_fd(), None),
            Ok(Readiness::Ready)
        ));
        let (r2, w2) = pipe();
        drop(w2);
        assert!(matches!(
            wait_readable(r2.as_raw_fd(), None),
            Ok(Readiness::Ready)
        ));
        drop((r, w));
    }

    #[test]
    fn ready_when_written_from_another_thread() {
        let (r, w) = pipe();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            nix::unistd::write(&w, b"x").unwrap();
        });
        let res = wait_readable(r.as_raw_fd(), deadline_after(10.0)).unwrap();
        assert!(matches!(res, Readiness::Ready));
        writer.join().unwrap();
    }

    /// A descriptor number that is not open is readable (POLLNVAL), as for `select`.
    #[test]
    fn closed_descriptor_counts_as_readable() {
        // Far above any descriptor this process opens.
        let res = wait_readable(1 << 20, deadline_after(5.0)).unwrap();
        assert!(matches!(res, Readiness::Ready));
    }
}
