//! The resource tracker process: a small program of its own, not an interpreter (CPython's
//! tracker is a whole Python process). `build.rs` compiles it apart from the extension, which
//! carries it and starts it (`src/resource_tracker/mod.rs`).
//!
//! It reads CPython's protocol from descriptor 3 — lines `REGISTER|UNREGISTER|PROBE:name:rtype`,
//! or CPython 3.14's JSON lines for names those cannot carry — from every process of the tree that
//! holds the pipe's write end. When the last of them has
//! gone (end of file), it unlinks every resource still registered and warns, as CPython's
//! `resource_tracker.main` does. Exit code: 0 nothing leaked, 1 leaks cleaned up, 2 an unlink
//! failed, 3 a line was not understood (the last of these to happen, as CPython).
//!
//! One type is procstart's own, `forkserver_dir`: the private directory of a fork server's
//! socket (`src/forkserver/client.rs`), which must not outlive the server even when the server
//! and every process that used it are SIGKILLed. The tracker removes it when the server it
//! names dies, and at its own end; never while a server still listens there, and never as a
//! leak (no warning, no exit code).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_long, c_short, c_ulong, CString, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const PIPE_FD: c_int = 3;
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIG_IGN: usize = 1;
const SIG_UNBLOCK: c_int = 1;

extern "C" {
    fn sem_unlink(name: *const c_char) -> c_int;
    fn shm_unlink(name: *const c_char) -> c_int;
    fn signal(signum: c_int, handler: usize) -> usize;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn poll(fds: *mut PollFd, count: c_ulong, timeout: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

const POLLIN: c_short = 1;
/// The same number on every Linux architecture (it is past the unified numbering, 424).
const SYS_PIDFD_OPEN: c_long = 434;
const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const ECONNREFUSED: i32 = 111;

/// glibc's `sigset_t`: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

/// `noop` is what PROBE lines name; registering it is accepted and it is never unlinked.
/// `forkserver_dir` is procstart's (CPython 3.8 to 3.15 know the first three only).
const RESOURCE_TYPES: [&str; 4] = ["semaphore", "shared_memory", "noop", FORKSERVER_DIR];
/// A fork server's socket directory, named `<path in hex>` before the server runs and
/// `<path in hex>.<server pid>` once it does.
const FORKSERVER_DIR: &str = "forkserver_dir";
/// How long a `connect` to a fork server's socket may take before the server is taken to be
/// alive (a blocking connect waits while a live server's backlog is full).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the tracker waits at its end for the servers still running to exit.
const SERVER_GRACE: Duration = Duration::from_secs(1);
/// The stack of the threads that watch a server or connect to it.
const THREAD_STACK: usize = 64 * 1024;
/// A longer line is not one of ours: it is reported and skipped rather than buffered.
const MAX_LINE: usize = 4096;
const PR_SET_NAME: c_int = 15;

fn unlink(rtype: &str, name: &[u8]) -> Result<(), String> {
    let c_name = CString::new(name).map_err(|_| "embedded null byte".to_string())?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    let res = unsafe {
        match rtype {
            "semaphore" => sem_unlink(c_name.as_ptr()),
            _ => shm_unlink(c_name.as_ptr()),
        }
    };
    if res == 0 {
        return Ok(());
    }
    // As Python formats an OSError: "[Errno 2] No such file or directory".
    let err = std::io::Error::last_os_error();
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    Err(format!(
        "[Errno {}] {}",
        err.raw_os_error().unwrap_or(0),
        text
    ))
}

/// A name as the warnings show it (one that is not UTF-8 has its other bytes replaced).
fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// A Python set's repr of names: `{'/mp-a', '/mp-b'}`.
fn set_repr(names: &BTreeSet<Vec<u8>>) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{}'", shown(n))).collect();
    format!("{{{}}}", items.join(", "))
}

fn warn(stderr: &mut impl Write, message: &str) {
    let _ = writeln!(stderr, "procstart resource_tracker: UserWarning: {message}");
}

/// CPython 3.14's second line format (`resource_tracker._decode_message`), which its clients send
/// for names the first cannot carry (a newline, or a colon where the tracker is older) and when
/// `_use_simple_format` is off: `{"cmd":"REGISTER","rtype":"shared_memory","base64_name":"…"}`,
/// the name's bytes in URL-safe base64. Returns (cmd, name, rtype).
fn json_line(line: &str) -> Result<(String, Vec<u8>, String), String> {
    let malformed = || format!("ValueError: malformed resource_tracker message: {line:?}");
    let fields = json_object(line).ok_or_else(malformed)?;
    // As Python's json: the last of duplicate keys wins.
    let field = |key: &str| match fields.iter().rev().find(|(k, _)| k == key) {
        Some((_, Some(value))) => Ok(Some(value.clone())),
        Some((_, None)) => Err(format!(
            "ValueError: malformed resource_tracker fields: {line:?}"
        )),
        None => Ok(None),
    };
    let cmd = field("cmd")?.ok_or("KeyError: 'cmd'")?;
    let rtype = field("rtype")?.ok_or("KeyError: 'rtype'")?;
    let encoded = field("base64_name")?.unwrap_or_default();
    let name = base64_url_decode(&encoded).ok_or_else(|| {
        format!("ValueError: malformed resource_tracker base64_name: {encoded:?}")
    })?;
    Ok((cmd, name, rtype))
}

/// A JSON object's members: each value a string (`Some`) or anything else (`None`, which is
/// skipped, not parsed: CPython rejects such a message whatever it holds). `None` when the text
/// is not one object of this shape.
fn json_object(text: &str) -> Option<Vec<(String, Option<String>)>> {
    // JSON's whitespace only (Python's json.loads refuses \x0b and \x0c).
    fn ws(s: &str) -> &str {
        s.trim_start_matches([' ', '\t', '\n', '\r'])
    }
    let mut rest = ws(ws(text).strip_prefix('{')?);
    let mut fields = Vec::new();
    if let Some(after) = rest.strip_prefix('}') {
        return ws(after).is_empty().then_some(fields);
    }
    loop {
        let (key, after) = json_string(rest)?;
        rest = ws(ws(after).strip_prefix(':')?);
        let value = if rest.starts_with('"') {
            let (value, after) = json_string(rest)?;
            rest = after;
            Some(value)
        } else {
            // A number, true/false/null: up to the next member or the end (a nested object or
            // array is not something this protocol sends).
            let end = rest.find([',', '}'])?;
            if rest[..end].contains(['{', '[', '"']) {
                return None;
            }
            rest = &rest[end..];
            None
        };
        fields.push((key, value));
        rest = ws(rest);
        if let Some(after) = rest.strip_prefix(',') {
            rest = ws(after);
        } else {
            return ws(rest.strip_prefix('}')?).is_empty().then_some(fields);
        }
    }
}

/// A JSON string at the start of `text` (with its escapes), and what follows it.
fn json_string(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &text[i + 2..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    '"' | '\\' | '/' => escaped,
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'u' => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        // A lone surrogate (valid JSON) is not a char: such a field is no
                        // command, type or base64 anyway.
                        char::from_u32(
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == 4)?,
                        )
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                    _ => return None,
                });
            }
            c if (c as u32) < 0x20 => return None,
            c => out.push(c),
        }
    }
    None
}

