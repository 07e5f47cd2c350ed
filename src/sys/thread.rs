//! Helper threads of a Python process.

use std::thread::JoinHandle;

use nix::sys::signal::{SigSet, SigmaskHow};

/// Starts a thread named `name` with a `stack`-byte stack and every signal blocked (a thread
/// inherits its creator's mask), so that signals meant for the process go to the threads that
/// handle them: CPython runs its handlers on the main thread, which a signal caught here would
/// not interrupt.
pub fn spawn_deaf<F>(name: &str, stack: usize, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let previous = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let started = std::thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f);
    previous.thread_set_mask()?;
    started
}
