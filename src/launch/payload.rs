//! What a spawned and a fork-server child are started with alike: the process pickled by
//! procstart's Python half (`popen_spawn.payload`) and written to a socket once the child exists, and
//! one order of the descriptors the child starts with, which `procstart/spawn.py` reads.
//!
//! A socket rather than a pipe because it also tells when the child has loaded the payload:
//! the child closes its end then, and until then the parent keeps the target and arguments
//! alive (see `PayloadRefs` in `popen.rs`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{shutdown, socketpair, AddressFamily, Shutdown, SockFlag, SockType};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::os_error;
use crate::hooks::hooks;
use crate::link::ChildLink;
use crate::options::{LaunchOptions, ParentDeath};
use crate::popen::Popen;
use crate::program::{borrow_inherited, send_payload};
use crate::start_method::StartMethod;
use crate::streams::flush_std_streams;

pub struct PayloadLaunch<'py> {
    payload: Bound<'py, PyBytes>,
    /// The descriptors of the stdlib objects the payload refers to (`duplicate_for_child`).
    inherited: Vec<i32>,
    /// What the payload references that must outlive `start()` until the child has it; `None`
    /// for plain values, which reference nothing.
    refs: Option<Py<PyAny>>,
    child_end: OwnedFd,
    parent_end: OwnedFd,
    link: ChildLink,
}

impl<'py> PayloadLaunch<'py> {
    /// Pickles `process` for a child of `method`, first: an unpicklable target fails here,
    /// before anything is started or opened.
    pub fn prepare(
        process: &Bound<'py, PyAny>,
        method: StartMethod,
        options: &LaunchOptions,
    ) -> PyResult<Self> {
        let py = process.py();
        let (payload, inherited, refs): (_, _, Option<Py<PyAny>>) = hooks(py)?
            .payload
            .bind(py)
            .call1((
                process,
                method.name(),
                options.parent_death.map(ParentDeath::name),
            ))?
            .extract()?;
        flush_std_streams(py)?;
        let (parent_end, child_end) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(os_error)?;
        let link = ChildLink::new().map_err(os_error)?;
        Ok(PayloadLaunch {
            payload,
            inherited,
            refs,
            child_end,
            parent_end,
            link,
        })
    }

    /// The child's descriptors, in `procstart/spawn.py`'s order: the payload socket, the parent
    /// sentinel, the stdlib objects' descriptors, then (without pidfd) the exit pipe's write
    /// end.
    pub fn child_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut link = self.link.child_fds().into_iter();
        let mut fds = vec![self.child_end.as_fd()];
        fds.extend(link.next());
        fds.extend(borrow_inherited(&self.inherited));
        fds.extend(link);
        fds
    }

    /// The child holds an exit pipe (kernels without pidfd).
    pub fn has_exit_pipe(&self) -> bool {
        self.link.child_fds().len() > 1
    }

    /// Once the child exists and holds its descriptors: closes the child's ends here, makes
    /// the handle on it from the link, and writes the payload.
    pub fn finish(
        self,
        py: Python<'py>,
        popen: impl FnOnce(ChildLink) -> PyResult<Popen>,
    ) -> PyResult<Popen> {
        drop(self.child_end);
        let popen = popen(self.link)?;
        send_payload(py, self.parent_end.as_fd(), self.payload.as_bytes())?;
        // The child reads to the end of the payload; a child already gone makes this fail,
        // which its exit code explains better.
        let _ = shutdown(self.parent_end.as_raw_fd(), Shutdown::Write);
        Ok(match self.refs {
            Some(refs) => popen.holding_payload(refs, self.parent_end),
            None => popen,
        })
    }
}
