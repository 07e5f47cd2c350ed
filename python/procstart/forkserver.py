"""The forkserver start method, Python side: the server's start-up (preloading) and the entry of
each child it forks. The launcher, the server's loop and the protocol are Rust
(`src/forkserver/`: `client.rs`, `server.rs`, `protocol.rs`, which documents the wire format).

The server starts like a spawned child, as

    <executable> <interpreter flags> -c '<SERVER_CODE>'

with descriptor 3 the read end of its payload pipe, 4 the listening socket (in a private 0700
directory), 5 the read end of the alive pipe. The payload is the 32-byte key, an 8-byte
little-endian length and the socket's address, then the pickled preparation data
(`spawn.get_preparation_data`) with the preload list added.

A forked child reads the same payload a spawned child reads (`spawn.run_child`), from the pipe
whose read end came with the request.

Every connection authenticates as CPython's `multiprocessing.connection` does (3.12 and later, `{sha256}`), so
`connection.Client(_forkserver._forkserver_address, authkey=_forkserver._forkserver_authkey)` can handshake with the
server, as with CPython 3.14's.
"""

from __future__ import annotations

import _thread
import os
import sys

from . import _procstart, process, spawn
from .context import _default_context

LISTENER_FD = 4
ALIVE_FD = 5
SERVER_CODE = spawn.entry_code('procstart.forkserver', 'server_main')

_KEY_LEN = 32
_LENGTH_BYTES = 8


class ForkServer:
    """This process's fork server, with the attributes of CPython's `forkserver.ForkServer`
    that programs and CPython's tests read."""

    def __init__(self):
        self._lock = _thread.allocate_lock()
        # A fork while another thread starts the server must not leave the child's lock held.
        os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self):
        self._lock = _thread.allocate_lock()

    @property
    def _forkserver_pid(self):
        return _procstart._forkserver_pid()

    @property
    def _forkserver_address(self):
        info = _procstart._forkserver_info()
        return None if info is None else os.fsdecode(info[0])

    @property
    def _forkserver_alive_fd(self):
        info = _procstart._forkserver_info()
        return None if info is None else info[2]

    @property
    def _forkserver_authkey(self):
        """The key this process presents to the server (CPython 3.14's attribute): the server's own, or one assigned
        here; None without either. Assigning None, deleting the attribute or a new server brings back the server's own
        (so ``unittest.mock.patch.object`` restores it, as CPython's tests expect)."""
        return _procstart._forkserver_key()

    @_forkserver_authkey.setter
    def _forkserver_authkey(self, key):
        _procstart._forkserver_use_key(key)

    @_forkserver_authkey.deleter
    def _forkserver_authkey(self):
        _procstart._forkserver_use_key(None)

    def set_forkserver_preload(self, modules_names, **kwargs):
        """`on_error=` (keyword-only) from Python 3.15 on, as CPython's."""
        _default_context.set_forkserver_preload(modules_names, **kwargs)

    def ensure_running(self):
        """Start the server unless it runs (CPython's `ensure_running`); a server that died is
        replaced."""
        with self._lock:
            if _procstart._forkserver_alive():
                return
            import pickle

            from . import resource_tracker

            # The tracker first, as CPython's ensure_running: it is told the server's socket directory and removes it
            # if the server and every process that used it are killed (src/resource_tracker/program.rs).
            try:
                resource_tracker.ensure_running()
            except OSError:
                pass  # the start that follows says so (spawn._share_tracker)

            prep = spawn.get_preparation_data('ForkServer')
            # The server's own authkey is never used: each child gets its parent's in its payload.
            del prep['authkey']
            prep['preload'] = _procstart.get_preload()
            prep['preload_on_error'] = _procstart.get_preload_on_error()
            _procstart._forkserver_start(spawn.command_line(SERVER_CODE), pickle.dumps(prep))

    def _stop(self):
        """Stop using the server and, in the process that started it, wait for it to exit."""
        with self._lock:
            _procstart._forkserver_stop()


_forkserver = ForkServer()
ensure_running = _forkserver.ensure_running
set_forkserver_preload = _forkserver.set_forkserver_preload


# -- the server ----------------------------------------------------------------------------------


