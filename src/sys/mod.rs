//! Thin wrappers over the system calls procstart needs and `nix` lacks, in nix's style:
//! every call returns `nix::Result`, every `unsafe` block says why it is sound.

pub mod fork;
pub mod mem;
pub mod pdeath;
pub mod pidfd;
pub mod pipe;
pub mod poll;
pub mod proctree;
pub mod socket;
pub mod spawn;
pub mod thread;
pub mod wait;

#[cfg(test)]
pub(crate) mod testutil;
