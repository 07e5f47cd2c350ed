//! Unix-socket calls the fork server's protocol needs: descriptors passed with `SCM_RIGHTS`,
//! the peer's credentials, exact reads and writes with deadlines, and kernel randomness.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    UnixCredentials,
};

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
/// `EPROTO` when descriptors were cut off (more than `MAX_FDS`).
pub fn recv_some_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: SCM_RIGHTS installed these descriptors in this process just
                        // now; nothing else refers to them.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(Errno::EPROTO);
                }
                if msg.bytes == 0 {
                    return Err(Errno::ECONNRESET);
                }
                return Ok((msg.bytes, fds));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
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

fn wait_for(sock: BorrowedFd<'_>, deadline: Option<Instant>) -> nix::Result<()> {
    loop {
        match wait_readable(sock.as_raw_fd(), deadline)? {
            Readiness::Ready => return Ok(()),
            Readiness::TimedOut => return Err(Errno::ETIMEDOUT),
            Readiness::Interrupted => {}
        }
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
