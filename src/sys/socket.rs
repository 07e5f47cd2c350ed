//! Unix-socket calls the fork server's protocol needs: descriptors passed with `SCM_RIGHTS`,
//! the peer's credentials, exact reads and writes with deadlines, and kernel randomness.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags, UnixCredentials};

use crate::sys::poll::{wait_readable, Readiness};

/// The most descriptors one `SCM_RIGHTS` message may carry (Linux's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Sends `data` with `fds` attached, in one message.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(data)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) if n == data.len() => return Ok(()),
            // A stream socket may take part of a message: the descriptors went with the first
            // byte, the rest follows as plain data.
            Ok(n) => return write_all(sock, &data[n..]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmsg` without waiting: the bytes read into `buf` and the descriptors that came with
/// them (close-on-exec). `EAGAIN` when nothing is there yet, `ECONNRESET` at end of stream,
/// `EPROTO` when descriptors were cut off (more than `MAX_FDS`, or this process out of
/// descriptors) — those that did arrive are closed, never leaked.
pub fn recv_some_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    const FD_SIZE: usize = std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * FD_SIZE) as u32) } as usize;
    // u64 words: the alignment a cmsghdr needs.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all zeroes is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let received = loop {
        // SAFETY: msg points at `iov` (over `buf`) and `control`, both alive and exclusively
        // borrowed for the call; the kernel writes within the lengths given.
        let res = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        match Errno::result(res) {
            Ok(n) => break n as usize,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    };
    // Every descriptor the kernel installed is owned before anything else is looked at, so
    // that none can leak whatever the message turns out to be.
    let mut fds = Vec::new();
    // SAFETY: CMSG_FIRSTHDR reads msg_control/msg_controllen of the msghdr the kernel filled.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg points at a complete header inside `control` (CMSG_FIRSTHDR/NXTHDR
        // check that against msg_controllen).
        let header = unsafe { std::ptr::read_unaligned(cmsg) };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is arithmetic on its argument.
            let data_len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: the data of this header follows it inside `control`.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            for i in 0..data_len / FD_SIZE {
                // SAFETY: `i` indexes a descriptor within this header's data, which the kernel
                // wrote; each one is a new descriptor of this process that nothing else owns.
                fds.push(unsafe {
                    OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.cast::<RawFd>().add(i)))
                });
            }
        }
        // SAFETY: as CMSG_FIRSTHDR; returns null after the last header.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(Errno::EPROTO);
    }
    if received == 0 {
        return Err(Errno::ECONNRESET);
    }
    Ok((received, fds))
}

/// Receives exactly `buf.len()` bytes, the first of which carry descriptors, before `deadline`.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> nix::Result<Vec<OwnedFd>> {
    loop {
        wait_for(sock, deadline)?;
        match recv_some_with_fds(sock, buf) {
            Ok((received, fds)) => {
                read_exact(sock, &mut buf[received..], deadline)?;
                return Ok(fds);
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads what is there, at most `buf.len()` bytes, without waiting: `EAGAIN` when nothing is,
/// `ECONNRESET` at end of stream.
pub fn read_some(sock: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(Errno::ECONNRESET),
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `sock` is readable; `ETIMEDOUT` at the deadline, `EINTR` when a signal came
/// (the caller runs Python's handlers).
fn wait_for(sock: BorrowedFd<'_>, deadline: Option<Instant>) -> nix::Result<()> {
    match wait_readable(sock.as_raw_fd(), deadline)? {
        Readiness::Ready => Ok(()),
        Readiness::TimedOut => Err(Errno::ETIMEDOUT),
        Readiness::Interrupted => Err(Errno::EINTR),
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`; `ECONNRESET` at end of stream.
pub fn read_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> nix::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match read_some(sock, &mut buf[done..]) {
            Ok(n) => done += n,
            Err(Errno::EAGAIN) => wait_for(sock, deadline)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `data`; a peer that went away is `EPIPE`, without `SIGPIPE`.
pub fn write_all(sock: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::sys::socket::send(sock.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The credentials of the process at the other end of a connected Unix socket, as the kernel
/// recorded them at `connect()`.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> nix::Result<UnixCredentials> {
    getsockopt(&sock.as_fd(), sockopt::PeerCredentials)
}

/// Fills `buf` from the kernel's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> nix::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which this frame
        // borrows mutably for the call.
        let res = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match Errno::result(res) {
            Ok(n) => done += n as usize,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use nix::fcntl::{fcntl, FcntlArg};

    use super::*;
    use crate::sys::poll::deadline_after;
    use crate::sys::testutil::{no_new_processes, pipe, read_to_string};

    fn soon() -> Option<Instant> {
        deadline_after(10.0)
    }

    #[test]
    fn fds_round_trip() {
        // Reads to end of file: no child may hold a copy of the write ends meanwhile.
        let _quiet = no_new_processes();
        let (a, b) = UnixStream::pair().unwrap();
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        send_with_fds(a.as_fd(), b"hello", &[w1.as_fd(), w2.as_fd()]).unwrap();
        let mut buf = [0u8; 5];
        let fds = recv_with_fds(b.as_fd(), &mut buf, soon()).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(fds.len(), 2);
        // New descriptors, close-on-exec, for the same pipes, in order.
        for fd in &fds {
            assert_ne!(fcntl(fd, FcntlArg::F_GETFD).unwrap() & libc::FD_CLOEXEC, 0);
            assert!(![w1.as_raw_fd(), w2.as_raw_fd()].contains(&fd.as_raw_fd()));
        }
        nix::unistd::write(&fds[0], b"one").unwrap();
        nix::unistd::write(&fds[1], b"two").unwrap();
        drop((fds, w1, w2));
        assert_eq!(read_to_string(r1), "one");
        assert_eq!(read_to_string(r2), "two");
    }

    #[test]
    fn without_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(a.as_fd(), b"plain", &[]).unwrap();
        let mut buf = [0u8; 5];
        assert!(recv_with_fds(b.as_fd(), &mut buf, soon())
            .unwrap()
            .is_empty());
        assert_eq!(&buf, b"plain");
    }

    #[test]
    fn as_many_fds_as_one_message_carries() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_r, w) = pipe();
        let many = vec![w.as_fd(); MAX_FDS];
        send_with_fds(a.as_fd(), b"m", &many).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf, soon()).unwrap().len(),
            MAX_FDS
        );
        let too_many = vec![w.as_fd(); MAX_FDS + 1];
        assert_eq!(
            send_with_fds(a.as_fd(), b"m", &too_many),
            Err(Errno::EINVAL)
        );
    }

    /// A message longer than the socket buffer still arrives whole, its descriptors with it.
    #[test]
    fn large_message_with_fds() {
        // Reads to end of file: no child may hold a copy of the write ends meanwhile.
        let _quiet = no_new_processes();
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let sender = {
            let data = data.clone();
            std::thread::spawn(move || send_with_fds(a.as_fd(), &data, &[w.as_fd()]))
        };
        let mut buf = vec![0u8; data.len()];
        let fds = recv_with_fds(b.as_fd(), &mut buf, soon()).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(buf, data);
        assert_eq!(fds.len(), 1);
        drop(fds);
        assert_eq!(read_to_string(r), "");
    }

    #[test]
    fn recv_some_nothing_yet_and_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            recv_some_with_fds(b.as_fd(), &mut buf).map(drop),
            Err(Errno::EAGAIN)
        );
        assert_eq!(read_some(b.as_fd(), &mut buf), Err(Errno::EAGAIN));
        drop(a);
        assert_eq!(
            recv_some_with_fds(b.as_fd(), &mut buf).map(drop),
            Err(Errno::ECONNRESET)
        );
        assert_eq!(read_some(b.as_fd(), &mut buf), Err(Errno::ECONNRESET));
    }

    #[test]
    fn read_exact_deadline_and_short_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 4];
        let start = Instant::now();
        let deadline = Some(start + Duration::from_millis(20));
        assert_eq!(
            read_exact(b.as_fd(), &mut buf, deadline),
            Err(Errno::ETIMEDOUT)
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        write_all(a.as_fd(), b"ab").unwrap();
        drop(a);
        assert_eq!(
            read_exact(b.as_fd(), &mut buf, soon()),
            Err(Errno::ECONNRESET)
        );
    }

    #[test]
    fn recv_with_fds_times_out() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 1];
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(
            recv_with_fds(b.as_fd(), &mut buf, deadline).map(drop),
            Err(Errno::ETIMEDOUT)
        );
    }

    /// A peer that went away is EPIPE, and no SIGPIPE kills the test.
    #[test]
    fn write_to_closed_peer_is_epipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert_eq!(write_all(a.as_fd(), b"x"), Err(Errno::EPIPE));
        let (_r, w) = pipe();
        assert_eq!(
            send_with_fds(a.as_fd(), b"x", &[w.as_fd()]),
            Err(Errno::EPIPE)
        );
    }

    #[test]
    fn peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let creds = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(creds.pid(), std::process::id() as i32);
        assert_eq!(creds.uid(), nix::unistd::getuid().as_raw());
        assert_eq!(creds.gid(), nix::unistd::getgid().as_raw());
    }

    #[test]
    fn random_bytes_fill() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b);
        random_bytes(&mut []).unwrap();
    }
}
