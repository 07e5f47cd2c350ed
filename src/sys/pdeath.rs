//! Making a child die with its parent.
//!
//! `PR_SET_PDEATHSIG` is the kernel's way, but it fires when the *thread* that created the
//! child exits, and for the kernel parent only: right for a child started from the main thread
//! by fork or posix_spawn, wrong for one started from a worker thread (it would die with that
//! thread) and for a fork-server child (whose kernel parent is the server). Those get a watcher
//! thread instead, blocked in poll(2) on the parent sentinel (the parent's pidfd, or a pipe the
//! parent holds), that kills the process when the parent has gone.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getppid, Pid};

use crate::sys::poll::{wait_readable, Readiness};
use crate::sys::thread::spawn_deaf;

/// A small stack: the thread only waits.
const WATCHER_STACK: usize = 64 * 1024;

/// Whether the calling thread is the process's main thread (the one whose exit ends it).
pub fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

fn die() -> ! {
    let _ = kill(Pid::this(), Signal::SIGKILL);
    // SAFETY: not reached (SIGKILL cannot be caught); _exit has no preconditions.
    unsafe { libc::_exit(1) }
}

/// Asks the kernel to SIGKILL this process when its parent (the thread that created it) exits,
/// then checks that `parent` is still the parent: had it died before the request, the process
/// would already have been adopted and the signal never come.
pub fn kill_on_parent_exit(parent: Pid) -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, signal) reads only its integer arguments.
    let res = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::from(Signal::SIGKILL as u32),
            0,
            0,
            0,
        )
    };
    Errno::result(res)?;
    if getppid() != parent {
        die();
    }
    Ok(())
}