/// `base64.urlsafe_b64decode` of what CPython's clients write: either alphabet, padding as
/// Python's decoder requires it (whole groups of 4); other characters are discarded, as there.
fn base64_url_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' | b'+' => Some(62),
        b'_' | b'/' => Some(63),
        _ => None,
    };
    let data = text.trim_end_matches('=');
    let digits: Vec<u8> = data.bytes().filter_map(value).collect();
    let padding = text.len() - data.len();
    if padding > 2 || !(digits.len() + padding).is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | (u32::from(d) << (18 - 6 * i)));
        out.extend(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// The names registered (their bytes: a JSON line's name need not be UTF-8), by resource type.
type Cache = BTreeMap<String, BTreeSet<Vec<u8>>>;

/// Applies one line; the error is what CPython's tracker would raise for it.
fn apply(line: &[u8], cache: &mut Cache) -> Result<(), String> {
    let line = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.is_ascii())
        .ok_or_else(|| format!("UnicodeDecodeError: not an ASCII line: {line:?}"))?;
    let (cmd, name, rtype) = if line.starts_with('{') {
        json_line(line)?
    } else {
        let parts: Vec<&str> = line.trim().split(':').collect();
        let [cmd, name, rtype] = parts[..] else {
            return Err(if parts.len() > 3 {
                "ValueError: too many values to unpack (expected 3)".to_string()
            } else {
                format!(
                    "ValueError: not enough values to unpack (expected 3, got {})",
                    parts.len()
                )
            });
        };
        (cmd.to_string(), name.as_bytes().to_vec(), rtype.to_string())
    };
    if !RESOURCE_TYPES.contains(&rtype.as_str()) {
        return Err(format!(
            "ValueError: Cannot register {} for automatic cleanup: unknown resource type {rtype}",
            shown(&name)
        ));
    }
    let names = cache.entry(rtype).or_default();
    match cmd.as_str() {
        "REGISTER" => {
            names.insert(name);
        }
        "UNREGISTER" => {
            if !names.remove(&name) {
                return Err(format!("KeyError: '{}'", shown(&name)));
            }
        }
        "PROBE" => {}
        _ => return Err(format!("RuntimeError: unrecognized command {cmd:?}")),
    }
    Ok(())
}

