//! Faulting memory in before it is written.

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

/// Faults in, writable, the whole pages within `len` bytes from `start` (`MADV_POPULATE_WRITE`,
/// Linux 5.14; `EINVAL` before): the faults writing them would take, taken now, with nothing
/// written. `ENOMEM` where nothing is mapped.
pub fn populate_write(start: usize, len: usize) -> nix::Result<()> {
    let page = page_size();
    let first = start.next_multiple_of(page);
    let end = start.saturating_add(len) / page * page;
    let Some(addr) = NonNull::new(first as *mut c_void).filter(|_| end > first) else {
        return Ok(());
    };
    // SAFETY: MADV_POPULATE_WRITE changes no byte that any code can see: it makes the kernel
    // take now the page faults a write would take (a zeroed page for anonymous memory, a copy of
    // the same bytes for a private file mapping), and fails with ENOMEM/EFAULT rather than touch
    // a range that is not mapped writable. Whatever `start` points at, no memory is invalidated.
    unsafe { madvise(addr, end - first, MmapAdvise::MADV_POPULATE_WRITE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populates_without_changing_a_byte() {
        let mut data: Vec<u8> = (0..(1usize << 20)).map(|i| i as u8).collect();
        let before = data.clone();
        populate_write(data.as_mut_ptr() as usize + 1, data.len() - 1).unwrap();
        assert_eq!(data, before);
    }

    #[test]
    fn a_range_within_one_page_is_nothing_to_do() {
        populate_write(4097, 100).unwrap();
        populate_write(0, 0).unwrap();
    }

    #[test]
    fn an_unmapped_range_is_an_error_not_a_fault() {
        assert!(populate_write(4096, 4096).is_err());
    }
}
