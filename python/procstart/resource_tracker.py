"""procstart's resource tracker, with the API of CPython's `multiprocessing.resource_tracker`.

A process of its own (`src/resource_tracker/program.rs`, a small program rather than an
interpreter) that unlinks the named resources -- POSIX semaphores (`'semaphore'`) and shared
memory segments (`'shared_memory'`) -- that processes of the tree registered and did not
unregister before they all exited, crashed or were killed. It is started once per process tree,
at the first registration or the first spawn or forkserver start, and shared with every child.

    from procstart import resource_tracker
    resource_tracker.register('/psm_0a1b2c', 'shared_memory')
    ...
    resource_tracker.unregister('/psm_0a1b2c', 'shared_memory')

The wire format is CPython's: one `REGISTER|UNREGISTER|PROBE:name:rtype` line per message, or, for
a name or type that such a line cannot carry (a colon, a newline), CPython 3.14's JSON line
`{"cmd":…,"rtype":…,"base64_name":…}` (on every version: the tracker is procstart's).
"""

from __future__ import annotations

import _thread
import errno
import os

from . import _procstart

__all__ = ['ensure_running', 'getfd', 'register', 'unregister']

# At most this long, a message is written with one write() and so never mixed with another
# process's (POSIX guarantees PIPE_BUF >= 512).
_MAX_MESSAGE = 512


class ResourceTracker:
    def __init__(self):
        self._lock = _thread.RLock()
        self._exitcode = None
        # CPython 3.14's switch, which its tests turn off: then every message is a JSON line.
        self._use_simple_format = True
        # A fork while another thread starts the tracker must not leave the child's lock held.
        os.register_at_fork(after_in_child=self._lock._at_fork_reinit)

    @property
    def _fd(self):
        return _procstart._tracker_fd()

    @property
    def _pid(self):
        return _procstart._tracker_pid()

    def getfd(self):
        self.ensure_running()
        return self._fd

    def ensure_running(self):
        """Start the tracker unless this process has a live one; one that died is replaced,
        with CPython's warning (what it tracked may leak)."""
        with self._lock:
            if _procstart._tracker_fd() is not None:
                if self._check_alive():
                    return
                _procstart._tracker_forget()
                import warnings

                warnings.warn(
                    'resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.',
                    stacklevel=2,
                )
            _procstart._tracker_start()

    def _check_alive(self):
        return _procstart._tracker_write(b'PROBE:0:noop\n')

    def register(self, name, rtype):
        """Register `name` (of type `rtype`) for unlinking if it is still registered when every
        process of the tree has exited."""
        self._send('REGISTER', name, rtype)

    def unregister(self, name, rtype):
        self._send('UNREGISTER', name, rtype)

    def _send(self, cmd, name, rtype):
        if not isinstance(name, str) or not isinstance(rtype, str):
            raise TypeError(f'name and rtype must be str, not {type(name).__name__} and {type(rtype).__name__}')
        if self._use_simple_format and not any(c in part for part in (name, rtype) for c in ':\n'):
            msg = f'{cmd}:{name}:{rtype}\n'.encode('ascii')
            if len(msg) > _MAX_MESSAGE:
                raise ValueError('msg too long')
        else:
            # As CPython 3.14: the name's bytes in base64, so that any name fits one atomic write. Imported here, off
            # every child's start-up path.
            import base64
            import json

            raw = name.encode('utf-8', 'surrogateescape')
            if len(raw) > 255:
                raise ValueError('shared memory name too long (max 255 bytes)')
            payload = {'cmd': cmd, 'rtype': rtype, 'base64_name': base64.urlsafe_b64encode(raw).decode('ascii')}
            msg = (json.dumps(payload, ensure_ascii=True, separators=(',', ':')) + '\n').encode('ascii')
            if len(msg) > _MAX_MESSAGE:
                raise ValueError('msg too long')
        with self._lock:
            self.ensure_running()
            if not _procstart._tracker_write(msg):
                # Died between the check and the write: one relaunch, then the message again.
                self.ensure_running()
                if not _procstart._tracker_write(msg):
                    raise BrokenPipeError(errno.EPIPE, 'resource_tracker: the tracker does not take messages')

    def _stop(self):
        """Close this process's end and wait for the tracker to exit (CPython's `_stop`, for
        tests); its exit code goes to `_exitcode`."""
        with self._lock:
            self._exitcode = _procstart._tracker_stop()


_resource_tracker = ResourceTracker()
ensure_running = _resource_tracker.ensure_running
register = _resource_tracker.register
unregister = _resource_tracker.unregister
getfd = _resource_tracker.getfd
