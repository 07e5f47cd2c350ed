//! The fork server's wire format. Every message has a fixed size; integers are little-endian.
//!
//! ```text
//! server -> client  HELLO    8  MAGIC
//!                            32 server nonce
//! client -> server  ANSWER   32 HMAC-SHA256(key, "client" + server nonce)
//!                            32 client nonce
//! server -> client  PROOF    32 HMAC-SHA256(key, "server" + client nonce)
//! client -> server  REQUEST  2 "RQ", 2 flags, 4 number of descriptors
//!                            + SCM_RIGHTS: payload pipe, parent sentinel, [exit pipe],
//!                              then the descriptors the payload refers to
//! server -> client  REPLY    16 (tag u32, 0 u32, value i64): CHILD (value: pid, with the
//!                            server's pidfd on it in SCM_RIGHTS) or FAILED (value: errno)
//! server -> client  STATUS   16 (tag u32, 0 u32, exit code i64), once the CHILD is reaped,
//!                            24 its usage: max RSS KiB, user and system CPU µs (u64 each)
//! ```
//!
//! The key is 32 random bytes made by the process that starts the server; only it and its
//! descendants hold it (it travels in fork memory and spawn payloads, never on a command line
//! or in the environment). Each side proves it holds the key before the other sends anything
//! that matters, so neither a stranger's server at our address nor a stranger's client gets a
//! process. A peer that sends anything else, or nothing for `HANDSHAKE_TIMEOUT`, is dropped.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use nix::errno::Errno;
use sha2::Sha256;

use crate::sys::socket::{
    random_bytes, read_exact, read_some, recv_some_with_fds, recv_with_fds, send_with_fds,
    write_all,
};
use crate::sys::wait::Usage;

pub const KEY_LEN: usize = 32;
const MAGIC: [u8; 8] = *b"PSFSRV01";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a live server to authenticate it and answer (a server that is
/// stopped or out of descriptors does not answer).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// REQUEST flag: the exit pipe's write end follows the parent sentinel (kernels without pidfd).
pub const FLAG_EXIT_PIPE: u16 = 1;
/// REQUEST flag: the child leads a new process group (`new_process_group=True`).
pub const FLAG_NEW_GROUP: u16 = 2;
const KNOWN_FLAGS: u16 = FLAG_EXIT_PIPE | FLAG_NEW_GROUP;

const TAG_CHILD: u32 = 1;
const TAG_STATUS: u32 = 3;
const TAG_FAILED: u32 = 4;
/// A STATUS message: a 16-byte frame and three u64 of usage.
pub const STATUS_LEN: usize = 16 + 3 * 8;

pub type Key = [u8; KEY_LEN];

/// Why a handshake ended without a request.
#[derive(Debug)]
pub enum Refused {
    /// The peer does not hold the key, or does not speak this protocol.
    Authentication,
    /// The server hung up on our answer: it does not take our key.
    Rejected,
    Os(Errno),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Self {
        Refused::Os(e)
    }
}

fn mac(key: &Key, role: &[u8], nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(role);
    mac.update(nonce);
    mac
}

fn nonce() -> nix::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0; NONCE_LEN];
    random_bytes(&mut nonce)?;
    Ok(nonce)
}

pub fn new_key() -> nix::Result<Key> {
    nonce()
}

/// What a client asks for: the descriptors, and the REQUEST flags.
pub struct Request {
    pub flags: u16,
    pub fds: Vec<OwnedFd>,
}

/// The server's side of one connection, up to and including the request, driven by
/// readiness so that a slow or silent peer holds up nobody else.
pub struct Handshake {
    nonce: [u8; NONCE_LEN],
    /// The ANSWER, then the REQUEST header, as it arrives.
    buf: [u8; MAC_LEN + NONCE_LEN],
    filled: usize,
    proved: bool,
    fds: Vec<OwnedFd>,
    pub deadline: Instant,
}

pub enum Progress {
    /// Waiting for the peer.
    Pending,
    Done(Request),
}