/// Starts a thread that kills this process once `sentinel` (the parent's pidfd, or the read
/// end of a pipe only the parent writes to) becomes readable. The thread owns a copy of it.
pub fn watch_parent(sentinel: BorrowedFd<'_>) -> std::io::Result<()> {
    let sentinel = sentinel.try_clone_to_owned()?;
    spawn_deaf("procstart-parent-watch", WATCHER_STACK, move || loop {
        match wait_readable(sentinel.as_raw_fd(), None) {
            Ok(Readiness::Interrupted) => {}
            // Readable (the parent exited, or closed its end), or unwatchable: the child
            // must not run on without a parent it can see.
            _ => die(),
        }
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    use super::*;
    use crate::sys::pidfd;
    use crate::sys::testutil::{fork_lock, pipe, read_to_string, readable_within, sh, wait_code};
    use crate::sys::wait;

    /// Whether the process behind `fd` ends within ten seconds.
    fn ends(fd: BorrowedFd<'_>) -> bool {
        readable_within(fd, 10.0)
    }

    #[test]
    fn worker_threads_are_not_the_main_thread() {
        assert!(!std::thread::spawn(on_main_thread).join().unwrap());
    }

    /// Asked with the wrong parent (as when the real one died before the request), the
    /// process kills itself at once.
    #[test]
    fn wrong_parent_dies_at_once() {
        let _fork = fork_lock();
        // SAFETY: the child only makes async-signal-safe calls (prctl, getppid, kill, _exit)
        // before it ends; the FORK lock keeps other tests from creating processes meanwhile.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let _ = kill_on_parent_exit(Pid::from_raw(1));
            // SAFETY: _exit has no preconditions; reached only if the call above returned.
            unsafe { libc::_exit(0) };
        }
        assert_eq!(wait_code(Pid::from_raw(pid)), -(Signal::SIGKILL as i32));
    }

    /// A grandchild asks to die with its parent (the test's child), which then exits.
    #[test]
    fn dies_when_the_parent_exits() {
        let _fork = fork_lock();
        let (ready_r, ready_w) = pipe();
        let (pid_r, pid_w) = pipe();
        // SAFETY: both processes created below only make async-signal-safe calls (fork,
        // prctl, getppid, read, write, close, pause, _exit) and end with _exit; the FORK lock
        // keeps other tests from creating processes meanwhile.
        let parent = unsafe { libc::fork() };
        assert!(parent >= 0, "fork");
        if parent == 0 {
            // SAFETY: as above.
            let child = unsafe { libc::fork() };
            if child == 0 {
                let status = match kill_on_parent_exit(getppid()) {
                    Ok(()) => 0,
                    Err(_) => 1,
                };
                // SAFETY: writes one byte from a live local; then waits for the signal. The
                // descriptor is open (inherited through both forks).
                unsafe {
                    libc::write(ready_w.as_raw_fd(), [status].as_ptr().cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
            }
            let mut byte = [0u8];
            // SAFETY: reads one byte into a live local, writes the child's PID from a live
            // local, both on descriptors open here; _exit has no preconditions.
            unsafe {
                libc::close(ready_w.as_raw_fd());
                let ok = libc::read(ready_r.as_raw_fd(), byte.as_mut_ptr().cast(), 1) == 1;
                libc::write(pid_w.as_raw_fd(), (&raw const child).cast(), 4);
                libc::_exit(if ok && byte[0] == 0 { 0 } else { 2 });
            }
        }
        drop((ready_r, ready_w, pid_w));
        // The middle process exits once the grandchild has asked (and so did not die at once).
        assert_eq!(wait_code(Pid::from_raw(parent)), 0);
        let mut bytes = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::from(pid_r), &mut bytes).unwrap();
        let grandchild = Pid::from_raw(i32::from_ne_bytes(bytes));
        match pidfd::open(grandchild) {
            Ok(fd) => {
                let gone = ends(fd.as_fd());
                if !gone {
                    let _ = pidfd::send_signal(fd.as_fd(), Signal::SIGKILL as i32);
                }
                assert!(gone, "the grandchild outlived its parent");
            }
            // Already killed and reaped by whoever adopted it.
            Err(e) => assert_eq!(e, Errno::ESRCH),
        }
    }

    /// Run only as the child of `watcher_kills_when_the_sentinel_closes` (the test binary
    /// itself, started again): fd 3 is the sentinel, fd 4 is closed once it watches.
    #[test]
    #[ignore = "a helper process of another test"]
    fn watcher_child() {
        if std::env::var_os("PROCSTART_TEST_WATCHER_CHILD").is_none() {
            return;
        }
        // SAFETY: the parent placed the sentinel at 3 (spawn's child_fds); it stays open for
        // the life of this process.
        let sentinel = unsafe { BorrowedFd::borrow_raw(3) };
        watch_parent(sentinel).unwrap();
        // SAFETY: fd 4, placed by the parent, is owned by nothing else here; dropping it tells
        // the parent the watcher runs.
        drop(unsafe { OwnedFd::from_raw_fd(4) });
        std::thread::sleep(std::time::Duration::from_secs(30));
    }

    #[test]
    fn watcher_kills_when_the_sentinel_closes() {
        let _fork = fork_lock();
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        assert!(!exe.contains('\''));
        let (sentinel_r, sentinel_w) = pipe();
        let (ready_r, ready_w) = pipe();
        let script = format!(
            "PROCSTART_TEST_WATCHER_CHILD=1 exec '{exe}' --exact \
             sys::pdeath::tests::watcher_child --ignored --test-threads=1 >/dev/null 2>&1"
        );
        let child = sh(&script, &[sentinel_r.as_fd(), ready_w.as_fd()], false, &[]);
        drop((sentinel_r, ready_w));
        assert_eq!(read_to_string(ready_r), "", "the watcher started");
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOHANG;
        let id = nix::sys::wait::Id::Pid(child);
        assert_eq!(
            wait::waitid(id, flags),
            Ok(None),
            "alive while the sentinel is"
        );
        drop(sentinel_w);
        assert_eq!(wait_code(child), -(Signal::SIGKILL as i32));
    }
}
