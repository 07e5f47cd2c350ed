//! Who asked for each of the fork server's children. The server is every child's kernel parent,
//! but each was asked for by a process of the user's tree (the requester, known from the
//! connection's peer credentials); a tree walk (`terminate(tree=True)` and friends) must find a
//! process's forkserver children under that process, not under the server. The server keeps the
//! list in a file beside its socket, rewritten at each fork and reap, which the walk reads.
//!
//! The list is rewritten in place, with one `pwrite` (a new file and a rename per fork cost
//! ~0.2 ms each on a disk-backed temporary directory, a third of a fork-server start):
//!
//! ```text
//! list <generation>
//! <child pid> <requester pid>      one per child; child 0 while a child is being forked for
//! ...                              that requester, its PID not known yet, so that a walk that
//! end <generation>                 has stopped the requester waits for the child
//! ```
//!
//! followed by whatever an older, longer list left. A reader takes the lines between a `list`
//! and the `end` of the same generation, and reads again if it caught a write half-way.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::sys::proctree::Adopted;

const FILE_NAME: &str = "children";
/// Reads of a list caught half-way before the walk goes on without it.
const READ_ATTEMPTS: usize = 5;

/// The file of the server whose socket is at `address`.
pub fn file(address: &Path) -> Option<PathBuf> {
    Some(address.parent()?.join(FILE_NAME))
}

/// The server's side: its list, open for the server's life.
pub struct Published {
    file: File,
    generation: u64,
}

impl Published {
    /// Creates the list of the server whose socket is at `address`; `None` if it cannot be
    /// made (tree walks then find the server's children under the server only).
    pub fn create(address: &Path) -> Option<Self> {
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(file(address)?)
            .ok()?;
        Some(Published {
            file,
            generation: 0,
        })
    }

    /// Replaces the list by `entries` (child, requester).
    pub fn publish(&mut self, entries: impl Iterator<Item = (i32, i32)>) {
        self.generation += 1;
        let mut text = format!("list {}\n", self.generation);
        for (child, requester) in entries {
            let _ = writeln!(text, "{child} {requester}");
        }
        let _ = writeln!(text, "end {}", self.generation);
        let _ = self.file.write_all_at(text.as_bytes(), 0);
    }
}

/// The entries of one whole list in `text`; `None` if it holds none (caught half-way).
fn parse(text: &str, server: Pid) -> Option<Adopted> {
    let mut lines = text.lines();
    let generation = lines.next()?.strip_prefix("list ")?;
    let mut adopted = Adopted {
        parent: server.as_raw(),
        children: Vec::new(),
        pending: Vec::new(),
    };
    for line in lines {
        if line.strip_prefix("end ") == Some(generation) {
            return Some(adopted);
        }
        let (child, requester) = line.split_once(' ')?;
        let (child, requester) = (child.parse::<i32>().ok()?, requester.parse::<i32>().ok()?);
        if child == 0 {
            adopted.pending.push(requester);
        } else {
            adopted.children.push((child, requester));
        }
    }
    None
}

/// The children the server at `address` (process `server`) made for others, as it last listed
/// them; `None` if it keeps no list.
pub fn read(address: &Path, server: Pid) -> Option<Adopted> {
    let path = file(address)?;
    (0..READ_ATTEMPTS).find_map(|_| parse(&std::fs::read_to_string(&path).ok()?, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("procstart-tree-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("socket")
    }

    #[test]
    fn published_list_reads_back_with_pending_requesters_apart() {
        let address = scratch("back");
        let mut list = Published::create(&address).unwrap();
        list.publish([(101, 7), (0, 8), (102, 101)].into_iter());
        let adopted = read(&address, Pid::from_raw(5)).unwrap();
        std::fs::remove_dir_all(address.parent().unwrap()).unwrap();
        assert_eq!(adopted.parent, 5);
        assert_eq!(adopted.children, vec![(101, 7), (102, 101)]);
        assert_eq!(adopted.pending, vec![8]);
    }

    #[test]
    fn a_shorter_list_hides_what_a_longer_one_left() {
        let address = scratch("shorter");
        let mut list = Published::create(&address).unwrap();
        list.publish((1..50).map(|pid| (pid, 7)));
        list.publish([(3, 9)].into_iter());
        let adopted = read(&address, Pid::from_raw(5)).unwrap();
        std::fs::remove_dir_all(address.parent().unwrap()).unwrap();
        assert_eq!(adopted.children, vec![(3, 9)]);
    }

    #[test]
    fn a_list_caught_half_way_is_not_taken() {
        let server = Pid::from_raw(5);
        assert!(parse("list 4\n1 2\n3 4\nend 3\n", server).is_none());
        assert!(parse("list 4\n1 2\n3 ", server).is_none());
        assert!(parse("", server).is_none());
        assert_eq!(
            parse("list 4\nend 4\n9 9\nend 3\n", server)
                .unwrap()
                .children,
            vec![]
        );
    }

    #[test]
    fn no_list_no_adoptions() {
        let address = Path::new("/nonexistent-procstart-dir/socket");
        assert!(read(address, Pid::from_raw(5)).is_none());
    }
}