impl Handshake {
    /// Sends HELLO on a new connection.
    pub fn start(conn: BorrowedFd<'_>) -> Result<Self, Refused> {
        let nonce = nonce()?;
        let mut hello = [0; MAGIC.len() + NONCE_LEN];
        hello[..MAGIC.len()].copy_from_slice(&MAGIC);
        hello[MAGIC.len()..].copy_from_slice(&nonce);
        // A fresh connection's buffer takes it whole: this does not block.
        write_all(conn, &hello)?;
        Ok(Handshake {
            nonce,
            buf: [0; MAC_LEN + NONCE_LEN],
            filled: 0,
            proved: false,
            fds: Vec::new(),
            deadline: Instant::now() + HANDSHAKE_TIMEOUT,
        })
    }

    /// Takes in what the peer has sent so far; call when `conn` is readable.
    pub fn advance(&mut self, conn: BorrowedFd<'_>, key: &Key) -> Result<Progress, Refused> {
        loop {
            let want = if self.proved { 8 } else { MAC_LEN + NONCE_LEN };
            let read = if self.proved {
                recv_some_with_fds(conn, &mut self.buf[self.filled..want]).map(|(n, fds)| {
                    self.fds.extend(fds);
                    n
                })
            } else {
                read_some(conn, &mut self.buf[self.filled..want])
            };
            match read {
                Ok(n) => self.filled += n,
                Err(Errno::EAGAIN) => return Ok(Progress::Pending),
                Err(e) => return Err(Refused::Os(e)),
            }
            if self.filled < want {
                continue;
            }
            if self.proved {
                return self.request().map(Progress::Done);
            }
            mac(key, b"client", &self.nonce)
                .verify_slice(&self.buf[..MAC_LEN])
                .map_err(|_| Refused::Authentication)?;
            let proof = mac(key, b"server", &self.buf[MAC_LEN..])
                .finalize()
                .into_bytes();
            write_all(conn, &proof)?;
            self.proved = true;
            self.filled = 0;
        }
    }

    fn request(&mut self) -> Result<Request, Refused> {
        let header = &self.buf[..8];
        let flags = u16::from_le_bytes([header[2], header[3]]);
        let count = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
        let links = 2 + usize::from(flags & FLAG_EXIT_PIPE != 0);
        let fds = std::mem::take(&mut self.fds);
        if &header[..2] != b"RQ" || flags & !KNOWN_FLAGS != 0 || count != fds.len() || count < links
        {
            return Err(Refused::Authentication);
        }
        Ok(Request { flags, fds })
    }
}

