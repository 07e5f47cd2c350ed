//! The fork server: a server process, started once from a fresh interpreter, that forks a
//! child per request (CPython's `forkserver`; the launcher is `launch/forkserver.rs`).
//!
//! - `client`: starting the server, finding it again, and asking it for a child;
//! - `server`: the server's accept loop, run with the GIL released;
//! - `protocol`: the wire format and the mutual authentication;
//! - `tree`: who asked for each child, for walks of the user's process tree.
//!
//! The Python side (`procstart/forkserver.py`) builds the server's and the children's payloads
//! and runs the server's and the children's Python entry points.

pub mod client;
pub mod protocol;
pub mod server;
pub mod tree;

use std::sync::Mutex;

use pyo3::prelude::*;

static PRELOAD: Mutex<Option<Vec<String>>> = Mutex::new(None);
/// `set_forkserver_preload(..., on_error=...)` (Python 3.15): `ignore`, `warn` or `fail`.
static PRELOAD_ON_ERROR: Mutex<&'static str> = Mutex::new("ignore");

/// Removes a server's socket, its list of children (`tree.rs`) and the private directory they are
/// in (`client::private_dir`).
pub fn remove_socket(address: &std::path::Path) {
    let _ = std::fs::remove_file(address);
    if let Some(children) = tree::file(address) {
        let _ = std::fs::remove_file(children);
    }
    if let Some(dir) = address.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

pub fn set_preload(modules: Vec<String>, on_error: &'static str) {
    *PRELOAD.lock().unwrap() = Some(modules);
    *PRELOAD_ON_ERROR.lock().unwrap() = on_error;
}

/// What a new server does when a preload module fails to import (`set_forkserver_preload`'s
/// `on_error`, Python 3.15): `'ignore'` unless configured.
#[pyfunction]
pub fn get_preload_on_error() -> &'static str {
    *PRELOAD_ON_ERROR.lock().unwrap()
}

/// The modules a new server imports before forking: `['__main__']` unless configured.
#[pyfunction]
pub fn get_preload() -> Vec<String> {
    PRELOAD
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| vec!["__main__".to_string()])
}
