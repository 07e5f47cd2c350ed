//! Who asked for each of the fork server's children. The server is every child's kernel parent,
//! but each was asked for by a process of the user's tree (the requester, known from the
//! connection's peer credentials); a tree walk (`terminate(tree=True)` and friends) must find a
//! process's forkserver children under that process, not under the server. The server keeps the
//! list in a file beside its socket, rewritten at each fork and reap, which the walk reads.
//!
//! One line per child, `<child pid> <requester pid>`, and `0 <requester pid>` while a child is
//! being forked for that requester (its PID not yet known), so that a walk that has stopped the
//! requester waits for the child instead of missing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::sys::proctree::Adopted;

const FILE_NAME: &str = "children";

/// The file of the server whose socket is at `address`.
pub fn file(address: &Path) -> Option<PathBuf> {
    Some(address.parent()?.join(FILE_NAME))
}

/// Replaces the server's list by `entries` (child, requester), whole: a reader never sees a
/// half-written list.
pub fn publish(address: &Path, entries: impl Iterator<Item = (i32, i32)>) {
    let Some(path) = file(address) else {
        return;
    };
    let mut text = String::new();
    for (child, requester) in entries {
        let _ = writeln!(text, "{child} {requester}");
    }
    let staged = path.with_extension("new");
    if std::fs::write(&staged, text).is_ok() {
        let _ = std::fs::rename(&staged, &path);
    }
}

/// The children the server at `address` (process `server`) made for others, as it last listed
/// them; `None` if it keeps no list.
pub fn read(address: &Path, server: Pid) -> Option<Adopted> {
    let text = std::fs::read_to_string(file(address)?).ok()?;
    let mut adopted = Adopted {
        parent: server.as_raw(),
        children: Vec::new(),
        pending: Vec::new(),
    };
    for line in text.lines() {
        let mut fields = line.split(' ').map(str::parse::<i32>);
        let (Some(Ok(child)), Some(Ok(requester))) = (fields.next(), fields.next()) else {
            continue;
        };
        if child == 0 {
            adopted.pending.push(requester);
        } else {
            adopted.children.push((child, requester));
        }
    }
    Some(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_list_reads_back_with_pending_requesters_apart() {
        let dir = std::env::temp_dir().join(format!("procstart-tree-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let address = dir.join("socket");
        publish(&address, [(101, 7), (0, 8), (102, 101)].into_iter());
        let adopted = read(&address, Pid::from_raw(5)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(adopted.parent, 5);
        assert_eq!(adopted.children, vec![(101, 7), (102, 101)]);
        assert_eq!(adopted.pending, vec![8]);
    }

    #[test]
    fn no_list_no_adoptions() {
        let address = Path::new("/nonexistent-procstart-dir/socket");
        assert!(read(address, Pid::from_raw(5)).is_none());
    }
}
