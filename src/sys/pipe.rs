//! Writing memory into a pipe: copied (`writev`), or spliced (`vmsplice`: the pipe then refers
//! to the pages themselves until they are read). Memory is named by `Span`s.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::sys::mem::Span;

/// `writev` takes at most `IOV_MAX` (1024 on Linux) spans.
const MAX_SPANS: usize = 1024;

/// Writes all of `spans` to `fd`, in order, retrying on EINTR; false if the reader is gone
/// (EPIPE): a child that died before reading it all is not an error here, its exit code tells.
pub fn write_all(fd: BorrowedFd<'_>, spans: &[Span]) -> nix::Result<bool> {
    let mut iov: Vec<libc::iovec> = spans
        .iter()
        .filter(|span| span.len > 0)
        .map(|span| span.iovec())
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let batch = (iov.len() - first).min(MAX_SPANS);
        // SAFETY: writev reads `batch` iovecs from `iov`, which lives across the call, and the
        // memory they name, which it only reads (EFAULT where nothing is mapped).
        let written = unsafe { libc::writev(fd.as_raw_fd(), iov[first..].as_ptr(), batch as i32) };
        match Errno::result(written) {
            Ok(n) => first = advance(&mut iov, first, n as usize),
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The first of `iov[first..]` not wholly written once `n` more bytes are, that one trimmed by
/// what of it was.
fn advance(iov: &mut [libc::iovec], mut first: usize, mut n: usize) -> usize {
    while n > 0 && first < iov.len() {
        let len = iov[first].iov_len;
        if n < len {
            iov[first].iov_base = (iov[first].iov_base as usize + n) as *mut libc::c_void;
            iov[first].iov_len = len - n;
            return first;
        }
        n -= len;
        first += 1;
    }
    first
}

/// Splices all of `span` into the pipe `fd` (`vmsplice`): the pipe takes references to its
/// pages, whose contents the reader then copies out, as they are when it reads them. False if
/// the reader is gone.
pub fn splice_all(fd: BorrowedFd<'_>, span: Span) -> nix::Result<bool> {
    let mut rest = span;
    while rest.len > 0 {
        let iov = rest.iovec();
        // SAFETY: vmsplice reads the one iovec, which lives across the call, and takes references
        // to the pages it names (EFAULT where nothing is mapped); it writes no memory of ours.
        let spliced = unsafe { libc::vmsplice(fd.as_raw_fd(), &iov, 1, 0) };
        match Errno::result(spliced) {
            Ok(n) => rest = rest.from(n as usize),
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;

    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    use super::*;

    fn read_all_in_background(r: std::os::fd::OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(r).read_to_end(&mut got).unwrap();
            got
        })
    }

    #[test]
    fn writes_every_span_in_order_past_the_pipe_capacity() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        // More spans than IOV_MAX, more bytes than a pipe holds, empty ones: batches and
        // partial writes.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 37) % 500])
            .collect();
        let expected: Vec<u8> = parts.concat();
        let reader = read_all_in_background(r);
        let spans: Vec<Span> = parts.iter().map(|p| Span::of(p)).collect();
        assert!(write_all(w.as_fd(), &spans).unwrap());
        drop(w);
        assert_eq!(reader.join().unwrap(), expected);
    }

    #[test]
    fn splices_a_span_past_the_pipe_capacity() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 5).map(|i: u32| (i % 253) as u8).collect();
        let reader = read_all_in_background(r);
        assert!(splice_all(w.as_fd(), Span::of(&data)).unwrap());
        drop(w);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_reader_gone_is_not_an_error() {
        // Rust's runtime ignores SIGPIPE (as the Python interpreter does): the write fails
        // with EPIPE instead of killing the process.
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        drop(r);
        let data = [7u8; 100];
        assert!(!write_all(w.as_fd(), &[Span::of(&data)]).unwrap());
        assert!(!splice_all(w.as_fd(), Span::of(&data)).unwrap());
    }

    #[test]
    fn memory_not_mapped_is_an_error_not_a_fault() {
        let (_r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let nowhere = Span {
            start: 4096,
            len: 4096,
        };
        assert_eq!(write_all(w.as_fd(), &[nowhere]), Err(Errno::EFAULT));
        assert_eq!(splice_all(w.as_fd(), nowhere), Err(Errno::EFAULT));
    }
}
