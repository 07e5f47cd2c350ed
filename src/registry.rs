//! Which process this is, as `multiprocessing` sees it: the current process object, its
//! parent and the children started here and not yet known to have finished (CPython's
//! `process._current_process`, `_parent_process` and `_children`). A new child resets all
//! three ([`enter_child`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::hooks::hooks;

/// The numbering behind default names `Process-N:M`; restarts at 1 in every child.
static COUNTER: AtomicU64 = AtomicU64::new(1);
static CURRENT: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
static PARENT: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
/// Started and not yet known to be finished: CPython's `process._children`.
static CHILDREN: Mutex<Vec<Py<PyAny>>> = Mutex::new(Vec::new());

#[pyfunction]
pub fn current_process(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    if let Some(current) = CURRENT.lock().unwrap().as_ref() {
        return Ok(current.bind(py).clone());
    }
    let main = hooks(py)?.main_process.bind(py).call0()?;
    let mut slot = CURRENT.lock().unwrap();
    Ok(slot.get_or_insert_with(|| main.unbind()).bind(py).clone())
}

/// A child started here: CPython's `_children.add(self)` in `start()`.
pub fn add_child(child: &Bound<'_, PyAny>) {
    CHILDREN.lock().unwrap().push(child.clone().unbind());
}

pub fn discard_child<T>(child: &Bound<'_, T>) {
    CHILDREN
        .lock()
        .unwrap()
        .retain(|listed| listed.as_ptr() != child.as_ptr());
}

/// The next number of a default name `Process-N:M`.
pub fn next_number() -> u64 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// The registry's current content, copied so that no lock is held while it is used.
pub fn children(py: Python<'_>) -> Vec<Py<PyAny>> {
    CHILDREN
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.clone_ref(py))
        .collect()
}

/// A child's parent as the parent described it before `fork()`; the `_ParentProcess` object
/// is built only if the child asks for it.
pub struct ParentInfo {
    pub name: Py<PyAny>,
    pub pid: i32,
    pub sentinel: i32,
}

static PARENT_INFO: Mutex<Option<ParentInfo>> = Mutex::new(None);

/// In a new child: the child's own `Process` object becomes the current process and it
/// starts with no children of its own.
pub fn enter_child(current: Py<PyAny>, parent: ParentInfo) {
    COUNTER.store(1, Ordering::SeqCst);
    let inherited = std::mem::take(&mut *CHILDREN.lock().unwrap());
    let old_current = CURRENT.lock().unwrap().replace(current);
    let old_parent = PARENT.lock().unwrap().take();
    *PARENT_INFO.lock().unwrap() = Some(parent);
    // The parent's objects are never used here, and releasing them would only write to
    // (and so copy) the pages they live on; a fork child exits without freeing anything.
    std::mem::forget((inherited, old_current, old_parent));
}

#[pyfunction]
pub fn parent_process(py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
    if let Some(parent) = PARENT.lock().unwrap().as_ref() {
        return Ok(Some(parent.clone_ref(py)));
    }
    let Some((name, pid, sentinel)) = PARENT_INFO
        .lock()
        .unwrap()
        .as_ref()
        .map(|info| (info.name.clone_ref(py), info.pid, info.sentinel))
    else {
        return Ok(None);
    };
    let parent = hooks(py)?
        .parent_process
        .bind(py)
        .call1((name, pid, sentinel))?
        .unbind();
    let mut slot = PARENT.lock().unwrap();
    Ok(Some(slot.get_or_insert(parent).clone_ref(py)))
}

/// Makes `process` the current process: a spawned child's provisional main process while it
/// prepares (`procstart.spawn.spawn_main`).
#[pyfunction]
pub fn _set_current_process(process: Py<PyAny>) {
    let old = CURRENT.lock().unwrap().replace(process);
    drop(old);
}

pub fn has_children() -> bool {
    !CHILDREN.lock().unwrap().is_empty()
}
