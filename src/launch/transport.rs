//! Writing a spawn or fork-server child's payload to its pipe: the segments
//! `procstart/popen_spawn.py` returns (`reduction._Segments`: the pickler's frames, the marshal
//! payload, and big `bytes`, `bytearray`s and buffers such as a NumPy array's data as the objects
//! themselves or byte views of them), in order, without joining them, with the GIL released:
//! small ones copied in `writev` batches, big ones (`SPLICE_MIN` on) spliced (`vmsplice`), so
//! that the pipe refers to the objects' own pages and the child's read is the only copy. The
//! launcher then waits until the child has read them (`wait_drained`): once start() returns the
//! objects may go or change, the child has its copy. The child's unpickler reads big objects
//! straight into the objects it makes. The write end stays the caller's (`payload.rs`): closed
//! once written, or kept to learn when the child has loaded a payload that references something
//! (`POLLERR`).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::buffers;
use crate::errors::os_error;
use crate::sys::mem::Span;
use crate::sys::pipe::{splice_all, write_all};
use crate::sys::poll::reader_gone;

/// Payloads from this size on get a bigger pipe: fewer round trips between the writing parent
/// and the reading child.
const BIG_PAYLOAD: usize = 1 << 20;
/// The pipe size asked for them (Linux's default `pipe-max-size`; an unprivileged process gets
/// no more, and keeps the default 64 KiB if it is refused).
const BIG_PIPE: i32 = 1 << 20;
/// Segments from this size on are spliced into the pipe rather than copied into it (in a
/// payload of `BIG_PAYLOAD` or more).
const SPLICE_MIN: usize = 256 << 10;
/// How often the parent looks whether the child has read everything spliced.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_micros(100);

/// Writes `spans` in order: runs of small ones with `writev`, big ones spliced. Sets `spliced`
/// once it has spliced; false if the reader is gone.
fn write_spans(
    fd: BorrowedFd<'_>,
    spans: &[Span],
    splice_min: usize,
    spliced: &mut bool,
) -> nix::Result<bool> {
    let mut rest = spans;
    while !rest.is_empty() {
        let small = rest.iter().take_while(|s| s.len < splice_min).count();
        if small > 0 {
            if !write_all(fd, &rest[..small])? {
                return Ok(false);
            }
            rest = &rest[small..];
        } else {
            *spliced = true;
            if !splice_all(fd, rest[0])? {
                return Ok(false);
            }
            rest = &rest[1..];
        }
    }
    Ok(true)
}

/// Waits until the pipe `fd` writes to is empty, or has no reader left: until then the reader
/// may still copy spliced bytes from their objects' pages, which must stay as they are.
fn wait_drained(fd: BorrowedFd<'_>) -> nix::Result<()> {
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD on a pipe stores the number of bytes queued in it into the int it is
        // given, which lives across the call.
        Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut queued) })?;
        if queued == 0 || reader_gone(fd)? {
            return Ok(());
        }
        std::thread::sleep(DRAIN_POLL);
    }
}

/// Writes `segments` (bytes, or byte views) to the payload pipe `fd`, whose write end the caller
/// then closes or keeps (`payload.rs`). Returns once the child has read every spliced byte (or is
/// gone): the caller may then drop the segments, which hold the memory written until then.
pub fn send_segments(
    py: Python<'_>,
    fd: BorrowedFd<'_>,
    segments: &Bound<'_, PyList>,
) -> PyResult<()> {
    let spans: Vec<Span> = segments
        .iter()
        .map(|segment| buffers::readable(&segment))
        .collect::<PyResult<_>>()?;
    let total: usize = spans.iter().map(|s| s.len).sum();
    // A payload that fits in the pipe is copied: start() then never waits for the child.
    let splice_min = if total >= BIG_PAYLOAD {
        // Best effort: the default size works, only with more wake-ups.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(BIG_PIPE));
        SPLICE_MIN
    } else {
        usize::MAX
    };
    let mut spliced = false;
    let sent = py.detach(|| write_spans(fd, &spans, splice_min, &mut spliced));
    if spliced {
        // Also after an error: the objects are dropped after this.
        let drained = py.detach(|| wait_drained(fd)).map_err(os_error);
        sent.map_err(os_error)?;
        return drained;
    }
    sent.map(drop).map_err(os_error)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;

    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    use super::*;

    #[test]
    fn spliced_bytes_are_read_before_wait_drained_returns() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::from(r);
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                std::thread::sleep(std::time::Duration::from_micros(20));
                match file.read(&mut chunk).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let mut spliced = false;
        let spans = [Span::of(b"head"), Span::of(&data), Span::of(b"tail")];
        assert!(write_spans(w.as_fd(), &spans, SPLICE_MIN, &mut spliced).unwrap());
        assert!(spliced);
        wait_drained(w.as_fd()).unwrap();
        // Whatever the pages hold from now on, the reader has its copy.
        let mut data = data;
        data.fill(0);
        drop(w);
        assert_eq!(
            reader.join().unwrap(),
            [&b"head"[..], &expected, &b"tail"[..]].concat()
        );
    }

    #[test]
    fn wait_drained_returns_once_the_reader_is_gone() {
        // No child may hold a copy of the read end meanwhile.
        let _guard = crate::sys::testutil::no_new_processes();
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let data = vec![1u8; 1000];
        assert!(splice_all(w.as_fd(), Span::of(&data)).unwrap());
        drop(r);
        wait_drained(w.as_fd()).unwrap();
    }
}
