//! This process's memory named by address: `Span`, and faulting it in before it is written.

use std::ffi::c_void;
use std::ptr::NonNull;

use nix::sys::mman::{madvise, MmapAdvise};
use nix::unistd::{sysconf, SysconfVar};

fn page_size() -> usize {
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096)
}

/// A range of this process's memory, by address and length rather than as a Rust slice: it may
/// belong to a Python object that another thread writes to meanwhile (a `bytearray` while the GIL
/// is released), which no `&[u8]` may see. Only the kernel reads or faults it in, and fails with
/// `EFAULT`/`ENOMEM` where nothing is mapped: any span is sound to hand it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    pub fn of(bytes: &[u8]) -> Span {
        Span {
            start: bytes.as_ptr() as usize,
            len: bytes.len(),
        }
    }

    /// The part of the span from `offset` on.
    pub fn from(self, offset: usize) -> Span {
        let offset = offset.min(self.len);
        Span {
            start: self.start + offset,
            len: self.len - offset,
        }
    }

    pub fn iovec(self) -> libc::iovec {
        libc::iovec {
            iov_base: self.start as *mut c_void,
            iov_len: self.len,
        }
    }
}

/// Faults in, writable, the whole pages within `span` (`MADV_POPULATE_WRITE`, Linux 5.14;
/// `EINVAL` before): the faults writing them would take, taken now, with nothing written.
/// `ENOMEM` where nothing is mapped.
pub fn populate_write(span: Span) -> nix::Result<()> {
    let page = page_size();
    let first = span.start.next_multiple_of(page);
    let end = span.start.saturating_add(span.len) / page * page;
    let Some(addr) = NonNull::new(first as *mut c_void).filter(|_| end > first) else {
        return Ok(());
    };
    // SAFETY: MADV_POPULATE_WRITE changes no byte that any code can see: it makes the kernel
    // take now the page faults a write would take (a zeroed page for anonymous memory, a copy of
    // the same bytes for a private file mapping), and fails with ENOMEM/EFAULT rather than touch
    // a range that is not mapped writable. Whatever the span names, no memory is invalidated.
    unsafe { madvise(addr, end - first, MmapAdvise::MADV_POPULATE_WRITE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populates_without_changing_a_byte() {
        let data: Vec<u8> = (0..(1usize << 20)).map(|i| i as u8).collect();
        let before = data.clone();
        populate_write(Span::of(&data).from(1)).unwrap();
        assert_eq!(data, before);
    }

    #[test]
    fn a_range_within_one_page_is_nothing_to_do() {
        populate_write(Span {
            start: 4097,
            len: 100,
        })
        .unwrap();
        populate_write(Span { start: 0, len: 0 }).unwrap();
    }

    #[test]
    fn an_unmapped_range_is_an_error_not_a_fault() {
        assert!(populate_write(Span {
            start: 4096,
            len: 4096
        })
        .is_err());
    }
}
