//! Signalling a process and every process descended from it, found through `/proc`.
//!
//! The tree is frozen first: each member is stopped (`SIGSTOP`) as soon as it is found, before
//! its own children are looked up, so that nobody forks a new member behind the walk. A stop
//! takes effect when the process next leaves the kernel, so a `fork()` already under way
//! completes and attaches its child after the stop was sent: the walk is repeated until every
//! member is seen stopped (or gone) *and* a walk after that finds nobody new. Only then does every
//! member get the signal, and, unless it is `SIGKILL`, `SIGCONT` so that it can act on it.
//! Members are held by pidfd once found, so a member that exits meanwhile cannot be mistaken for
//! a process that reuses its PID.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::sys::pidfd;

/// How long the freeze may take at most: a tree that has not settled by then (a member that
/// cannot be stopped, such as one in uninterruptible sleep) is signalled as found.
const FREEZE_LIMIT: Duration = Duration::from_secs(2);
const SETTLE_POLL: Duration = Duration::from_millis(1);

struct Member {
    pid: Pid,
    handle: Option<OwnedFd>,
}

impl Member {
    fn signal(&self, signal: Signal) {
        // A member that has exited meanwhile (ESRCH) needs nothing; one we may not signal
        // (EPERM: it changed its credentials) is left alone.
        let _ = match &self.handle {
            Some(fd) => pidfd::send_signal(fd.as_fd(), signal as i32),
            None => kill(self.pid, signal),
        };
    }
}

/// The parent PID in `/proc/<pid>/stat`: the field after the state, after the command name
/// (which may itself contain spaces and parentheses, hence the last ')').
fn parent_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn read_parent(pid: i32) -> Option<i32> {
    parent_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process's children, by parent PID, as `/proc` shows them now.
fn children_by_parent() -> HashMap<i32, Vec<i32>> {
    let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(parent) = read_parent(pid) {
            map.entry(parent).or_default().push(pid);
        }
    }
    map
}

/// Descriptors kept free during a walk for reading `/proc`: without them the walk would go
/// blind below the members found so far.
const SCAN_RESERVE: usize = 32;

/// How many members may be held by pidfd: what the descriptor limit leaves, less the reserve.
fn pidfd_budget() -> usize {
    if !pidfd::supported() {
        return 0;
    }
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(usize::MAX, Iterator::count);
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(open)
        .saturating_sub(SCAN_RESERVE)
}

/// Takes hold of `pid`, found as a child of `parent`: by pidfd while `budget` lasts, checking
/// after opening it that the process is still `parent`'s child (and not a process that took
/// over the PID of one that just exited). Beyond the budget, or without pidfds, it is held by
/// PID: a member left out would take its whole subtree out of the signal.
fn hold(pid: i32, parent: i32, budget: &mut usize) -> Option<Member> {
    let handle = if *budget > 0 {
        match pidfd::open(Pid::from_raw(pid)) {
            Ok(fd) => {
                *budget -= 1;
                Some(fd)
            }
            Err(Errno::ESRCH) => return None,
            Err(_) => None,
        }
    } else {
        None
    };
    (read_parent(pid) == Some(parent)).then(|| Member {
        pid: Pid::from_raw(pid),
        handle,
    })
}

/// Whether every thread of `pid` is stopped (or the process has ended): it cannot fork any more.
fn settled(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return true;
        };
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_ascii_whitespace().next());
        matches!(state, None | Some("T" | "t" | "Z" | "X"))
    })
}

/// Sends `signal` to the process `root` (by `root_handle`, its pidfd, when there is one), to
/// all its descendants, and to the process group `group` if given (which also reaches members
/// whose parent died and who were adopted elsewhere).
pub fn signal_tree(
    root: Pid,
    root_handle: Option<BorrowedFd<'_>>,
    group: Option<Pid>,
    signal: Signal,
) {
    let stop = |member: &Member| member.signal(Signal::SIGSTOP);
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGSTOP);
    }
    let root_member = Member {
        pid: root,
        handle: root_handle.and_then(|fd| fd.try_clone_to_owned().ok()),
    };
    stop(&root_member);
    let mut members = vec![root_member];
    let mut seen: HashSet<i32> = HashSet::from([root.as_raw()]);
    let give_up = Instant::now() + FREEZE_LIMIT;
    let mut budget = pidfd_budget();
    // Whether every member was seen stopped before the walk in progress began.
    let mut frozen = false;
    loop {
        let children = children_by_parent();
        let before = members.len();
        let mut i = 0;
        while i < members.len() {
            let parent = members[i].pid.as_raw();
            for &child in children.get(&parent).into_iter().flatten() {
                if seen.insert(child) {
                    if let Some(member) = hold(child, parent, &mut budget) {
                        stop(&member);
                        members.push(member);
                    }
                }
            }
            i += 1;
        }
        if (members.len() == before && frozen) || Instant::now() >= give_up {
            break;
        }
        while !members.iter().all(|m| settled(m.pid)) && Instant::now() < give_up {
            std::thread::sleep(SETTLE_POLL);
        }
        frozen = true;
    }
    for member in &members {
        member.signal(signal);
    }
    if let Some(group) = group {
        let _ = killpg(group, signal);
    }
    if signal != Signal::SIGKILL {
        for member in &members {
            member.signal(Signal::SIGCONT);
        }
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGCONT);
        }
    }
}

/// `setpgid(pid, pid)`: makes `pid` the leader of a new process group (called by both the
/// child and its parent, so that it holds whichever runs first). A child that has already
/// exited (ESRCH) or exec'd (EACCES) has done it itself or needs it no more.
pub fn lead_new_group(pid: Pid) -> nix::Result<()> {
    match nix::unistd::setpgid(pid, pid) {
        Ok(()) | Err(Errno::ESRCH | Errno::EACCES) => Ok(()),
        Err(e) => Err(e),
    }
}
