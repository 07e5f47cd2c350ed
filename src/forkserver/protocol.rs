//! The fork server's wire format. The handshake is CPython's `multiprocessing.connection`
//! authentication (3.12 and later), byte for byte, so that `connection.Client(address,
//! authkey=key)` authenticates against procstart's server as against CPython 3.14's (whose
//! `forkserver` authenticates every connection so). What follows it is procstart's own:
//! fixed-size frames, integers little-endian.
//!
//! ```text
//! MESSAGE: CPython's `Connection.send_bytes` framing, a 4-byte big-endian signed length and the
//! data. Neither side takes a MESSAGE longer than 256 bytes (CPython's `recv_bytes(256)`).
//!
//! server -> client  MESSAGE  "#CHALLENGE#" "{sha256}" 40 random bytes     (deliver_challenge)
//! client -> server  MESSAGE  "{sha256}" HMAC-SHA256(key, "{sha256}" + those 40 bytes)
//!                                                                         (answer_challenge)
//! server -> client  MESSAGE  "#WELCOME#"; or "#FAILURE#", and the server hangs up
//! client -> server  MESSAGE  "#CHALLENGE#" "{sha256}" 40 random bytes     (deliver_challenge)
//! server -> client  MESSAGE  "{sha256}" HMAC-SHA256(key, "{sha256}" + those 40 bytes)
//!                                                                         (answer_challenge)
//! client -> server  MESSAGE  "#WELCOME#"; or "#FAILURE#", and the client gives up
//! client -> server  REQUEST  2 "RQ", 2 flags, 4 number of descriptors
//!                            + SCM_RIGHTS: payload pipe, parent sentinel, the descriptors
//!                              the payload refers to, then [exit pipe] (one order with a
//!                              spawned child's, `launch/payload.rs`)
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
//! process. The server challenges first, as CPython's does, so it computes nothing with the key
//! for a peer that has not proved it holds it; the client answers first, as `connection.Client`
//! does, and sends its REQUEST and descriptors only to a server that has answered its own
//! challenge. The client takes a key of any length (HMAC does): `ForkServer._forkserver_authkey`
//! sets the key it presents, as in CPython, whose tests present a wrong one.
//!
//! Of CPython's digests both sides use and take only `{sha256}`, the one CPython's
//! `deliver_challenge` asks for by default: a challenge without that prefix, for another digest
//! or in CPython's legacy HMAC-MD5 protocol (the only one Python 3.11 and older speak) is
//! refused, and so is a digest of another kind. A peer that sends anything else, or does not
//! finish the handshake and its REQUEST within `HANDSHAKE_TIMEOUT`, is dropped; a wrong digest is
//! answered `#FAILURE#` first, as CPython answers it.

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
const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// The prefix of a challenge's message and of a digest: the only digest either side uses.
const SHA256: &[u8] = b"{sha256}";
/// CPython's `MESSAGE_LENGTH`: the random bytes of a challenge.
const NONCE_LEN: usize = 40;
/// A challenge's message (what follows `#CHALLENGE#`, and what its digest covers).
const CHALLENGE_LEN: usize = SHA256.len() + NONCE_LEN;
/// CPython's `_MD5ONLY_MESSAGE_LENGTH`: a shorter challenge is refused, and one of exactly this
/// length is CPython's legacy HMAC-MD5 protocol.
const LEGACY_CHALLENGE_LEN: usize = 20;
/// The longest MESSAGE either side takes (CPython's `recv_bytes(256)`).
const MAX_MESSAGE: usize = 256;
/// A MESSAGE's length prefix.
const LENGTH_LEN: usize = 4;
const HEADER_LEN: usize = 8;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a live server to authenticate it and answer (a server that is
/// stopped or out of descriptors does not answer).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// REQUEST flag: the exit pipe's write end comes last (kernels without pidfd).
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

/// Why a handshake ended without a request. The client reports each as CPython's
/// `answer_challenge` and `deliver_challenge` do (`client.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer's digest for our challenge is wrong, or the peer does not speak this protocol.
    Authentication,
    /// The peer did not welcome our digest: it does not take our key.
    Rejected,
    /// The server's first message is not a challenge: that message.
    NotChallenge(Vec<u8>),
    /// The server's challenge is too short: its length (after `#CHALLENGE#`).
    ShortChallenge(usize),
    /// The server's challenge asks for another digest than `{sha256}`: the challenge.
    UnsupportedDigest(Vec<u8>),
    Os(Errno),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Self {
        Refused::Os(e)
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac
}

/// The answer to a challenge's message: `{sha256}` and its HMAC, which covers the prefix too
/// (CPython's `_create_response`).
fn digest(key: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut digest = SHA256.to_vec();
    digest.extend_from_slice(&hmac(key, challenge).finalize().into_bytes());
    digest
}

/// Whether `response` is the answer to `challenge` (CPython's `_verify_challenge`, for
/// `{sha256}` only), compared in constant time.
fn verify(key: &[u8], challenge: &[u8], response: &[u8]) -> bool {
    response
        .strip_prefix(SHA256)
        .is_some_and(|mac| hmac(key, challenge).verify_slice(mac).is_ok())
}

/// Whether this protocol answers a challenge with this message: `{sha256}`, and not of the
/// lengths CPython's `_get_digest_name_and_payload` takes for the legacy protocol.
fn answerable(challenge: &[u8]) -> bool {
    challenge.len() > LEGACY_CHALLENGE_LEN && challenge.starts_with(SHA256)
}

/// `{sha256}` and 40 random bytes (CPython's `deliver_challenge`).
fn new_challenge() -> nix::Result<[u8; CHALLENGE_LEN]> {
    let mut challenge = [0; CHALLENGE_LEN];
    challenge[..SHA256.len()].copy_from_slice(SHA256);
    random_bytes(&mut challenge[SHA256.len()..])?;
    Ok(challenge)
}

pub fn new_key() -> nix::Result<Key> {
    let mut key = [0; KEY_LEN];
    random_bytes(&mut key)?;
    Ok(key)
}

/// One MESSAGE made of `parts`, framed as `Connection.send_bytes` frames it.
fn message(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut message = Vec::with_capacity(LENGTH_LEN + len);
    message.extend_from_slice(&(len as i32).to_be_bytes());
    for part in parts {
        message.extend_from_slice(part);
    }
    message
}

fn send_message(conn: BorrowedFd<'_>, parts: &[&[u8]]) -> nix::Result<()> {
    write_all(conn, &message(parts))
}

/// The length of a MESSAGE from its prefix, if it is one this protocol takes.
fn message_len(prefix: [u8; LENGTH_LEN]) -> Option<usize> {
    usize::try_from(i32::from_be_bytes(prefix))
        .ok()
        .filter(|&len| len <= MAX_MESSAGE)
}

/// Reads one MESSAGE before `deadline`: `EPROTO` for one longer than `MAX_MESSAGE` (left
/// unread), `ECONNRESET` at end of stream.
fn recv_message(conn: BorrowedFd<'_>, deadline: Option<Instant>) -> nix::Result<Vec<u8>> {
    let mut prefix = [0; LENGTH_LEN];
    read_exact(conn, &mut prefix, deadline)?;
    let mut message = vec![0; message_len(prefix).ok_or(Errno::EPROTO)?];
    read_exact(conn, &mut message, deadline)?;
    Ok(message)
}

/// What a client asks for: the descriptors, and the REQUEST flags.
pub struct Request {
    pub flags: u16,
    pub fds: Vec<OwnedFd>,
}

/// Where the server's side of a connection is: what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The client's digest for the server's challenge.
    Digest,
    /// The client's challenge.
    Challenge,
    /// The client's verdict on the server's digest.
    Verdict,
    /// The REQUEST header, and the descriptors that come with it.
    Request,
}

