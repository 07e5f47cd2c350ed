//! The fork server. Until its issue lands this holds only the preload list that
//! `set_forkserver_preload` configures for a server started later.

use std::sync::Mutex;

use pyo3::prelude::*;

static PRELOAD: Mutex<Option<Vec<String>>> = Mutex::new(None);

pub fn set_preload(modules: Vec<String>) {
    *PRELOAD.lock().unwrap() = Some(modules);
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