/// The client's side: proves the key, checks the server's proof, sends the request.
pub fn request(
    conn: BorrowedFd<'_>,
    key: &Key,
    flags: u16,
    fds: &[BorrowedFd<'_>],
) -> Result<(), Refused> {
    let deadline = Some(Instant::now() + CLIENT_TIMEOUT);
    let mut hello = [0; MAGIC.len() + NONCE_LEN];
    read_exact(conn, &mut hello, deadline)?;
    if hello[..MAGIC.len()] != MAGIC {
        return Err(Refused::Authentication);
    }
    let client_nonce = nonce()?;
    let mut answer = [0; MAC_LEN + NONCE_LEN];
    answer[..MAC_LEN].copy_from_slice(
        &mac(key, b"client", &hello[MAGIC.len()..])
            .finalize()
            .into_bytes(),
    );
    answer[MAC_LEN..].copy_from_slice(&client_nonce);
    write_all(conn, &answer)?;
    let mut proof = [0; MAC_LEN];
    // A server that rejects the answer closes the connection instead of proving itself.
    read_exact(conn, &mut proof, deadline).map_err(|e| match e {
        Errno::ECONNRESET => Refused::Rejected,
        e => Refused::Os(e),
    })?;
    mac(key, b"server", &client_nonce)
        .verify_slice(&proof)
        .map_err(|_| Refused::Authentication)?;
    let mut header = [0; 8];
    header[..2].copy_from_slice(b"RQ");
    header[2..4].copy_from_slice(&flags.to_le_bytes());
    header[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    send_with_fds(conn, &header, fds)?;
    Ok(())
}

/// The server's answer to a request.
pub enum Reply {
    /// The server's own child, with the server's pidfd on it when the kernel has pidfds; its
    /// STATUS follows on the same connection.
    Child(i32, Option<OwnedFd>),
    /// fork() failed with this errno.
    Failed(Errno),
}

fn frame(tag: u32, value: i64) -> [u8; 16] {
    let mut frame = [0; 16];
    frame[..4].copy_from_slice(&tag.to_le_bytes());
    frame[8..].copy_from_slice(&value.to_le_bytes());
    frame
}

fn parse(frame: &[u8; 16]) -> (u32, i64) {
    (
        u32::from_le_bytes(frame[..4].try_into().unwrap()),
        i64::from_le_bytes(frame[8..].try_into().unwrap()),
    )
}

pub fn send_child(
    conn: BorrowedFd<'_>,
    pid: i32,
    pidfd: Option<BorrowedFd<'_>>,
) -> nix::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = pidfd.into_iter().collect();
    send_with_fds(conn, &frame(TAG_CHILD, i64::from(pid)), &fds)
}

pub fn send_failed(conn: BorrowedFd<'_>, errno: Errno) -> nix::Result<()> {
    write_all(conn, &frame(TAG_FAILED, errno as i64))
}

pub fn read_reply(conn: BorrowedFd<'_>) -> nix::Result<Reply> {
    let mut buf = [0; 16];
    let mut fds = recv_with_fds(conn, &mut buf, Some(Instant::now() + CLIENT_TIMEOUT))?.into_iter();
    let (tag, value) = parse(&buf);
    let pid = i32::try_from(value).map_err(|_| Errno::EPROTO)?;
    match tag {
        TAG_CHILD if pid > 0 => Ok(Reply::Child(pid, fds.next())),
        TAG_FAILED => Ok(Reply::Failed(Errno::from_raw(pid))),
        _ => Err(Errno::EPROTO),
    }
}

/// STATUS: the exit code as `multiprocessing` reports it (negative: killed by that signal),
/// then the child's resource usage.
pub fn send_exit_status(conn: BorrowedFd<'_>, code: i32, usage: Usage) -> nix::Result<()> {
    let mut status = [0; STATUS_LEN];
    status[..16].copy_from_slice(&frame(TAG_STATUS, i64::from(code)));
    for (field, value) in
        status[16..]
            .chunks_exact_mut(8)
            .zip([usage.max_rss_kib, usage.user_us, usage.system_us])
    {
        field.copy_from_slice(&value.to_le_bytes());
    }
    write_all(conn, &status)
}

/// Decodes a STATUS message.
pub fn parse_exit_status(status: &[u8; STATUS_LEN]) -> nix::Result<(i32, Usage)> {
    let (tag, code) = parse(status[..16].try_into().unwrap());
    if tag != TAG_STATUS {
        return Err(Errno::EPROTO);
    }
    let code = i32::try_from(code).map_err(|_| Errno::EPROTO)?;
    let field = |i: usize| u64::from_le_bytes(status[16 + 8 * i..24 + 8 * i].try_into().unwrap());
    let usage = Usage {
        max_rss_kib: field(0),
        user_us: field(1),
        system_us: field(2),
    };
    Ok((code, usage))
}

/// Reads the STATUS the server has sent, without waiting for it: `EAGAIN` when it has not
/// come yet, `ECONNRESET` when the server is gone.
pub fn read_exit_status(conn: BorrowedFd<'_>) -> nix::Result<(i32, Usage)> {
    let mut buf = [0; STATUS_LEN];
    // One small write on a stream socket arrives whole: once part of it is there, the rest
    // is too, so this never waits long.
    let first = read_some(conn, &mut buf)?;
    read_exact(
        conn,
        &mut buf[first..],
        Some(Instant::now() + HANDSHAKE_TIMEOUT),
    )?;
    parse_exit_status(&buf)
}