/// The server's side of one connection, up to and including the request, driven by
/// readiness so that a slow or silent peer holds up nobody else.
pub struct Handshake {
    /// The server's challenge (the message after `#CHALLENGE#`).
    challenge: [u8; CHALLENGE_LEN],
    stage: Stage,
    /// The MESSAGE being read, its length prefix first; or the REQUEST header.
    buf: [u8; LENGTH_LEN + MAX_MESSAGE],
    filled: usize,
    /// The length of the MESSAGE being read, once its prefix is in.
    len: Option<usize>,
    fds: Vec<OwnedFd>,
    pub deadline: Instant,
}

pub enum Progress {
    /// Waiting for the peer.
    Pending,
    Done(Request),
}

impl Handshake {
    /// Sends the server's challenge on a new connection.
    pub fn start(conn: BorrowedFd<'_>) -> Result<Self, Refused> {
        let challenge = new_challenge()?;
        // A fresh connection's buffer takes it whole: this does not block.
        send_message(conn, &[CHALLENGE, &challenge])?;
        Ok(Handshake {
            challenge,
            stage: Stage::Digest,
            buf: [0; LENGTH_LEN + MAX_MESSAGE],
            filled: 0,
            len: None,
            fds: Vec::new(),
            deadline: Instant::now() + HANDSHAKE_TIMEOUT,
        })
    }

    /// How many bytes of `buf` the current stage reads (no further: the REQUEST's descriptors
    /// come with its first byte, which must not be read by a plain read, which drops them).
    fn want(&self) -> usize {
        match (self.stage, self.len) {
            (Stage::Request, _) => HEADER_LEN,
            (_, None) => LENGTH_LEN,
            (_, Some(len)) => LENGTH_LEN + len,
        }
    }

    /// Takes in what the peer has sent so far; call when `conn` is readable.
    pub fn advance(&mut self, conn: BorrowedFd<'_>, key: &Key) -> Result<Progress, Refused> {
        loop {
            let want = self.want();
            let unread = &mut self.buf[self.filled..want];
            let read = if self.stage == Stage::Request {
                recv_some_with_fds(conn, unread).map(|(n, fds)| {
                    self.fds.extend(fds);
                    n
                })
            } else {
                read_some(conn, unread)
            };
            match read {
                Ok(n) => self.filled += n,
                Err(Errno::EAGAIN) => return Ok(Progress::Pending),
                Err(e) => return Err(Refused::Os(e)),
            }
            if self.filled < want {
                continue;
            }
            if self.stage == Stage::Request {
                return self.request().map(Progress::Done);
            }
            if self.len.is_none() {
                let prefix = self.buf[..LENGTH_LEN].try_into().unwrap();
                self.len = Some(message_len(prefix).ok_or(Refused::Authentication)?);
                if self.want() > self.filled {
                    continue;
                }
            }
            let next = self.take(conn, key, &self.buf[LENGTH_LEN..want])?;
            self.stage = next;
            self.filled = 0;
            self.len = None;
        }
    }

    /// Acts on a whole MESSAGE of the handshake: the next stage.
    fn take(&self, conn: BorrowedFd<'_>, key: &Key, message: &[u8]) -> Result<Stage, Refused> {
        match self.stage {
            Stage::Digest if verify(key, &self.challenge, message) => {
                send_message(conn, &[WELCOME])?;
                Ok(Stage::Challenge)
            }
            Stage::Digest => {
                // As CPython's `deliver_challenge`: the client learns that its digest was
                // rejected (a peer gone meanwhile does not need to).
                let _ = send_message(conn, &[FAILURE]);
                Err(Refused::Authentication)
            }
            Stage::Challenge => {
                let challenge = message
                    .strip_prefix(CHALLENGE)
                    .filter(|challenge| answerable(challenge))
                    .ok_or(Refused::Authentication)?;
                send_message(conn, &[&digest(key, challenge)])?;
                Ok(Stage::Verdict)
            }
            Stage::Verdict if message == WELCOME => Ok(Stage::Request),
            Stage::Verdict => Err(Refused::Rejected),
            Stage::Request => unreachable!("the REQUEST header is not a MESSAGE"),
        }
    }