def server_main():
    """Entry point of the server: preload as CPython's `forkserver.main`, then serve."""
    import pickle
    import signal

    data = spawn.read_payload(spawn.PAYLOAD_FD)
    os.close(spawn.PAYLOAD_FD)
    key = data[:_KEY_LEN]
    length = int.from_bytes(data[_KEY_LEN : _KEY_LEN + _LENGTH_BYTES], 'little')
    address = data[_KEY_LEN + _LENGTH_BYTES : _KEY_LEN + _LENGTH_BYTES + length]
    prep = pickle.loads(data[_KEY_LEN + _LENGTH_BYTES + length :])
    del data
    main = process._MainProcess(config={'authkey': process.AuthenticationString(os.urandom(32)), 'semprefix': '/mp'})
    _procstart._set_current_process(main)
    # Ctrl-C in a terminal reaches the whole process group: the server outlives it, as CPython's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent that ignores SIGCHLD would pass that on (the kernel would then reap the server's
    # children before it can report their status), and its blocked signals too.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        _preload(prep)
    except BaseException:
        # Dying before it serves (a preload that fails with on_error='fail'): the serving loop, which removes the
        # socket and its directory at its end, never runs, and the directory must not outlive the server.
        _remove_socket(address)
        raise
    # CPython's server closes its stdin too; the same devnull reader serves every child.
    sys.stdin = _procstart._prepare_forked_children()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    # SIGTERM (a `kill`, a supervisor stopping the process group) ends the serving loop, which
    # removes the socket and its directory, instead of leaving them behind in $TMPDIR. Blocked
    # but while the loop waits (src/forkserver/server.rs), so a child never inherits it pending.
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM,))
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _procstart._forkserver_serve(LISTENER_FD, ALIVE_FD, key, address)
    except _Terminated:
        # Cleaned up: now die of the signal, as without the handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM,))
    os._exit(0)


class _Terminated(BaseException):
    pass


def _terminated(signum, frame):
    raise _Terminated


def _remove_socket(address):
    for remove, path in ((os.unlink, address), (os.rmdir, os.path.dirname(address))):
        try:
            remove(path)
        except OSError:
            pass


def _preload(prep):
    """Import the preload modules once, in the parent's `sys.path`, `sys.argv` and directory, so
    that every child finds them imported; `__main__` as the parent's main module, as
    `__mp_main__` (a main module that starts processes unguarded fails here, as in a spawned
    child).

    A module that fails to import is skipped; from Python 3.15 on, as `set_forkserver_preload`'s
    `on_error` says (CPython's `forkserver._handle_preload`, gh-141860): skipped silently
    (`'ignore'`), with an `ImportWarning` (`'warn'`), or the error ends the server (`'fail'`: its
    traceback on stderr, and starting a process fails). Before 3.15, a main module that fails is
    reported on stderr and each child then runs it itself, reporting the error where it starts
    (CPython's server dies of it)."""
    preload = prep.pop('preload')
    on_error = prep.pop('preload_on_error', 'ignore') if sys.version_info >= (3, 15) else None
    if not preload:
        return
    for key in ('sys_path', 'sys_argv', 'dir', 'orig_dir'):
        if key in prep:
            spawn.prepare({key: prep[key]})
    main = _procstart.current_process()
    if '__main__' in preload:
        main._inheriting = True
        try:
            if 'init_main_from_name' in prep:
                spawn._fixup_main_from_name(prep['init_main_from_name'])
            elif 'init_main_from_path' in prep:
                spawn._fixup_main_from_path(prep['init_main_from_path'])
        except Exception as error:
            if on_error is None:
                _report_main_error()
            else:
                main_from = prep.get('init_main_from_path', prep.get('init_main_from_name'))
                _preload_failed(on_error, f'__main__ from {main_from!r}', error)
        except BaseException:
            _report_main_error()
        finally:
            del main._inheriting
    for name in preload:
        if name != '__main__':
            try:
                __import__(name)
            except ImportError as error:
                if on_error is not None:
                    _preload_failed(on_error, f'module {name!r}', error)


def _report_main_error():
    # Each child then runs the main module itself and reports the error where it starts.
    import traceback

    traceback.print_exc()


def _preload_failed(on_error, what, error):
    """A preload import failed: what `on_error` says to do (Python 3.15), with CPython's warning."""
    if on_error == 'fail':
        raise error
    if on_error == 'warn':
        import warnings

        warnings.warn(f'Failed to preload {what}: {error}', ImportWarning, stacklevel=3)


# -- a child -------------------------------------------------------------------------------------


def child_main(payload_fd, parent_sentinel, inherited_fds):
    """Entry point of a child, just forked by the server (`src/forkserver/server.rs`)."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The server's SIGTERM handling is the server's: a SIGTERM sent meanwhile waits, blocked,
    # and kills the child now.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM,))
    spawn._inherited_fds = inherited_fds
    spawn.run_child(payload_fd, parent_sentinel, forked=True)