/// A fork server's socket directory, as a `forkserver_dir` name gives it.
#[derive(Debug, PartialEq)]
struct ServerDir {
    path: PathBuf,
    /// The server's pid, once it runs.
    pid: Option<i32>,
}

/// `<path in hex>` or `<path in hex>.<pid>`; `None` for anything else.
fn server_dir(name: &str) -> Option<ServerDir> {
    let (hex, pid) = match name.split_once('.') {
        Some((hex, pid)) => (hex, Some(pid.parse().ok().filter(|&p: &i32| p > 0)?)),
        None => (name, None),
    };
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let path = PathBuf::from(OsString::from_vec(bytes));
    // Only ever a server's directory (`client::private_dir`), whatever a line names.
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("procstart-"));
    (path.is_absolute() && named).then_some(ServerDir { path, pid })
}

/// The fork server directory a line registers, if it is a well-formed `REGISTER` of one.
fn registered_server_dir(line: &[u8]) -> Option<ServerDir> {
    let line = std::str::from_utf8(line).ok()?;
    match line.trim().split(':').collect::<Vec<_>>()[..] {
        ["REGISTER", name, FORKSERVER_DIR] => server_dir(name),
        _ => None,
    }
}

/// Whether something listens at `socket`. A server that died leaves its socket file, and
/// connecting to it is refused; one that runs accepts (and drops the tracker when it does not
/// answer the challenge). Taken as listening when it cannot be told.
fn listening(socket: &Path) -> bool {
    let (sender, receiver) = mpsc::channel();
    let target = socket.to_path_buf();
    let connecting = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let _ = sender.send(UnixStream::connect(&target).map(drop));
        });
    if connecting.is_err() {
        return true;
    }
    match receiver.recv_timeout(CONNECT_TIMEOUT) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => !matches!(e.raw_os_error(), Some(ECONNREFUSED | ENOENT)),
        Err(_) => true,
    }
}

/// What a fork server keeps in its directory: its socket, and its list of who asked for each
/// child (`src/forkserver/tree.rs`).
const SERVER_FILES: [&str; 2] = ["socket", "children"];

/// Removes a fork server's files and its directory unless a server listens there: the
/// directory goes only if nothing else is in it.
fn remove_if_abandoned(dir: &Path) {
    if listening(&dir.join(SERVER_FILES[0])) {
        return;
    }
    for name in SERVER_FILES {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// A pidfd of process `pid`; `Err(true)` if there is no such process, `Err(false)` if it
/// cannot be told (no pidfds: Linux < 5.3).
fn pidfd_open(pid: i32) -> Result<c_int, bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { syscall(SYS_PIDFD_OPEN, pid as c_long, 0 as c_long) };
    if fd >= 0 {
        return Ok(fd as c_int);
    }
    Err(std::io::Error::last_os_error().raw_os_error() == Some(ESRCH))
}

/// Waits until every process in `pids` has exited, or `timeout` has passed.
fn wait_for_exits(pids: impl Iterator<Item = i32>, timeout: Duration) {
    let mut fds: Vec<PollFd> = pids
        .filter_map(|pid| pidfd_open(pid).ok())
        .map(|fd| PollFd {
            fd,
            events: POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = std::time::Instant::now() + timeout;
    while !fds.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        // SAFETY: `fds` is a live array of `fds.len()` PollFds; poll(2) only writes revents.
        let ready = unsafe {
            poll(
                fds.as_mut_ptr(),
                fds.len() as c_ulong,
                left.as_millis() as c_int + 1,
            )
        };
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
        fds.retain(|p| {
            if p.revents == 0 {
                return true;
            }
            // SAFETY: a descriptor pidfd_open returned, owned here alone.
            unsafe { close(p.fd) };
            false
        });
    }
    for p in fds {
        // SAFETY: as above.
        unsafe { close(p.fd) };
    }
}

/// Removes the server's directory as soon as the server `pid` has died, from a thread of its
/// own. Without pidfds (Linux < 5.3) it is left for the tracker's end.
fn watch_server(dir: ServerDir) {
    let Some(pid) = dir.pid else {
        return;
    };
    let _ = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let fd = match pidfd_open(pid) {
                Ok(fd) => fd,
                Err(gone) => {
                    if gone {
                        remove_if_abandoned(&dir.path);
                    }
                    return;
                }
            };
            let mut pollfd = PollFd {
                fd,
                events: POLLIN,
                revents: 0,
            };
            // SAFETY: one PollFd owned by this frame, its count passed as 1; poll(2) only
            // writes its revents. A pidfd is readable once its process has exited.
            while unsafe { poll(&mut pollfd, 1, -1) } < 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            // SAFETY: the descriptor pidfd_open returned, owned by this thread alone.
            unsafe { close(fd) };
            // A reused pid makes this early: the check of the socket keeps a live server's.
            remove_if_abandoned(&dir.path);
        });
}

