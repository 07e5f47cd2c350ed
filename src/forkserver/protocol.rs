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

#[cfg(test)]
mod tests {
    //! Properties of both sides of the wire format, over real socketpairs: what the kernel does
    //! with descriptors sent among arbitrary bytes is part of what a peer can do to the server.

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

    const ANSWER_LEN: usize = MAC_LEN + NONCE_LEN;
    const HEADER_LEN: usize = 8;

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

    fn answer(key: &Key, hello: &[u8], client_nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let mut answer = mac(key, b"client", &hello[MAGIC.len()..])
            .finalize()
            .into_bytes()
            .to_vec();
        answer.extend_from_slice(client_nonce);
        answer
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
        client_key: &Key,
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

    /// What follows HELLO from the client.
    #[derive(Clone, Debug)]
    enum Opening {
        /// No ANSWER: arbitrary bytes from the first.
        Garbage,
        /// An ANSWER made with another key.
        WrongKey(Key),
        /// The right ANSWER, so that the arbitrary part is read as the REQUEST header.
        RightKey,
    }

    /// The arbitrary part of the stream: plain bytes, or shaped like a REQUEST header so that
    /// valid requests are not left to chance.
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

    fn opening() -> impl Strategy<Value = Opening> {
        prop_oneof![
            1 => Just(Opening::Garbage),
            1 => any::<Key>().prop_map(Opening::WrongKey),
            3 => Just(Opening::RightKey),
        ]
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
    /// may straddle the end of the ANSWER, which a real client's never does.
    fn plan() -> impl Strategy<Value = (Vec<(usize, usize)>, bool)> {
        (
            vec((prop_oneof![1..9usize, 1..80usize], 0..5usize), 0..12),
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

    proptest! {
        // More cases than proptest's 256: this is the server's fuzz target, and a case costs
        // well under a millisecond.
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a peer sends after HELLO, in whatever writes, with descriptors or none: the
        /// server stays `Pending` until it has the bytes that decide, and then takes a request
        /// only after the right ANSWER and a valid header, with exactly the descriptors that
        /// came with the header, in order. Anything else is refused (a peer that hangs up
        /// early: `ECONNRESET`); the PROOF goes only to a peer that holds the key, and no
        /// descriptor outlives the connection.
        #[test]
        fn handshake_takes_any_stream(
            key in any::<Key>(),
            client_nonce in any::<[u8; NONCE_LEN]>(),
            opening in opening(),
            tail in tail(),
            (plan, straddle) in plan(),
        ) {
            let (server, client) = socket_pair();
            let mut handshake = Handshake::start(server.as_fd()).unwrap();
            let mut hello = [0; MAGIC.len() + NONCE_LEN];
            prop_assert_eq!(read_some(client.as_fd(), &mut hello), Ok(hello.len()));
            prop_assert_eq!(&hello[..MAGIC.len()], &MAGIC[..]);

            let mut stream = match &opening {
                Opening::Garbage => Vec::new(),
                Opening::WrongKey(other) => {
                    prop_assume!(other != &key);
                    answer(other, &hello, &client_nonce)
                }
                Opening::RightKey => answer(&key, &hello, &client_nonce),
            };
            let header_at = stream.len();
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
            let writes = if straddle {
                cut(0..stream.len(), &plan)
            } else {
                let mut writes = cut(0..header_at, &plan);
                writes.extend(cut(header_at..stream.len(), &plan));
                writes
            };
            let sent: Vec<Vec<Probe>> = writes.iter().map(|(_, fds)| probes(*fds)).collect();
            // Before the ANSWER is checked the server reads without taking descriptors, so the
            // kernel closes them; after, a write's descriptors come with its first byte read,
            // and the server reads no further than the header.
            let with_header: Vec<&Probe> = writes
                .iter()
                .zip(&sent)
                .filter(|((range, _), _)| {
                    (ANSWER_LEN..ANSWER_LEN + HEADER_LEN).contains(&range.start)
                })
                .flat_map(|(_, probes)| probes)
                .collect();
            if matching_count {
                stream[header_at + 4..header_at + HEADER_LEN]
                    .copy_from_slice(&(with_header.len() as u32).to_le_bytes());
            }
            let proved = matches!(opening, Opening::RightKey);
            let decided_at = if proved { ANSWER_LEN + HEADER_LEN } else { ANSWER_LEN };
            // The flags of the request the server must take, if any.
            let accepted = stream
                .get(ANSWER_LEN..ANSWER_LEN + HEADER_LEN)
                .filter(|h| proved && h[..2] == *b"RQ")
                .map(|h| {
                    let count = u32::from_le_bytes(h[4..].try_into().unwrap()) as usize;
                    (u16::from_le_bytes([h[2], h[3]]), count)
                })
                .filter(|&(flags, count)| valid_request(flags, count, with_header.len()))
                .map(|(flags, _)| flags);

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
            let mut from_server = [0; MAC_LEN + 1];
            if proved && stream.len() >= ANSWER_LEN {
                prop_assert_eq!(read_some(client.as_fd(), &mut from_server), Ok(MAC_LEN));
                let proof = &from_server[..MAC_LEN];
                prop_assert!(mac(&key, b"server", &client_nonce).verify_slice(proof).is_ok());
            } else {
                prop_assert_eq!(read_some(client.as_fd(), &mut from_server), Err(Errno::EAGAIN));
            }
            drop(client);
            let outcome = outcome.unwrap_or_else(|| match handshake.advance(server.as_fd(), &key) {
                Ok(Progress::Pending) => panic!("still pending once the peer is gone"),
                Ok(Progress::Done(request)) => Ok(request),
                Err(refused) => Err(refused),
            });
            match (&outcome, accepted) {
                (Ok(request), Some(flags)) => {
                    prop_assert_eq!(request.flags, flags);
                    prop_assert_eq!(request.fds.len(), with_header.len());
                    for (fd, probe) in request.fds.iter().zip(&with_header) {
                        prop_assert!(probe.is(fd));
                    }
                }
                (Ok(request), None) => prop_assert!(false, "took flags {}", request.flags),
                (Err(Refused::Authentication), _) => {
                    prop_assert!(stream.len() >= decided_at && accepted.is_none());
                }
                (Err(Refused::Os(Errno::ECONNRESET)), _) => {
                    prop_assert!(stream.len() < decided_at);
                }
                (Err(refused), _) => prop_assert!(false, "refused with {:?}", refused),
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

        /// A client and a server holding different keys never get as far as a request: the
        /// server refuses the ANSWER and hangs up, which the client reports as `Rejected`.
        #[test]
        fn different_keys_are_refused(
            server_key in any::<Key>(),
            client_key in any::<Key>(),
            count in 0..4usize,
        ) {
            prop_assume!(server_key != client_key);
            let sent = probes(count);
            let (asked, received) = exchange(&server_key, &client_key, 0, &sent);
            prop_assert!(matches!(received, Err(Refused::Authentication)));
            prop_assert!(matches!(asked, Err(Refused::Rejected)), "{:?}", asked);
            for probe in sent {
                prop_assert!(probe.all_closed());
            }
        }

        /// Against a server that sends arbitrary bytes and stops, the client refuses, and sends
        /// nothing but its ANSWER (after a well-formed HELLO): never a REQUEST or a descriptor
        /// to a server that has not proved the key.
        #[test]
        fn client_refuses_unproved_server(
            key in any::<Key>(),
            mut bytes in vec(any::<u8>(), 0..100),
            with_magic in any::<bool>(),
            count in 0..4usize,
        ) {
            if with_magic && bytes.len() >= MAGIC.len() {
                bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
            }
            let (server, client) = socket_pair();
            write_all(server.as_fd(), &bytes).unwrap();
            shutdown(server.as_raw_fd(), Shutdown::Write).unwrap();
            let sent = probes(count);
            let asked = request(client.as_fd(), &key, FLAG_EXIT_PIPE, &borrowed(&sent));
            let hello_len = MAGIC.len() + NONCE_LEN;
            let answered = bytes.len() >= hello_len && bytes[..MAGIC.len()] == MAGIC;
            match asked {
                Err(Refused::Os(Errno::ECONNRESET)) => prop_assert!(bytes.len() < hello_len),
                Err(Refused::Rejected) => {
                    prop_assert!(answered && bytes.len() < hello_len + MAC_LEN);
                }
                Err(Refused::Authentication) => {
                    prop_assert!(bytes.len() >= hello_len);
                    prop_assert!(!answered || bytes.len() >= hello_len + MAC_LEN);
                }
                other => prop_assert!(false, "{:?}", other),
            }
            let mut got = [0; 2 * ANSWER_LEN];
            match recv_some_with_fds(server.as_fd(), &mut got) {
                Ok((n, fds)) => {
                    prop_assert!(answered);
                    prop_assert_eq!(n, ANSWER_LEN);
                    prop_assert!(fds.is_empty());
                    prop_assert!(mac(&key, b"client", &bytes[MAGIC.len()..hello_len])
                        .verify_slice(&got[..MAC_LEN])
                        .is_ok());
                    prop_assert_eq!(read_some(server.as_fd(), &mut got), Err(Errno::EAGAIN));
                }
                Err(e) => prop_assert!(!answered && e == Errno::EAGAIN, "{:?}", e),
            }
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
