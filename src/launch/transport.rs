//! Writing a spawn or fork-server child's payload to its pipe: the segments `procstart/spawn.py`
//! returns (`_Segments`), in order, without joining them. `bytes` segments (the pickler's frames,
//! the marshal payload, big `bytes` arguments themselves) go out in `writev` batches with the GIL
//! released; a byte view of a bytearray or buffer (a NumPy array's data) through `os.write`,
//! which releases it too (abi3 for 3.10 has no buffer protocol). Either way nothing is copied
//! in user space: the kernel copies each byte once into the pipe, and the child's unpickler reads
//! big objects straight into the objects it makes.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use pyo3::exceptions::PyBrokenPipeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::errors::os_error;

/// Payloads from this size on get a bigger pipe: fewer round trips between the writing parent
/// and the reading child.
const BIG_PAYLOAD: usize = 1 << 20;
/// The pipe size asked for them (Linux's default `pipe-max-size`; an unprivileged process gets
/// no more, and keeps the default 64 KiB if it is refused).
const BIG_PIPE: i32 = 1 << 20;
/// `writev` takes at most `IOV_MAX` (1024 on Linux) slices.
const MAX_SLICES: usize = 1024;

/// Writes all of `slices` to `fd`, retrying on EINTR; false if the reader is gone (EPIPE):
/// a child that died before reading it all is not an error here, its exit code tells.
fn write_all_vectored(fd: BorrowedFd<'_>, mut slices: &mut [IoSlice<'_>]) -> nix::Result<bool> {
    while !slices.is_empty() {
        let batch = slices.len().min(MAX_SLICES);
        match nix::sys::uio::writev(fd, &slices[..batch]) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes a byte view to `fd` through `os.write`; false if the reader is gone.
fn write_view(py: Python<'_>, fd: BorrowedFd<'_>, view: &Bound<'_, PyAny>) -> PyResult<bool> {
    let write = py.import("os")?.getattr("write")?;
    let len = view.len()?;
    let mut written = 0;
    while written < len {
        let rest = if written == 0 {
            view.clone()
        } else {
            view.get_item(pyo3::types::PySlice::new(
                py,
                written as isize,
                len as isize,
                1,
            ))?
        };
        match write.call1((fd.as_raw_fd(), rest)) {
            Ok(n) => written += n.extract::<usize>()?,
            Err(e) if e.is_instance_of::<PyBrokenPipeError>(py) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes `segments` (bytes, or byte views) to the payload pipe, and closes it.
pub fn send_segments(py: Python<'_>, pipe: OwnedFd, segments: &Bound<'_, PyList>) -> PyResult<()> {
    let fd = pipe.as_fd();
    let items: Vec<Bound<'_, PyAny>> = segments.iter().collect();
    let total: usize = items.iter().map(|item| item.len().unwrap_or(0)).sum();
    if total >= BIG_PAYLOAD {
        // Best effort: the default size works, only with more wake-ups.
        let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(BIG_PIPE));
    }
    let mut rest = &items[..];
    while !rest.is_empty() {
        let run = rest
            .iter()
            .take_while(|item| item.is_exact_instance_of::<PyBytes>())
            .count();
        if run > 0 {
            let mut slices: Vec<IoSlice<'_>> = rest[..run]
                .iter()
                .map(|item| {
                    // Checked exact bytes above.
                    IoSlice::new(item.cast::<PyBytes>().map_or(&[][..], |b| b.as_bytes()))
                })
                .collect();
            if !py
                .detach(|| write_all_vectored(fd, &mut slices))
                .map_err(os_error)?
            {
                return Ok(());
            }
            rest = &rest[run..];
        } else {
            if !write_view(py, fd, &rest[0])? {
                return Ok(());
            }
            rest = &rest[1..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    use super::*;

    #[test]
    fn writes_every_slice_in_order_past_the_pipe_capacity() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        // More slices than IOV_MAX, more bytes than a pipe holds: batches and partial writes.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; 1 + (i as usize * 37) % 500])
            .collect();
        let expected: Vec<u8> = parts.concat();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(r).read_to_end(&mut got).unwrap();
            got
        });
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        assert!(write_all_vectored(w.as_fd(), &mut slices).unwrap());
        drop(w);
        assert_eq!(reader.join().unwrap(), expected);
    }

    #[test]
    fn a_reader_gone_is_not_an_error() {
        // Rust's runtime ignores SIGPIPE (as the Python interpreter does): the write fails
        // with EPIPE instead of killing the process.
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        drop(r);
        let data = [7u8; 100];
        let mut slices = [IoSlice::new(&data)];
        assert!(!write_all_vectored(w.as_fd(), &mut slices).unwrap());
    }
}
