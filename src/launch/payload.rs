//! What a spawned and a fork-server child are started with alike: the process pickled by
//! procstart's Python half (`spawn.payload`) and written to a pipe once the child exists, and
//! one order of the descriptors the child starts with, which `procstart/spawn.py` reads.

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
    /// What `spawn.payload` pickled, as the pickler wrote it (`transport.rs`).
    payload: Bound<'py, PyList>,
    /// The descriptors of the stdlib objects the payload refers to (`duplicate_for_child`).
    inherited: Vec<i32>,
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
        let (payload, inherited) = hooks(py)?
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
        send_segments(py, self.payload_w, &self.payload)?;
        Ok(popen)
    }
}
