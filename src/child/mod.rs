//! Everything that runs in a new child, whichever start method made it: the bootstrap every
//! child shares (`bootstrap.rs`, CPython's `BaseProcess._bootstrap`), dying with the parent
//! (`parent_death.rs`), a big argument's pages faulted in while the payload is read into them
//! (`prefault.rs`), and the entries through which a spawned or fork-server child, once
//! its payload is unpickled in Python (`procstart/spawn.py`), reaches that bootstrap. A fork
//! child enters it straight from `launch/fork.rs`; a fork-server child is forked by
//! `forkserver/server.rs`.

mod bootstrap;
mod parent_death;
mod prefault;

use pyo3::prelude::*;

pub use bootstrap::ChildSetup;
pub use parent_death::_die_with_parent;
pub use prefault::{_prefault, Prefault};

use crate::start_method::StartMethod;

/// For the fork server, before it serves: `prepare_children`, and the checks and imports a
/// fork-server child would otherwise repeat. Returns the devnull reader, which is the
/// server's `sys.stdin` too.
#[pyfunction]
pub fn _prepare_forked_children(py: Python<'_>) -> PyResult<Py<PyAny>> {
    crate::sys::pidfd::supported();
    bootstrap::prepare_children(py).map(|stdin| stdin.clone_ref(py))
}

/// The end of a spawned or fork-server child's entry (`procstart.spawn.run_child`): run the
/// unpickled process with the bootstrap every start method shares, and exit.
#[pyfunction]
pub fn _run_child(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    parent_sentinel: i32,
    forked: bool,
) -> PyResult<()> {
    let launcher = if forked {
        StartMethod::ForkServer
    } else {
        StartMethod::Spawn
    };
    ChildSetup::new(process, launcher)?.run(py, parent_sentinel)
}
