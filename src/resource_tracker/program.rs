//! The resource tracker process: a small program of its own, not an interpreter (CPython's
//! tracker is a whole Python process). `build.rs` compiles it apart from the extension, which
//! carries it and starts it (`src/resource_tracker/mod.rs`).
//!
//! It reads CPython's protocol from descriptor 3 — lines `REGISTER|UNREGISTER|PROBE:name:rtype`
//! — from every process of the tree that holds the pipe's write end. When the last of them has
//! gone (end of file), it unlinks every resource still registered and warns, as CPython's
//! `resource_tracker.main` does. Exit code: 0 nothing leaked, 1 leaks cleaned up, 2 an unlink
//! failed, 3 a line was not understood (the last of these to happen, as CPython).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, CString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;

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
}

/// glibc's `sigset_t`: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

/// `noop` is what PROBE lines name; registering it is accepted and it is never unlinked.
const RESOURCE_TYPES: [&str; 3] = ["semaphore", "shared_memory", "noop"];
/// A longer line is not one of ours: it is reported and skipped rather than buffered.
const MAX_LINE: usize = 4096;
const PR_SET_NAME: c_int = 15;

fn unlink(rtype: &str, name: &str) -> Result<(), String> {
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

/// A Python set's repr of names: `{'/mp-a', '/mp-b'}`.
fn set_repr(names: &BTreeSet<String>) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("{{{}}}", items.join(", "))
}

fn warn(stderr: &mut impl Write, message: &str) {
    let _ = writeln!(stderr, "procstart resource_tracker: UserWarning: {message}");
}

/// Applies one line; the error is what CPython's tracker would raise for it.
fn apply(line: &[u8], cache: &mut BTreeMap<String, BTreeSet<String>>) -> Result<(), String> {
    let line = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.is_ascii())
        .ok_or_else(|| format!("UnicodeDecodeError: not an ASCII line: {line:?}"))?;
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
    if !RESOURCE_TYPES.contains(&rtype) {
        return Err(format!(
            "ValueError: Cannot register {name} for automatic cleanup: unknown resource type {rtype}"
        ));
    }
    let names = cache.entry(rtype.to_string()).or_default();
    match cmd {
        "REGISTER" => {
            names.insert(name.to_string());
        }
        "UNREGISTER" => {
            if !names.remove(name) {
                return Err(format!("KeyError: '{name}'"));
            }
        }
        "PROBE" => {}
        _ => return Err(format!("RuntimeError: unrecognized command {cmd:?}")),
    }
    Ok(())
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
    let mut cache: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut exit_code = 0;
    let mut reader = BufReader::new(pipe);
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
            apply(&line, &mut cache)
        };
        if let Err(error) = outcome {
            // A bad line is reported and skipped; the tracker goes on.
            exit_code = 3;
            let _ = writeln!(stderr, "procstart resource_tracker: {error}");
        }
    }
    // Every process that could unregister has exited: what is left has leaked.
    for (rtype, names) in &cache {
        if names.is_empty() || rtype == "noop" {
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
                warn(&mut stderr, &format!("resource_tracker: '{name}': {error}"));
            }
        }
    }
    std::process::exit(exit_code);
}
