//! Signalling a process and every process descended from it, found through `/proc`, and
//! through the list of a fork server, whose children descend from whoever asked for them
//! ([`Adopted`]).
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

/// Processes whose kernel parent is `parent` (a fork server) but which descend, in the user's
/// tree, from another process: `children` as (child, that process); `pending`, processes for
/// which a child is being made, whose PID is not known yet.
pub struct Adopted {
    pub parent: i32,
    pub children: Vec<(i32, i32)>,
    pub pending: Vec<i32>,
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
/// whose parent died and who were adopted elsewhere). `adopted` lists, each time it is called,
/// the descendants a fork server made (see [`Adopted`]).
pub fn signal_tree(
    root: Pid,
    root_handle: Option<BorrowedFd<'_>>,
    group: Option<Pid>,
    signal: Signal,
    adopted: &dyn Fn() -> Option<Adopted>,
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
        let adopted = adopted();
        let before = members.len();
        let mut i = 0;
        while i < members.len() {
            let parent = members[i].pid.as_raw();
            let kernel_children = children.get(&parent).into_iter().flatten();
            let by_kernel = kernel_children.map(|&child| (child, parent));
            let by_request = adopted.iter().flat_map(|a| {
                a.children
                    .iter()
                    .filter(move |&&(_, requester)| requester == parent)
                    .map(move |&(child, _)| (child, a.parent))
            });
            let found: Vec<(i32, i32)> = by_kernel.chain(by_request).collect();
            for (child, kernel_parent) in found {
                if seen.insert(child) {
                    if let Some(member) = hold(child, kernel_parent, &mut budget) {
                        stop(&member);
                        members.push(member);
                    }
                }
            }
            i += 1;
        }
        // A member whose child the server is forking right now: wait for it (unless the server
        // itself is a member, stopped, and so forks nothing more).
        let awaited = adopted.as_ref().is_some_and(|a| {
            !seen.contains(&a.parent) && a.pending.iter().any(|p| seen.contains(p))
        });
        if (members.len() == before && frozen && !awaited) || Instant::now() >= give_up {
            break;
        }
        while !members.iter().all(|m| settled(m.pid)) && Instant::now() < give_up {
            std::thread::sleep(SETTLE_POLL);
        }
        if awaited {
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

/// Moves `pid` (0: the caller) into the process group of `of`, as a child of `of` would start
/// (called by both the child and its parent, as `lead_new_group`). Fails if `of` is in another
/// session, or gone.
pub fn join_group_of(pid: Pid, of: Pid) -> nix::Result<()> {
    let group = nix::unistd::getpgid(Some(of))?;
    match nix::unistd::setpgid(pid, group) {
        Ok(()) | Err(Errno::ESRCH | Errno::EACCES) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::sys::testutil::{
        fork_lock, pipe, read_to_string, readable_within, sh, sleeper, wait_code,
    };

    #[test]
    fn parent_of_parses_awkward_names() {
        assert_eq!(parent_of("123 (sh) S 45 123 123 0"), Some(45));
        assert_eq!(parent_of("123 (a) b) (c) R 7 1 1"), Some(7));
        assert_eq!(parent_of("123 (x y z) Z 0 0 0"), Some(0));
        assert_eq!(parent_of("123 (sh"), None);
        assert_eq!(parent_of("123 (sh) S"), None);
    }

    #[test]
    fn this_process_is_its_parents_child() {
        let parent = nix::unistd::getppid().as_raw();
        assert_eq!(read_parent(std::process::id() as i32), Some(parent));
        assert!(children_by_parent()[&parent].contains(&(std::process::id() as i32)));
    }

    /// Whether the process behind `fd` ends within ten seconds.
    fn ends(fd: BorrowedFd<'_>) -> bool {
        readable_within(fd, 10.0)
    }

    /// Starts `script` (new group or not) with fd 3 a pipe on which it writes PIDs, one a
    /// line, then closes; returns the child, its pidfd, and pidfds of the PIDs written.
    /// Any `more` descriptors follow from fd 4.
    fn tree(
        script: &str,
        new_group: bool,
        more: &[BorrowedFd<'_>],
    ) -> (Pid, OwnedFd, Vec<OwnedFd>) {
        let (r, w) = pipe();
        let fds: Vec<_> = std::iter::once(w.as_fd())
            .chain(more.iter().copied())
            .collect();
        let root = sh(script, &fds, new_group, &[]);
        let root_fd = pidfd::open(root).unwrap();
        drop(w);
        let out = read_to_string(r);
        let members = out
            .split_whitespace()
            .map(|pid| pidfd::open(Pid::from_raw(pid.parse().unwrap())).unwrap())
            .collect();
        (root, root_fd, members)
    }

    /// Two levels below the root: a shell and its sleep, each below the one before.
    const TWO_LEVELS: &str = "/bin/sh -c '/bin/sleep 100 3>&- & echo $! >&3; exec 3>&-; wait' & \
                              echo $! >&3; exec 3>&-; wait";

    #[test]
    fn kill_reaches_every_descendant() {
        let _fork = fork_lock();
        let (root, root_fd, members) = tree(TWO_LEVELS, false, &[]);
        assert_eq!(members.len(), 2);
        signal_tree(root, Some(root_fd.as_fd()), None, Signal::SIGKILL, &|| None);
        assert_eq!(wait_code(root), -(Signal::SIGKILL as i32));
        for member in &members {
            assert!(ends(member.as_fd()));
        }
    }

    #[test]
    fn term_reaches_every_descendant_without_pidfd() {
        let _fork = fork_lock();
        let (root, _root_fd, members) = tree(TWO_LEVELS, false, &[]);
        signal_tree(root, None, None, Signal::SIGTERM, &|| None);
        assert_eq!(wait_code(root), -(Signal::SIGTERM as i32));
        for member in &members {
            assert!(ends(member.as_fd()));
        }
    }

    /// A member whose parent already exited (adopted elsewhere) is reached through the group.
    #[test]
    fn group_reaches_orphans() {
        let _fork = fork_lock();
        let script = "(/bin/sleep 100 3>&- 4<&- & echo $! >&3); exec 3>&-; read x <&4";
        let (hold_r, _hold_w) = pipe();
        let (root, root_fd, orphans) = tree(script, true, &[hold_r.as_fd()]);
        assert_eq!(orphans.len(), 1);
        // Not a descendant any more: without the group it is left alone.
        signal_tree(root, Some(root_fd.as_fd()), None, Signal::SIGUSR1, &|| None);
        assert_eq!(wait_code(root), -(Signal::SIGUSR1 as i32));
        assert!(
            !readable_within(orphans[0].as_fd(), 0.1),
            "the orphan was signalled"
        );
        pidfd::send_signal(orphans[0].as_fd(), Signal::SIGKILL as i32).unwrap();
        assert!(ends(orphans[0].as_fd()));

        let (root, root_fd, orphans) = tree(script, true, &[hold_r.as_fd()]);
        signal_tree(
            root,
            Some(root_fd.as_fd()),
            Some(root),
            Signal::SIGKILL,
            &|| None,
        );
        assert_eq!(wait_code(root), -(Signal::SIGKILL as i32));
        assert!(ends(orphans[0].as_fd()));
    }

    /// A member that ignores the signal is not left stopped: SIGCONT follows.
    #[test]
    fn members_that_ignore_it_run_on() {
        let _fork = fork_lock();
        let (r, w) = pipe();
        let (ready_r, ready_w) = pipe();
        let root = sh(
            "trap '' TERM; exec 4>&-; read x <&3; exit 6",
            &[r.as_fd(), ready_w.as_fd()],
            true,
            &[],
        );
        // Until its `trap` has run, a TERM would kill it: wait until it closes fd 4.
        drop(ready_w);
        assert_eq!(read_to_string(ready_r), "");
        signal_tree(root, None, Some(root), Signal::SIGTERM, &|| None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!settled(root), "left stopped");
        drop(w);
        assert_eq!(wait_code(root), 6);
    }

    #[test]
    fn lead_new_group_after_exec_or_exit_is_fine() {
        let _fork = fork_lock();
        let (pid, hold) = sleeper(false);
        // The child has exec'd (posix_spawn returns after the exec): EACCES, taken as done.
        assert_eq!(lead_new_group(pid), Ok(()));
        drop(hold);
        assert_eq!(wait_code(pid), 0);
        // No such process: ESRCH, taken as done.
        assert_eq!(lead_new_group(Pid::from_raw(1 << 23)), Ok(()));
    }
}