/// Applies each line of `input` until its end, reporting on `errors` every line that is not
/// understood; true when there was one. `registered` is called with each line applied.
fn track(
    input: impl Read,
    cache: &mut Cache,
    errors: &mut impl Write,
    registered: &mut impl FnMut(&[u8]),
) -> bool {
    let mut reader = BufReader::new(input);
    let mut bad_line = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let outcome = if line.len() == MAX_LINE && line.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            while matches!((&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut rest), Ok(n) if n > 0)
                && rest.last() != Some(&b'\n')
            {
                rest.clear();
            }
            Err(format!("ValueError: line longer than {MAX_LINE} bytes"))
        } else {
            apply(&line, cache).map(|()| registered(&line))
        };
        if let Err(error) = outcome {
            // A bad line is reported and skipped; the tracker goes on.
            bad_line = true;
            let _ = writeln!(errors, "procstart resource_tracker: {error}");
        }
    }
    bad_line
}

fn main() {
    // SAFETY: signal() and the sigset calls only read and write the process's signal state and
    // the SigSet owned by this frame. The tracker outlives a Ctrl-C or a `kill` of the process
    // group: only the end of its pipe ends it (CPython: bpo-33613).
    unsafe {
        // Named in `ps` as what it is (it is executed from /proc/self/fd/4).
        prctl(PR_SET_NAME, c"procstart-track".as_ptr());
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        let mut set = SigSet([0; 16]);
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGINT);
        sigaddset(&mut set, SIGTERM);
        sigprocmask(SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: the launcher gives this program the pipe's read end as descriptor 3, and nothing
    // else here owns it.
    let pipe = unsafe { File::from_raw_fd(PIPE_FD) };
    // As CPython's tracker: stdin and stdout closed (a caller capturing them is not held up by
    // the tracker), stderr kept for the warnings.
    // SAFETY: descriptors 0 and 1 are this process's own standard streams, not used after.
    drop(unsafe { (File::from_raw_fd(0), File::from_raw_fd(1)) });
    let mut stderr = std::io::stderr().lock();
    let mut cache = Cache::new();
    let mut watch = |line: &[u8]| {
        if let Some(dir) = registered_server_dir(line) {
            watch_server(dir);
        }
    };
    let mut exit_code = if track(pipe, &mut cache, &mut stderr, &mut watch) {
        3
    } else {
        0
    };
    // Every process that could unregister has exited: what is left has leaked. A fork server's
    // directory is not a leak: it is left when the server was killed, and goes quietly.
    let dirs: Vec<ServerDir> = cache
        .get(FORKSERVER_DIR)
        .into_iter()
        .flatten()
        .filter_map(|name| std::str::from_utf8(name).ok().and_then(server_dir))
        .collect();
    // A server still running now is ending too (the tree that held it has), or was killed a
    // moment ago and is still exiting, its socket open: each gets a moment to be gone.
    wait_for_exits(dirs.iter().filter_map(|dir| dir.pid), SERVER_GRACE);
    for dir in &dirs {
        remove_if_abandoned(&dir.path);
    }
    for (rtype, names) in &cache {
        if names.is_empty() || rtype == "noop" || rtype == FORKSERVER_DIR {
            continue;
        }
        exit_code = 1;
        warn(
            &mut stderr,
            &format!(
                "resource_tracker: There appear to be {} leaked {rtype} objects to clean up at shutdown: {}",
                names.len(),
                set_repr(names)
            ),
        );
        for name in names {
            if let Err(error) = unlink(rtype, name) {
                exit_code = 2;
                warn(
                    &mut stderr,
                    &format!("resource_tracker: '{}': {error}", shown(name)),
                );
            }
        }
    }
    std::process::exit(exit_code);
}

#[cfg(test)]
mod tests {
    //! Properties of the line protocol, over `CASES` cases each (streams: a fifth of that, as
    //! they run to several KiB) drawn from a fixed seed, so that a failure repeats. This program
    //! is built apart from the crate, std only, so a small generator stands in for proptest.
    //! Run by .ci/run as `rustc --edition 2021 --test src/resource_tracker/program.rs`.

    use super::*;

    const CASES: usize = 10_000;

    /// xorshift64*: repeatable and spread enough to draw test cases from.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
            items[self.below(items.len())]
        }
    }

    const COMMANDS: [&str; 3] = ["REGISTER", "UNREGISTER", "PROBE"];
    const NAMES: [&str; 4] = ["/mp-a", "/psm_b", "c", ""];
    const SPACE: [&str; 6] = ["", " ", "\t", "\r", "\x0b", "  \x0c"];

    /// What lines are made of: the protocol's words and separators, near misses, and bytes
    /// that must be refused (not UTF-8, not ASCII, a newline inside).
    const PIECES: &[&[u8]] = &[
        b"REGISTER",
        b"UNREGISTER",
        b"PROBE",
        b"register",
        b"REGISTE",
        b"semaphore",
        b"shared_memory",
        b"noop",
        b"folder",
        b":",
        b":",
        b":",
        b"/mp-a",
        b"c",
        b" ",
        b"\t",
        b"\n",
        b"\0",
        b"\x1c",
        b"\xff",
        "\u{e9}".as_bytes(),
        "\u{85}".as_bytes(),
    ];

    /// Any bytes, or bytes put together from `PIECES`, or a well-formed line (with near misses
    /// for its command and type) with or without a piece put in anywhere.
    fn any_line(rng: &mut Rng) -> Vec<u8> {
        match rng.below(4) {
            0 => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(8))
                .flat_map(|_| rng.pick(PIECES).to_vec())
                .collect(),
            _ => {
                let cmd = rng.pick(&["REGISTER", "UNREGISTER", "PROBE", "REGISTER ", "probe"]);
                let rtype = rng.pick(&["semaphore", "shared_memory", "noop", "Semaphore", ""]);
                let name = rng.pick(&NAMES);
                let mut line = well_formed(rng, cmd, name, rtype);
                if rng.below(2) == 0 {
                    let at = rng.below(line.len() + 1);
                    line.splice(at..at, rng.pick(PIECES).iter().copied());
                }
                line
            }
        }
    }

    fn well_formed(rng: &mut Rng, cmd: &str, name: &str, rtype: &str) -> Vec<u8> {
        let before = rng.pick(&SPACE);
        let after = rng.pick(&SPACE);
        let end = rng.pick(&["", "\n"]);
        format!("{before}{cmd}:{name}:{rtype}{after}{end}").into_bytes()
    }

    /// What is registered, as (type, name): a type left with no name is as good as none.
    fn registered(cache: &Cache) -> BTreeSet<(String, String)> {
        cache
            .iter()
            .flat_map(|(rtype, names)| names.iter().map(move |n| (rtype.clone(), shown(n))))
            .collect()
    }

    /// What CPython's tracker does with a line, `cmd, name, rtype =
    /// line.strip().decode('ascii').split(':')` and so on: the change, or the start of the
    /// error it raises.
    fn expected(
        line: &[u8],
        before: &BTreeSet<(String, String)>,
    ) -> Result<BTreeSet<(String, String)>, &'static str> {
        // Python's `bytes.isspace()`, which unlike `u8::is_ascii_whitespace` includes \x0b.
        let space = |b: &u8| b" \t\n\r\x0b\x0c".contains(b);
        let start = line.iter().position(|b| !space(b)).unwrap_or(line.len());
        let end = line
            .iter()
            .rposition(|b| !space(b))
            .map_or(start, |i| i + 1);
        let line = &line[start..end];
        if !line.is_ascii() {
            return Err("UnicodeDecodeError");
        }
        let line = std::str::from_utf8(line).unwrap();
        let [cmd, name, rtype] = line.split(':').collect::<Vec<_>>()[..] else {
            return Err("ValueError: ");
        };
        if !RESOURCE_TYPES.contains(&rtype) {
            return Err("ValueError: Cannot register");
        }
        let mut after = before.clone();
        let entry = (rtype.to_string(), name.to_string());
        match cmd {
            "REGISTER" => {
                after.insert(entry);
            }
            "UNREGISTER" if !after.remove(&entry) => return Err("KeyError"),
            "UNREGISTER" | "PROBE" => {}
            _ => return Err("RuntimeError: unrecognized command"),
        }
        Ok(after)
    }

    /// Any line at all, applied to a cache with a few names in it: never a panic; what CPython
    /// would do with it, with the error CPython would raise; an error changes nothing.
    #[test]
    fn any_line_does_what_cpython_does() {
        let mut rng = Rng(0x5eed_0001);
        let mut applied = 0;
        for _ in 0..CASES {
            let mut cache = Cache::new();
            for _ in 0..rng.below(4) {
                let (name, rtype) = (rng.pick(&NAMES), rng.pick(&RESOURCE_TYPES));
                let line = well_formed(&mut rng, "REGISTER", name, rtype);
                apply(&line, &mut cache).unwrap();
            }
            let before = registered(&cache);
            let line = any_line(&mut rng);
            let result = apply(&line, &mut cache);
            match (expected(&line, &before), result) {
                (Ok(after), Ok(())) => {
                    applied += 1;
                    assert_eq!(registered(&cache), after, "{line:?}");
                }
                (Err(kind), Err(error)) => {
                    assert!(error.starts_with(kind), "{line:?}: {error}, not {kind}");
                    assert_eq!(registered(&cache), before, "{line:?}");
                }
                (want, got) => panic!("{line:?}: {got:?}, not {want:?}"),
            }
        }
        // Both outcomes are drawn often enough to mean something.
        assert!(
            (CASES / 50..CASES - CASES / 50).contains(&applied),
            "{applied} applied"
        );
    }

    /// Any sequence of well-formed lines leaves registered exactly what a set would hold;
    /// unregistering a name that is not there is a `KeyError` that changes nothing.
    #[test]
    fn registrations_add_up() {
        let mut rng = Rng(0x5eed_0002);
        for _ in 0..CASES {
            let mut cache = Cache::new();
            let mut model = BTreeSet::new();
            for _ in 0..rng.below(30) {
                let (cmd, name, rtype) = (
                    rng.pick(&COMMANDS),
                    rng.pick(&NAMES),
                    rng.pick(&RESOURCE_TYPES),
                );
                let line = well_formed(&mut rng, cmd, name, rtype);
                let entry = (rtype.to_string(), name.to_string());
                let result = apply(&line, &mut cache);
                match cmd {
                    "REGISTER" => {
                        model.insert(entry);
                        assert_eq!(result, Ok(()));
                    }
                    "UNREGISTER" if model.remove(&entry) => assert_eq!(result, Ok(())),
                    "UNREGISTER" => assert_eq!(result, Err(format!("KeyError: '{name}'"))),
                    _ => assert_eq!(result, Ok(())),
                }
                assert_eq!(registered(&cache), model, "after {line:?}");
            }
        }
    }

    /// `base64.urlsafe_b64encode`.
    fn base64_url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let mut group = [0u8; 3];
            group[..chunk.len()].copy_from_slice(chunk);
            let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    /// A JSON line as CPython 3.14's `ResourceTracker._send` writes it.
    fn json_line_of(cmd: &str, name: &[u8], rtype: &str) -> Vec<u8> {
        format!(
            "{{\"cmd\":\"{cmd}\",\"rtype\":\"{rtype}\",\"base64_name\":\"{}\"}}\n",
            base64_url(name)
        )
        .into_bytes()
    }

    /// JSON lines carry any name, as bytes (colons, newlines, bytes that are not UTF-8): what is
    /// registered is that exact name, and unregistering it takes it back.
    #[test]
    fn json_lines_carry_any_name() {
        let mut rng = Rng(0x5eed_0004);
        for _ in 0..CASES {
            let name: Vec<u8> = (0..rng.below(60))
                .map(|_| *rng.pick(&[&b':', &b'\n', &b'/', &b'a', &0xff, &0xe9, &b'"']))
                .collect();
            let rtype = rng.pick(&RESOURCE_TYPES);
            let mut cache = Cache::new();
            apply(&json_line_of("REGISTER", &name, rtype), &mut cache).unwrap();
            assert!(cache[rtype].contains(&name), "{name:?}");
            apply(&json_line_of("PROBE", b"", "noop"), &mut cache).unwrap();
            apply(&json_line_of("UNREGISTER", &name, rtype), &mut cache).unwrap();
            assert!(registered(&cache).is_empty(), "{name:?}");
        }
    }

    /// JSON lines that CPython's tracker refuses, with the error it raises; the cache is left
    /// as it was. Accepted: JSON's own spacing, escapes, key order, a missing name (empty).
    #[test]
    fn json_lines_as_cpython_reads_them() {
        let refused: [(&str, &str); 10] = [
            ("{", "ValueError: malformed resource_tracker message"),
            (
                "{\"cmd\":\"REGISTER\",}",
                "ValueError: malformed resource_tracker message",
            ),
            (
                "{\"cmd\":\"REGISTER\"} x",
                "ValueError: malformed resource_tracker message",
            ),
            ("{\"rtype\":\"noop\"}", "KeyError: 'cmd'"),
            ("{\"cmd\":\"PROBE\"}", "KeyError: 'rtype'"),
            (
                "{\"cmd\":1,\"rtype\":\"noop\"}",
                "ValueError: malformed resource_tracker fields",
            ),
            (
                "{\"cmd\":\"PROBE\",\"rtype\":null}",
                "ValueError: malformed resource_tracker fields",
            ),
            (
                "{\"cmd\":\"PROBE\",\"rtype\":\"noop\",\"base64_name\":\"YQ\"}",
                "ValueError: malformed resource_tracker base64_name",
            ),
            (
                "{\"cmd\":\"PROBE\",\"rtype\":\"folder\"}",
                "ValueError: Cannot register",
            ),
            (
                "{\"cmd\":\"FORGET\",\"rtype\":\"noop\"}",
                "RuntimeError: unrecognized command",
            ),
        ];
        for (line, error) in refused {
            let mut cache = Cache::new();
            let result = apply(line.as_bytes(), &mut cache);
            assert!(
                matches!(&result, Err(e) if e.starts_with(error)),
                "{line}: {result:?}"
            );
            assert!(registered(&cache).is_empty(), "{line}");
        }
        let mut cache = Cache::new();
        let line = " {\"rtype\" : \"sh\\u0061red_memory\", \"base64_name\":\"L2E6Yg==\",\r\"cmd\":\"REGISTER\"}\n";
        assert_eq!(apply(line.trim_start().as_bytes(), &mut cache), Ok(()));
        assert_eq!(cache["shared_memory"], BTreeSet::from([b"/a:b".to_vec()]));
        let probe = "{\"cmd\":\"PROBE\",\"rtype\":\"noop\"}\n";
        assert_eq!(apply(probe.as_bytes(), &mut cache), Ok(()));
    }

    /// Hands out what it holds in reads of arbitrary sizes, some of them interrupted.
    struct Trickle<'a> {
        data: &'a [u8],
        rng: Rng,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.rng.below(8) == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let size = [1, 7, 100, 2 * MAX_LINE][self.rng.below(4)];
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A stream of lines, some of them around `MAX_LINE` long, read in arbitrary pieces: each
    /// line (up to a newline, or the end) is applied as it is when it fits in `MAX_LINE` bytes
    /// with its newline; a longer one is one error and is skipped whole, the next line read as
    /// usual. One error is reported per bad line.
    #[test]
    fn stream_is_read_line_by_line() {
        let mut rng = Rng(0x5eed_0003);
        for case in 0..CASES / 5 {
            let mut stream = Vec::new();
            for _ in 0..rng.below(6) {
                if rng.below(3) == 0 {
                    stream.extend(any_line(&mut rng));
                } else {
                    // A line whose fate is told by its length: the name is unique, and the
                    // spaces that pad it are stripped when it is applied.
                    let name = format!("/mp-{}", rng.next());
                    let mut line = format!("REGISTER:{name}:semaphore").into_bytes();
                    let length = [
                        line.len() + 1,
                        MAX_LINE - 1,
                        MAX_LINE,
                        MAX_LINE + 1,
                        2 * MAX_LINE + 3,
                    ][rng.below(5)];
                    line.resize(length, b' ');
                    if rng.below(5) != 0 {
                        *line.last_mut().unwrap() = b'\n';
                    }
                    stream.extend(line);
                }
                stream.extend_from_slice(rng.pick(&[&b""[..], b"\n"]));
            }

            let mut model = Cache::new();
            let mut expected_errors = 0;
            for line in stream.split_inclusive(|&b| b == b'\n') {
                let fits =
                    line.len() < MAX_LINE || (line.len() == MAX_LINE && line.ends_with(b"\n"));
                if !fits || apply(line, &mut model).is_err() {
                    expected_errors += 1;
                }
            }

            let mut cache = Cache::new();
            let mut errors = Vec::new();
            let input = Trickle {
                data: &stream,
                rng: Rng(case as u64 + 1),
            };
            let bad_line = track(input, &mut cache, &mut errors, &mut |_| {});
            let errors = String::from_utf8(errors).unwrap();
            assert_eq!(registered(&cache), registered(&model), "case {case}");
            assert_eq!(
                errors.lines().count(),
                expected_errors,
                "case {case}: {errors}"
            );
            assert!(errors
                .lines()
                .all(|l| l.starts_with("procstart resource_tracker: ")));
            assert_eq!(bad_line, expected_errors > 0);
        }
    }

    fn hex(path: &Path) -> String {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh directory for one test, as `client::private_dir` makes them.
    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "procstart-tracker-test-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn server_dir_names() {
        let path = Path::new("/tmp/d:ir \u{e9}\n/procstart-0a1b2c");
        assert_eq!(
            server_dir(&hex(path)),
            Some(ServerDir {
                path: path.to_path_buf(),
                pid: None
            })
        );
        assert_eq!(
            server_dir(&format!("{}.1234", hex(path))),
            Some(ServerDir {
                path: path.to_path_buf(),
                pid: Some(1234)
            })
        );
        for bad in [
            "", "2f7", "2f.", "2f.0", "2f.-5", "2f.x", "zz", "7469", "2f.1.2",
        ] {
            assert_eq!(server_dir(bad), None, "{bad:?}");
        }
        // Only ever a server's directory: not "/", not "/tmp", not a relative path.
        for other in ["/", "/tmp", "procstart-0a1b2c"] {
            assert_eq!(server_dir(&hex(Path::new(other))), None, "{other:?}");
        }
        let line = format!("REGISTER:{}.7:forkserver_dir\n", hex(path));
        assert_eq!(registered_server_dir(line.as_bytes()).unwrap().pid, Some(7));
        for other in ["UNREGISTER", "PROBE"] {
            let line = format!("{other}:{}.7:forkserver_dir\n", hex(path));
            assert_eq!(registered_server_dir(line.as_bytes()), None);
        }
        let line = format!("REGISTER:{}:semaphore\n", hex(path));
        assert_eq!(registered_server_dir(line.as_bytes()), None);
    }

    /// Only a registration of a fork server directory reaches the callback, once applied.
    #[test]
    fn track_reports_what_it_applied() {
        let input = b"REGISTER:2f70726f6373746172742d61:forkserver_dir\nbad line\nREGISTER:/mp-a:semaphore\n";
        let mut seen = Vec::new();
        let bad = track(
            &input[..],
            &mut Cache::new(),
            &mut Vec::new(),
            &mut |line| seen.push(registered_server_dir(line).map(|d| d.path)),
        );
        assert!(bad);
        assert_eq!(seen, [Some(PathBuf::from("/procstart-a")), None]);
    }

    /// A directory whose server listens is kept; once nothing listens (the server died, its
    /// socket file left), the server's files and the directory go; a directory holding anything
    /// else stays.
    #[test]
    fn only_an_abandoned_directory_is_removed() {
        let dir = scratch_dir("abandoned");
        let listener = std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap();
        remove_if_abandoned(&dir);
        assert!(dir.join("socket").exists());
        drop(listener);
        remove_if_abandoned(&dir);
        assert!(!dir.exists());
        remove_if_abandoned(&dir);

        let dir = scratch_dir("listed");
        drop(std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap());
        std::fs::write(dir.join("children"), b"12 34\n").unwrap();
        remove_if_abandoned(&dir);
        assert!(!dir.exists());

        let dir = scratch_dir("crowded");
        drop(std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap());
        std::fs::write(dir.join("other"), b"").unwrap();
        remove_if_abandoned(&dir);
        assert!(!dir.join("socket").exists());
        assert!(dir.join("other").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The directory of a server that dies goes as soon as it has died.
    #[test]
    fn a_watched_server_directory_goes_with_its_server() {
        let dir = scratch_dir("watched");
        drop(std::os::unix::net::UnixListener::bind(dir.join("socket")).unwrap());
        let mut server = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        watch_server(ServerDir {
            path: dir.clone(),
            pid: Some(server.id() as i32),
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(dir.exists());
        server.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dir.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!dir.exists());
    }
}
