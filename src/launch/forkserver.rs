//! The forkserver start method: the fork server (`forkserver/`) forks the child and hands back
//! its pidfd; the child reads the payload `procstart/popen_spawn.py` pickles, as a spawned child does
//! (CPython's `popen_forkserver.Popen._launch`).

use nix::errno::Errno;
use nix::unistd::Pid;
use pyo3::prelude::*;

use super::payload::PayloadLaunch;
use crate::errors::os_error;
use crate::forkserver::client::{connect_to_new_process, preload_crash_note, Asked};
use crate::forkserver::protocol::{Reply, FLAG_EXIT_PIPE, FLAG_NEW_GROUP};
use crate::hooks::hooks;
use crate::options::LaunchOptions;
use crate::popen::Popen;
use crate::start_method::StartMethod;

pub fn launch(
    py: Python<'_>,
    process: &Bound<'_, PyAny>,
    options: &LaunchOptions,
) -> PyResult<Popen> {
    let mut relaunched = false;
    loop {
        hooks(py)?.forkserver_ensure_running.call0(py)?;
        // Pickled once the server is known: the payload names it for the child.
        let launch = PayloadLaunch::prepare(process, StartMethod::ForkServer, options)?;
        let mut flags = 0;
        if launch.has_exit_pipe() {
            flags |= FLAG_EXIT_PIPE;
        }
        if options.new_group {
            flags |= FLAG_NEW_GROUP;
        }
        let (conn, reply) = match connect_to_new_process(py, flags, &launch.child_fds())? {
            Asked::Answered(conn, reply) => (conn, reply),
            Asked::ServerGone if !relaunched => {
                relaunched = true;
                continue;
            }
            Asked::ServerGone => return Err(preload_crash_note(py, os_error(Errno::ECONNREFUSED))),
            Asked::Interrupted => continue,
        };
        return launch.finish(py, |link| match reply {
            Reply::Child(pid, pidfd) => {
                Popen::served_from_link(link, Pid::from_raw(pid), pidfd, conn).map_err(os_error)
            }
            Reply::Failed(e) => Err(os_error(e)),
        });
    }
}
