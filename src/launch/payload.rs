//! What a spawned and a fork-server child are started with alike: the process pickled by
//! procstart's Python half (`popen_spawn.payload`) and written to a pipe once the child exists
//! (`transport.rs`), and one order of the descriptors the child starts with, which
//! `procstart/spawn.py` reads.
//!
//! The pipe also tells when the child has loaded a payload that references something
//! (`refs`): the parent keeps its write end open after writing, the child closes its read end
//! once the payload is loaded (or dies), and the write end then reports `POLLERR`; until then
//! the parent keeps the target and arguments alive (`PayloadRefs` in `popen.rs`). Such a
//! payload is pickled, which the child reads exactly, never to the end of the pipe. A payload
//! of plain values (marshalled, read to the end) has its write end closed once written.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::transport::send_segments;
use crate::errors::os_error;
use crate::hooks::hooks;
use crate::link::ChildLink;
use crate::options::{LaunchOptions, ParentDeath};
use crate::popen::Popen;
use crate::program::borrow_inherited;
use crate::start_method::StartMethod;
use crate::streams::flush_std_streams;

pub struct PayloadLaunch<'py> {
    /// What `popen_spawn.payload` pickled, as the pickler wrote it (`transport.rs`).
    payload: Bound<'py, PyList>,
    /// The descriptors of the stdlib objects the payload refers to (`duplicate_for_child`).
    inherited: Vec<i32>,
    /// What the payload references that must outlive `start()` until the child has it; `None`
    /// for plain values, which reference nothing.
    refs: Option<Py<PyAny>>,
    payload_r: OwnedFd,
    payload_w: OwnedFd,
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
        let (payload_r, payload_w) = pipe2(OFlag::O_CLOEXEC).map_err(os_error)?;
        let link = ChildLink::new().map_err(os_error)?;
        Ok(PayloadLaunch {
            payload,
            inherited,
            refs,
            payload_r,
            payload_w,
            link,
        })
    }

    /// The child's descriptors, in `procstart/spawn.py`'s order: the payload pipe, the parent
    /// sentinel, the stdlib objects' descriptors, then (without pidfd) the exit pipe's write
    /// end.
    pub fn child_fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut link = self.link.child_fds().into_iter();
        let mut fds = vec![self.payload_r.as_fd()];
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
        drop(self.payload_r);
        let popen = popen(self.link)?;
        send_segments(py, self.payload_w.as_fd(), &self.payload)?;
        Ok(match self.refs {
            // The write end reports POLLERR once the child has closed its read end.
            Some(refs) => popen.holding_payload(refs, self.payload_w),
            None => {
                // Closed: the child reads a marshalled payload to the end.
                drop(self.payload_w);
                popen
            }
        })
    }
}