    fn request(&mut self) -> Result<Request, Refused> {
        let header = &self.buf[..HEADER_LEN];
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

/// The client's side, as `connection.Client` authenticates (`answer_challenge`, then
/// `deliver_challenge`) with `key`, whatever its length; then the request.
pub fn request(
    conn: BorrowedFd<'_>,
    key: &[u8],
    flags: u16,
    fds: &[BorrowedFd<'_>],
) -> Result<(), Refused> {
    let deadline = Some(Instant::now() + CLIENT_TIMEOUT);
    let message = recv_message(conn, deadline)?;
    let Some(challenge) = message.strip_prefix(CHALLENGE) else {
        return Err(Refused::NotChallenge(message));
    };
    if challenge.len() < LEGACY_CHALLENGE_LEN {
        return Err(Refused::ShortChallenge(challenge.len()));
    }
    if !answerable(challenge) {
        return Err(Refused::UnsupportedDigest(challenge.to_vec()));
    }
    send_message(conn, &[&digest(key, challenge)])?;
    // A server that does not take our digest says `#FAILURE#` and hangs up.
    match recv_message(conn, deadline) {
        Ok(verdict) if verdict == WELCOME => {}
        Ok(_) | Err(Errno::ECONNRESET | Errno::EPROTO) => return Err(Refused::Rejected),
        Err(e) => return Err(Refused::Os(e)),
    }
    let ours = new_challenge()?;
    send_message(conn, &[CHALLENGE, &ours])?;
    let proved = match recv_message(conn, deadline) {
        Ok(response) => verify(key, &ours, &response),
        Err(Errno::EPROTO) => false,
        Err(e) => return Err(Refused::Os(e)),
    };
    if !proved {
        // As CPython's `deliver_challenge`; a server gone meanwhile does not need to know.
        let _ = send_message(conn, &[FAILURE]);
        return Err(Refused::Authentication);
    }
    send_message(conn, &[WELCOME])?;
    let mut header = [0; HEADER_LEN];
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

#[cfg(test)]
mod tests {
    //! Properties of both sides of the wire format, over real socketpairs: what the kernel does
    //! with descriptors sent among arbitrary bytes is part of what a peer can do to the server.
    //! The handshake is checked against plain models of each side read off the module header
    //! (`server_model`, `client_model`), and against bytes CPython's `connection` module made.

    use std::ops::Range;
    use std::os::fd::{AsFd, AsRawFd};

    use nix::fcntl::OFlag;
    use nix::sys::socket::{shutdown, socketpair, AddressFamily, Shutdown, SockFlag, SockType};
    use nix::sys::stat::fstat;
    use nix::unistd::{pipe2, read};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::sys::poll::{wait_readable, Readiness};

    /// The server's challenge as it goes on the wire: a MESSAGE of `#CHALLENGE#` and 48 bytes.
    const CHALLENGE_MESSAGE_LEN: usize = LENGTH_LEN + CHALLENGE.len() + CHALLENGE_LEN;

    fn socket_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    /// A descriptor to send: the write end of a pipe of its own, whose read end tells whether
    /// every copy, wherever one was received, is closed. Unlike a count of /proc/self/fd, other
    /// tests opening descriptors on other threads meanwhile cannot disturb it.
    struct Probe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Probe {
        fn new() -> Self {
            let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
            Probe { read, write }
        }

        fn is(&self, fd: &OwnedFd) -> bool {
            let (a, b) = (fstat(fd).unwrap(), fstat(&self.write).unwrap());
            (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
        }

        /// Closes the test's own copy: true when no other is left (end of file, not `EAGAIN`).
        fn all_closed(self) -> bool {
            drop(self.write);
            read(&self.read, &mut [0]) == Ok(0)
        }
    }

    fn probes(count: usize) -> Vec<Probe> {
        (0..count).map(|_| Probe::new()).collect()
    }

    fn borrowed(probes: &[Probe]) -> Vec<BorrowedFd<'_>> {
        probes.iter().map(|p| p.write.as_fd()).collect()
    }

    /// Everything there is to read on `conn` now, without waiting, and whether descriptors came.
    fn drain(conn: BorrowedFd<'_>) -> (Vec<u8>, bool) {
        let (mut all, mut with_fds) = (Vec::new(), false);
        let mut buf = [0; 1024];
        while let Ok((n, fds)) = recv_some_with_fds(conn, &mut buf) {
            all.extend_from_slice(&buf[..n]);
            with_fds |= !fds.is_empty();
        }
        (all, with_fds)
    }

    /// `{sha256}` and HMAC-SHA256(key, message), spelled out.
    fn sha256_digest(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .unwrap()
            .chain_update(message)
            .finalize()
            .into_bytes();
        [&b"{sha256}"[..], &mac].concat()
    }

    /// The MESSAGE that starts at `at` in `stream`: the message and where it ends; `Err(Some(n))`
    /// when its length prefix, which ends at n, is not one the protocol takes (negative or more
    /// than 256), `Err(None)` when the stream ends before the message does.
    fn message_at(stream: &[u8], at: usize) -> Result<(&[u8], usize), Option<usize>> {
        let prefix = stream.get(at..at + 4).ok_or(None)?;
        let len = i32::from_be_bytes(prefix.try_into().unwrap());
        if !(0..=256).contains(&len) {
            return Err(Some(at + 4));
        }
        let end = at + 4 + len as usize;
        stream.get(at + 4..end).map(|m| (m, end)).ok_or(None)
    }

    /// What the server must make of a peer's `stream`, read whole, after sending `challenge`.
    #[derive(Debug, Default)]
    struct ServerModel {
        /// How much of the stream decides: the server is pending until it has all of that.
        /// `None`: the stream ends first.
        decided_at: Option<usize>,
        /// The refusal, if the handshake decides it.
        refused: Option<Refused>,
        /// Where the REQUEST header starts, if the handshake passes.
        header_at: Option<usize>,
        /// What the server sends after its challenge.
        sent: Vec<u8>,
    }

    /// The server's side as the module header tells it: the peer's digest of the challenge
    /// (`#WELCOME#` or `#FAILURE#`), its `{sha256}` challenge of more than 20 bytes (answered with
    /// the digest), its `#WELCOME#`, then the REQUEST header.
    fn server_model(key: &[u8], challenge: &[u8], stream: &[u8]) -> ServerModel {
        let mut model = ServerModel::default();
        let mut at = 0;
        for step in 0..3 {
            let (received, end) = match message_at(stream, at) {
                Ok(next) => next,
                Err(None) => return model,
                Err(Some(decided_at)) => {
                    model.decided_at = Some(decided_at);
                    model.refused = Some(Refused::Authentication);
                    return model;
                }
            };
            at = end;
            let refused = match step {
                0 => {
                    let right = received == sha256_digest(key, challenge);
                    let verdict = if right {
                        &b"#WELCOME#"[..]
                    } else {
                        b"#FAILURE#"
                    };
                    model.sent.extend(message(&[verdict]));
                    (!right).then_some(Refused::Authentication)
                }
                1 => match received.strip_prefix(b"#CHALLENGE#") {
                    Some(theirs) if theirs.len() > 20 && theirs.starts_with(b"{sha256}") => {
                        model.sent.extend(message(&[&sha256_digest(key, theirs)]));
                        None
                    }
                    _ => Some(Refused::Authentication),
                },
                _ => (received != b"#WELCOME#").then_some(Refused::Rejected),
            };
            if let Some(refused) = refused {
                model.decided_at = Some(at);
                model.refused = Some(refused);
                return model;
            }
        }
        model.header_at = Some(at);
        model.decided_at = (stream.len() >= at + HEADER_LEN).then_some(at + HEADER_LEN);
        model
    }

    /// Runs the server's side until it decides; a handshake that hangs fails the test.
    fn drive(
        handshake: &mut Handshake,
        conn: BorrowedFd<'_>,
        key: &Key,
    ) -> Result<Request, Refused> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Readiness::TimedOut = wait_readable(conn.as_raw_fd(), Some(deadline)).unwrap() {
                panic!("the handshake did not finish");
            }
            if let Progress::Done(request) = handshake.advance(conn, key)? {
                return Ok(request);
            }
        }
    }

    /// The real client (`request`, in a thread, with `client_key`, `flags` and the `sent`
    /// descriptors) against the server's `Handshake` (with `server_key`), which hangs up once
    /// it is done, as the server does: the client's outcome and the server's. Everything but
    /// the received request is closed on return.
    fn exchange(
        server_key: &Key,
        client_key: &[u8],
        flags: u16,
        sent: &[Probe],
    ) -> (Result<(), Refused>, Result<Request, Refused>) {
        let (server, client) = socket_pair();
        let mut handshake = Handshake::start(server.as_fd()).unwrap();
        std::thread::scope(|scope| {
            // The client's end goes with it, so that a client that gives up is a hang-up.
            let client = scope.spawn(|| {
                let client = client;
                request(client.as_fd(), client_key, flags, &borrowed(sent))
            });
            let received = drive(&mut handshake, server.as_fd(), server_key);
            drop((handshake, server));
            (client.join().unwrap(), received)
        })
    }

    /// What the module header says a REQUEST must be, given the descriptors that came with it.
    fn valid_request(flags: u16, count: usize, received: usize) -> bool {
        let links = 2 + usize::from(flags & FLAG_EXIT_PIPE != 0);
        flags & !(FLAG_EXIT_PIPE | FLAG_NEW_GROUP) == 0 && count == received && count >= links
    }

    /// Mostly known flags, so that both valid and invalid requests are common.
    fn flags() -> impl Strategy<Value = u16> {
        prop_oneof![3 => 0..4u16, 1 => any::<u16>()]
    }

    /// One MESSAGE of a handshake: what the peer that holds the key sends there, or something
    /// else.
    #[derive(Clone, Debug)]
    enum Part {
        /// The digest of the challenge (the server's or the client's), with this key.
        Digest(Option<Key>),
        /// The right HMAC under another digest's name.
        Renamed(&'static [u8]),
        /// `#CHALLENGE#{sha256}` and these bytes (40 from CPython: shorter and longer too).
        Challenge(Vec<u8>),
        Welcome,
        Failure,
        /// A MESSAGE of these bytes.
        Message(Vec<u8>),
        /// These bytes as they are, not framed.
        Raw(Vec<u8>),
    }

    impl Part {
        /// The bytes on the wire, where `key` is the right key and `challenge` the message to
        /// digest.
        fn bytes(&self, key: &[u8], challenge: &[u8]) -> Vec<u8> {
            match self {
                Part::Digest(None) => message(&[&sha256_digest(key, challenge)]),
                Part::Digest(Some(other)) => message(&[&sha256_digest(other, challenge)]),
                Part::Renamed(name) => {
                    message(&[name, &sha256_digest(key, challenge)[SHA256.len()..]])
                }
                Part::Challenge(nonce) => message(&[b"#CHALLENGE#{sha256}", nonce]),
                Part::Welcome => message(&[b"#WELCOME#"]),
                Part::Failure => message(&[b"#FAILURE#"]),
                Part::Message(data) => message(&[data]),
                Part::Raw(bytes) => bytes.clone(),
            }
        }
    }

    /// Something else than the protocol's MESSAGE at that point: a MESSAGE that starts like one
    /// of the protocol's, some of them just short of or just past the 256 bytes the protocol
    /// takes; plain bytes; `#FAILURE#`.
    fn other(weight: u32) -> impl Strategy<Value = Part> {
        const PREFIXES: &[&[u8]] = &[
            b"",
            b"#CHALLENGE#",
            b"#CHALLENGE#{sha512}",
            b"{sha256}",
            b"#WELCOME",
        ];
        prop_oneof![
            weight => (proptest::sample::select(PREFIXES), vec(any::<u8>(), 0..80))
                .prop_map(|(prefix, data)| Part::Message([prefix, &data].concat())),
            1 => (proptest::sample::select(PREFIXES), 255..=258usize, any::<u8>())
                .prop_map(|(prefix, len, fill)| {
                    let mut data = prefix.to_vec();
                    data.resize(len, fill);
                    Part::Message(data)
                }),
            weight => vec(any::<u8>(), 0..100).prop_map(Part::Raw),
            1 => Just(Part::Failure),
        ]
    }

    /// A digest of a challenge: mostly the right one.
    fn digest_part() -> impl Strategy<Value = Part> {
        prop_oneof![
            6 => Just(Part::Digest(None)),
            1 => any::<Key>().prop_map(|k| Part::Digest(Some(k))),
            1 => proptest::sample::select(vec![&b"{sha512}"[..], b"{sha25}", b"{SHA256}", b""])
                .prop_map(Part::Renamed),
            1 => other(1),
        ]
    }

    /// A challenge: mostly CPython's (40 random bytes).
    fn challenge_part() -> impl Strategy<Value = Part> {
        prop_oneof![
            6 => vec(any::<u8>(), NONCE_LEN).prop_map(Part::Challenge),
            2 => vec(any::<u8>(), 0..60).prop_map(Part::Challenge),
            1 => other(1),
        ]
    }

    fn verdict_part() -> impl Strategy<Value = Part> {
        prop_oneof![6 => Just(Part::Welcome), 1 => other(1)]
    }

    /// The part of the stream after the handshake: plain bytes, or shaped like a REQUEST header
    /// so that valid requests are not left to chance.
    #[derive(Clone, Debug)]
    enum Tail {
        Bytes(Vec<u8>),
        /// `count: None` stands for the number of descriptors the header arrives with.
        Header {
            magic: [u8; 2],
            flags: u16,
            count: Option<u32>,
            rest: Vec<u8>,
        },
    }

    fn tail() -> impl Strategy<Value = Tail> {
        prop_oneof![
            1 => vec(any::<u8>(), 0..100).prop_map(Tail::Bytes),
            3 => (
                prop_oneof![3 => Just(*b"RQ"), 1 => any::<[u8; 2]>()],
                flags(),
                prop_oneof![
                    2 => Just(None),
                    1 => (0..6u32).prop_map(Some),
                    1 => any::<u32>().prop_map(Some)
                ],
                vec(any::<u8>(), 0..8),
            )
                .prop_map(|(magic, flags, count, rest)| Tail::Header {
                    magic,
                    flags,
                    count,
                    rest
                }),
        ]
    }

    /// How the stream is cut into writes: each one's length and how many descriptors go with
    /// it (what is left after the plan goes in one last write without any), and whether a write
    /// may straddle the end of the handshake, which a real client's never does.
    fn plan() -> impl Strategy<Value = (Vec<(usize, usize)>, bool)> {
        (
            vec((prop_oneof![1..9usize, 1..80usize], 0..5usize), 0..16),
            any::<bool>(),
        )
    }

    fn cut(bytes: Range<usize>, plan: &[(usize, usize)]) -> Vec<(Range<usize>, usize)> {
        let mut writes = Vec::new();
        let mut at = bytes.start;
        for &(size, fds) in plan {
            if at == bytes.end {
                break;
            }
            let end = (at + size).min(bytes.end);
            writes.push((at..end, fds));
            at = end;
        }
        if at < bytes.end {
            writes.push((at..bytes.end, 0));
        }
        writes
    }

    /// What the client must make of a server's `stream`, read whole.
    #[derive(Debug)]
    struct ClientModel {
        refused: Refused,
        /// Its digest of the server's challenge, if it sends one.
        digest: Vec<u8>,
        /// Whether it then sends its own challenge (once welcomed).
        challenges: bool,
        /// Whether it then says `#FAILURE#`: to any answer, since no stream written in advance
        /// answers a random challenge.
        fails: bool,
    }

    /// The client's side as the module header tells it, with CPython's reasons for refusing.
    fn client_model(key: &[u8], stream: &[u8]) -> ClientModel {
        let refused = |refused| ClientModel {
            refused,
            digest: Vec::new(),
            challenges: false,
            fails: false,
        };
        let (received, end) = match message_at(stream, 0) {
            Ok(first) => first,
            Err(None) => return refused(Refused::Os(Errno::ECONNRESET)),
            Err(Some(_)) => return refused(Refused::Os(Errno::EPROTO)),
        };
        let Some(challenge) = received.strip_prefix(b"#CHALLENGE#") else {
            return refused(Refused::NotChallenge(received.to_vec()));
        };
        if challenge.len() < 20 {
            return refused(Refused::ShortChallenge(challenge.len()));
        }
        if challenge.len() == 20 || !challenge.starts_with(b"{sha256}") {
            return refused(Refused::UnsupportedDigest(challenge.to_vec()));
        }
        let mut model = refused(Refused::Rejected);
        model.digest = message(&[&sha256_digest(key, challenge)]);
        if let Ok((b"#WELCOME#", end)) = message_at(stream, end) {
            model.challenges = true;
            model.fails = !matches!(message_at(stream, end), Err(None));
            model.refused = if model.fails {
                Refused::Authentication
            } else {
                Refused::Os(Errno::ECONNRESET)
            };
        }
        model
    }

    #[test]
    fn bytes_as_cpython_makes_them() {
        // CPython 3.12's `Connection.send_bytes(b'#CHALLENGE#' + challenge)` and
        // `_create_response(key, challenge)`, for a fixed challenge and two keys.
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let key: Vec<u8> = (0..32).collect();
        let challenge = [&b"{sha256}"[..], &(100..140).collect::<Vec<u8>>()].concat();
        assert_eq!(
            message(&[CHALLENGE, &challenge]),
            hex(
                "0000003b234348414c4c454e4745237b7368613235367d6465666768696a6b6c6d6e6f70717273\
                 7475767778797a7b7c7d7e7f808182838485868788898a8b"
            )
        );
        assert_eq!(
            message(&[&digest(&key, &challenge)]),
            hex(
                "000000287b7368613235367d473e9505756ab315904796a7d6e41c5ce3c6265af2d8040e28ae62d8\
                 da9717b2"
            )
        );
        assert_eq!(
            digest(b"TTTTTTT", &challenge),
            hex("7b7368613235367d7b249e84ab1249e81cc2bf83cc4aae18af70a5d14c8a2cabf476c8b75faac3fd")
        );
        assert!(verify(&key, &challenge, &digest(&key, &challenge)));
        assert!(!verify(b"TTTTTTT", &challenge, &digest(&key, &challenge)));
    }

    proptest! {
        // More cases than proptest's 256: this is the server's fuzz target, and a case costs
        // well under a millisecond.
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a peer sends after the challenge, in whatever writes, with descriptors or
        /// none: the server does what `server_model` says, and when. It stays `Pending` until
        /// it has the bytes that decide; it sends `#WELCOME#` or `#FAILURE#` for the peer's
        /// digest, its own digest only after `#WELCOME#` and a `{sha256}` challenge; it takes a
        /// request only after the peer's `#WELCOME#` and a valid header, with exactly the
        /// descriptors that came with the header, in order. Anything else is refused (a peer
        /// that hangs up early: `ECONNRESET`), and no descriptor outlives the connection.
        #[test]
        fn handshake_takes_any_stream(
            key in any::<Key>(),
            digest in digest_part(),
            challenge in challenge_part(),
            verdict in verdict_part(),
            tail in tail(),
            (plan, straddle) in plan(),
        ) {
            // Its probes see every copy of what they sent closed only if no child holds one.
            let _quiet = crate::sys::testutil::no_new_processes();
            let (server, client) = socket_pair();
            let mut handshake = Handshake::start(server.as_fd()).unwrap();
            let (first, _) = drain(client.as_fd());
            prop_assert_eq!(first.len(), CHALLENGE_MESSAGE_LEN);
            prop_assert_eq!(&first[..4], &59i32.to_be_bytes()[..]);
            prop_assert_eq!(&first[4..4 + 19], &b"#CHALLENGE#{sha256}"[..]);
            let ours = &first[4 + CHALLENGE.len()..];

            let mut stream = digest.bytes(&key, ours);
            // The client's challenge is digested by the server, not by the client: any
            // digest it carries is beside the point.
            stream.extend(challenge.bytes(&key, b""));
            stream.extend(verdict.bytes(&key, b""));
            let tail_at = stream.len();
            let mut matching_count = false;
            match &tail {
                Tail::Bytes(bytes) => stream.extend_from_slice(bytes),
                Tail::Header { magic, flags, count, rest } => {
                    matching_count = count.is_none();
                    stream.extend_from_slice(magic);
                    stream.extend_from_slice(&flags.to_le_bytes());
                    stream.extend_from_slice(&count.unwrap_or(0).to_le_bytes());
                    stream.extend_from_slice(rest);
                }
            }
            let model = server_model(&key, ours, &stream);
            let writes = match model.header_at {
                Some(header_at) if !straddle => {
                    let mut writes = cut(0..header_at, &plan);
                    writes.extend(cut(header_at..stream.len(), &plan));
                    writes
                }
                _ => cut(0..stream.len(), &plan),
            };
            let sent: Vec<Vec<Probe>> = writes.iter().map(|(_, fds)| probes(*fds)).collect();
            // Before the header the server reads without taking descriptors, so the kernel
            // closes them; then a write's descriptors come with its first byte read, and the
            // server reads no further than the header.
            let header = model.header_at.map_or(0..0, |at| at..at + HEADER_LEN);
            let with_header: Vec<&Probe> = writes
                .iter()
                .zip(&sent)
                .filter(|((range, _), _)| header.contains(&range.start))
                .flat_map(|(_, probes)| probes)
                .collect();
            if matching_count && model.header_at == Some(tail_at) {
                stream[tail_at + 4..tail_at + HEADER_LEN]
                    .copy_from_slice(&(with_header.len() as u32).to_le_bytes());
            }
            // The flags of the request the server must take, if any.
            let accepted = stream
                .get(header.clone())
                .filter(|h| model.refused.is_none() && h[..2] == *b"RQ")
                .map(|h| {
                    let count = u32::from_le_bytes(h[4..].try_into().unwrap()) as usize;
                    (u16::from_le_bytes([h[2], h[3]]), count)
                })
                .filter(|&(flags, count)| valid_request(flags, count, with_header.len()))
                .map(|(flags, _)| flags);
            let expected = match (model.decided_at, &model.refused) {
                (None, _) => Err(Refused::Os(Errno::ECONNRESET)),
                (Some(_), Some(refused)) => Err(refused.clone()),
                (Some(_), None) => accepted.ok_or(Refused::Authentication),
            };
            let decided_at = model.decided_at.unwrap_or(usize::MAX);

            let mut outcome = None;
            for ((range, _), probes) in writes.iter().zip(&sent) {
                send_with_fds(client.as_fd(), &stream[range.clone()], &borrowed(probes)).unwrap();
                match handshake.advance(server.as_fd(), &key) {
                    Ok(Progress::Pending) => {
                        prop_assert!(range.end < decided_at, "pending at {}", range.end);
                    }
                    Ok(Progress::Done(request)) => {
                        prop_assert!(range.end >= decided_at);
                        outcome = Some(Ok(request));
                        break;
                    }
                    Err(refused) => {
                        prop_assert!(range.end >= decided_at, "{:?} at {}", refused, range.end);
                        outcome = Some(Err(refused));
                        break;
                    }
                }
            }
            let (from_server, with_fds) = drain(client.as_fd());
            prop_assert_eq!(from_server, model.sent);
            prop_assert!(!with_fds);
            drop(client);
            let outcome = outcome.unwrap_or_else(|| match handshake.advance(server.as_fd(), &key) {
                Ok(Progress::Pending) => panic!("still pending once the peer is gone"),
                Ok(Progress::Done(request)) => Ok(request),
                Err(refused) => Err(refused),
            });
            match (&outcome, &expected) {
                (Ok(request), Ok(flags)) => {
                    prop_assert_eq!(request.flags, *flags);
                    prop_assert_eq!(request.fds.len(), with_header.len());
                    for (fd, probe) in request.fds.iter().zip(&with_header) {
                        prop_assert!(probe.is(fd));
                    }
                }
                (Err(refused), Err(expected)) => prop_assert_eq!(refused, expected),
                (outcome, expected) => prop_assert!(
                    false,
                    "{:?} instead of {:?}",
                    outcome.as_ref().map(|r| r.flags),
                    expected
                ),
            }
            drop((outcome, handshake, server));
            for probe in sent.into_iter().flatten() {
                prop_assert!(probe.all_closed(), "a descriptor sent was left open");
            }
        }
    }

    proptest! {
        /// The client's REQUEST reaches the server as sent: known flags with at least the
        /// descriptors they link are a request with those flags and those descriptors, in
        /// order; anything else is refused. None is left open afterwards.
        #[test]
        fn client_request_reaches_server(
            key in any::<Key>(),
            flags in flags(),
            count in 0..6usize,
        ) {
            // Its probes see every copy of what they sent closed only if no child holds one.
            let _quiet = crate::sys::testutil::no_new_processes();
            let sent = probes(count);
            let (asked, received) = exchange(&key, &key, flags, &sent);
            prop_assert!(asked.is_ok(), "{:?}", asked);
            match received {
                Ok(request) => {
                    prop_assert!(valid_request(flags, count, count));
                    prop_assert_eq!(request.flags, flags);
                    prop_assert_eq!(request.fds.len(), count);
                    for (fd, probe) in request.fds.iter().zip(&sent) {
                        prop_assert!(probe.is(fd));
                    }
                }
                Err(Refused::Authentication) => prop_assert!(!valid_request(flags, count, count)),
                Err(refused) => prop_assert!(false, "refused with {:?}", refused),
            }
            for probe in sent {
                prop_assert!(probe.all_closed());
            }
        }

        /// A client and a server holding different keys (the client's of any length) never get
        /// as far as a request: the server finds the client's digest wrong and says
        /// `#FAILURE#`, which the client reports as `Rejected`.
        #[test]
        fn different_keys_are_refused(
            server_key in any::<Key>(),
            client_key in prop_oneof![
                any::<Key>().prop_map(|k| k.to_vec()),
                vec(any::<u8>(), 0..100),
            ],
            count in 0..4usize,
        ) {
            // Its probes see every copy of what they sent closed only if no child holds one.
            let _quiet = crate::sys::testutil::no_new_processes();
            prop_assume!(server_key[..] != client_key[..]);
            let sent = probes(count);
            let (asked, received) = exchange(&server_key, &client_key, 0, &sent);
            prop_assert!(matches!(received, Err(Refused::Authentication)));
            prop_assert!(matches!(asked, Err(Refused::Rejected)), "{:?}", asked);
            for probe in sent {
                prop_assert!(probe.all_closed());
            }
        }

        /// Against a server that sends any stream and stops, the client does what
        /// `client_model` says: it refuses with CPython's reasons, sends its digest only for a
        /// `{sha256}` challenge, its own challenge only once welcomed, `#FAILURE#` for a wrong
        /// answer to it, and never a REQUEST or a descriptor to a server that has not answered
        /// it right.
        #[test]
        fn client_refuses_unproved_server(
            key in prop_oneof![
                any::<Key>().prop_map(|k| k.to_vec()),
                vec(any::<u8>(), 0..100),
            ],
            challenge in challenge_part(),
            verdict in verdict_part(),
            answer in prop_oneof![
                3 => any::<Key>().prop_map(|k| Part::Digest(Some(k))),
                1 => other(1),
            ],
            cut_at in any::<proptest::sample::Index>(),
            count in 0..4usize,
        ) {
            // Its probes see every copy of what they sent closed only if no child holds one.
            let _quiet = crate::sys::testutil::no_new_processes();
            let mut stream = challenge.bytes(&key, b"");
            stream.extend(verdict.bytes(&key, b""));
            stream.extend(answer.bytes(&key, b"never this"));
            stream.truncate(cut_at.index(stream.len() + 1));
            let (server, client) = socket_pair();
            write_all(server.as_fd(), &stream).unwrap();
            shutdown(server.as_raw_fd(), Shutdown::Write).unwrap();
            let sent = probes(count);
            let asked = request(client.as_fd(), &key, FLAG_EXIT_PIPE, &borrowed(&sent));
            let model = client_model(&key, &stream);
            prop_assert_eq!(asked, Err(model.refused));
            let (from_client, with_fds) = drain(server.as_fd());
            prop_assert!(!with_fds);
            let rest = from_client.strip_prefix(&model.digest[..]);
            prop_assert!(rest.is_some(), "{:?} is not the digest {:?}", from_client, model.digest);
            let mut rest = rest.unwrap();
            if model.challenges {
                prop_assert!(rest.len() >= CHALLENGE_MESSAGE_LEN);
                prop_assert_eq!(&rest[..4], &59i32.to_be_bytes()[..]);
                prop_assert_eq!(&rest[4..4 + 19], &b"#CHALLENGE#{sha256}"[..]);
                rest = &rest[CHALLENGE_MESSAGE_LEN..];
            }
            let failure = if model.fails { message(&[FAILURE]) } else { Vec::new() };
            prop_assert_eq!(rest, &failure[..]);
            drop((server, client));
            for probe in sent {
                prop_assert!(probe.all_closed());
            }
        }

        /// A STATUS reads back as sent, for every exit code and usage; before it is sent the
        /// read does not wait (`EAGAIN`).
        #[test]
        fn exit_status_round_trips(code in any::<i32>(), usage in any::<(u64, u64, u64)>()) {
            let usage = Usage { max_rss_kib: usage.0, user_us: usage.1, system_us: usage.2 };
            let (server, client) = socket_pair();
            prop_assert_eq!(read_exit_status(client.as_fd()), Err(Errno::EAGAIN));
            send_exit_status(server.as_fd(), code, usage).unwrap();
            prop_assert_eq!(read_exit_status(client.as_fd()), Ok((code, usage)));
        }

        /// Any 40 bytes: a STATUS exactly when the tag is STATUS's and the code fits an i32,
        /// decoded field by field; otherwise `EPROTO`. Read from a socket, the same; cut short
        /// by the server going away, `ECONNRESET`.
        #[test]
        fn any_status_bytes(
            mut bytes in vec(any::<u8>(), STATUS_LEN),
            tag in prop_oneof![Just(TAG_STATUS), any::<u32>()],
            code in prop_oneof![any::<i32>().prop_map(i64::from), any::<i64>()],
            cut_at in 0..=STATUS_LEN,
        ) {
            bytes[..4].copy_from_slice(&tag.to_le_bytes());
            bytes[8..16].copy_from_slice(&code.to_le_bytes());
            let status: [u8; STATUS_LEN] = bytes.clone().try_into().unwrap();
            let field =
                |i: usize| u64::from_le_bytes(bytes[16 + 8 * i..24 + 8 * i].try_into().unwrap());
            let expected = match i32::try_from(code) {
                Ok(code) if tag == TAG_STATUS => Ok((
                    code,
                    Usage { max_rss_kib: field(0), user_us: field(1), system_us: field(2) },
                )),
                _ => Err(Errno::EPROTO),
            };
            prop_assert_eq!(parse_exit_status(&status), expected);

            let (server, client) = socket_pair();
            write_all(server.as_fd(), &bytes[..cut_at]).unwrap();
            shutdown(server.as_raw_fd(), Shutdown::Write).unwrap();
            let read = read_exit_status(client.as_fd());
            if cut_at == STATUS_LEN {
                prop_assert_eq!(read, expected);
            } else {
                prop_assert_eq!(read, Err(Errno::ECONNRESET));
            }
        }

        /// Any 16 bytes, with a descriptor or without: a CHILD with a positive pid (and that
        /// descriptor), a FAILED with an errno that fits an i32, or `EPROTO`; cut short,
        /// `ECONNRESET`. A descriptor that is not returned is closed.
        #[test]
        fn any_reply_bytes(
            mut bytes in vec(any::<u8>(), 16),
            tag in prop_oneof![Just(TAG_CHILD), Just(TAG_FAILED), any::<u32>()],
            value in prop_oneof![any::<i32>().prop_map(i64::from), any::<i64>()],
            with_fd in any::<bool>(),
            cut_at in 0..=16usize,
        ) {
            // Its probes see every copy of what they sent closed only if no child holds one.
            let _quiet = crate::sys::testutil::no_new_processes();
            bytes[..4].copy_from_slice(&tag.to_le_bytes());
            bytes[8..].copy_from_slice(&value.to_le_bytes());
            let (server, client) = socket_pair();
            let sent = probes(usize::from(with_fd));
            if cut_at > 0 {
                send_with_fds(server.as_fd(), &bytes[..cut_at], &borrowed(&sent)).unwrap();
            }
            shutdown(server.as_raw_fd(), Shutdown::Write).unwrap();
            let fits = i32::try_from(value).ok();
            match read_reply(client.as_fd()) {
                Ok(Reply::Child(pid, fd)) => {
                    prop_assert!(cut_at == 16 && tag == TAG_CHILD && fits == Some(pid) && pid > 0);
                    prop_assert_eq!(fd.is_some(), with_fd);
                    if let (Some(fd), Some(probe)) = (&fd, sent.first()) {
                        prop_assert!(probe.is(fd));
                    }
                }
                Ok(Reply::Failed(errno)) => {
                    prop_assert!(cut_at == 16 && tag == TAG_FAILED);
                    prop_assert_eq!(Some(errno), fits.map(Errno::from_raw));
                }
                Err(Errno::EPROTO) => {
                    prop_assert!(cut_at == 16);
                    let known = tag == TAG_FAILED || (tag == TAG_CHILD && value > 0);
                    prop_assert!(fits.is_none() || !known);
                }
                Err(Errno::ECONNRESET) => prop_assert!(cut_at < 16),
                Err(e) => prop_assert!(false, "{:?}", e),
            }
            drop((server, client));
            for probe in sent {
                prop_assert!(probe.all_closed());
            }
        }
    }
}
