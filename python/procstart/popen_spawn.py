"""The parent's half of starting a spawned or fork-server child (CPython's popen_spawn_posix, whose Popen its
popen_forkserver extends): the payload, and the descriptors the child inherits with it. The launchers are Rust
(`src/launch/spawn.rs`, `src/launch/forkserver.rs`) and call `payload` through `_hooks.py`.

In a module of its own, not in `spawn.py`: a child imports `spawn.py` to start, and needs none of this, nor the
resource tracker's module it imports.
"""

from __future__ import annotations

import os
import sys

from . import _procstart, process, reduction, resource_tracker, spawn


class _DupFd:
    """What stdlib's `reduction.DupFd` pickles for a descriptor passed to the child."""

    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return spawn.inherited_fd(self.fd)


class _SpawningPopen:
    """Stands for the child while its payload is pickled: stdlib objects (Queue, Pipe,
    Lock, Manager proxies) ask it, through `multiprocessing.context.get_spawning_popen()`,
    to pass their descriptors to the child."""

    DupFd = _DupFd

    def __init__(self, method):
        self.method = method
        self.fds = []

    def duplicate_for_child(self, fd):
        if fd in self.fds:
            return spawn.FIRST_INHERITED_FD + self.fds.index(fd)
        self.fds.append(fd)
        return spawn.FIRST_INHERITED_FD + len(self.fds) - 1


def _share_stdlib_tracker(prep, popen):
    """Pass stdlib's resource tracker, when this process runs one, as CPython's spawn does:
    the child's stdlib semaphores and shared memory then register with the same tracker."""
    tracker = getattr(sys.modules.get('multiprocessing.resource_tracker'), '_resource_tracker', None)
    if tracker is None or tracker is resource_tracker._resource_tracker:
        # Under install() stdlib's tracker is procstart's, which every child receives anyway.
        return
    fd = tracker._fd
    if fd is not None:
        prep['stdlib_tracker_fd'] = popen.duplicate_for_child(fd)


def _share_tracker(prep, popen):
    """Start procstart's resource tracker if this process has none (CPython's spawn does the
    same) and pass it: the whole tree shares one."""
    try:
        resource_tracker.ensure_running()
    except OSError as error:
        # No tracker (no memfd execution, no /proc): the child still starts; only the cleanup
        # after a crash is missing, and register() itself reports the error.
        import warnings

        warnings.warn(f"procstart's resource tracker could not start: {error}", RuntimeWarning, stacklevel=2)
        return
    prep['tracker'] = (popen.duplicate_for_child(_procstart._tracker_fd()), _procstart._tracker_pid())


def _share_forkserver(prep, popen):
    """Pass this process's fork server, so that the child's forkserver processes come from the
    same server instead of one server per process (CPython gh-86354)."""
    info = _procstart._forkserver_info()
    if info is not None:
        address, key, alive_fd, pid = info
        prep['forkserver'] = (address, key, popen.duplicate_for_child(alive_fd), pid)


def payload(process_obj, method='spawn', parent_death=None):
    """What a spawned or fork-server child reads, as the segments the launcher writes in order (`spawn.py`'s wire
    layout, `src/launch/transport.rs`), the descriptors it must inherit for them, and what the parent must keep
    alive until the child has loaded them (`None` for plain values, which hold no resource).
    `parent_death`: how the child is to die with this process, if it is (the launcher's choice, see
    `src/options.rs`)."""
    prep = spawn.get_preparation_data(process_obj._name)
    if parent_death is not None:
        prep['die_with_parent'] = (parent_death, os.getpid())
    env = getattr(process_obj, '_env', None)
    if method == 'forkserver' and env:
        # Set before the child imports anything of the parent's, as a spawned child has it
        # from its start (`src/launch/spawn.rs` puts it in the new program's environment).
        prep['env'] = env
    popen = _SpawningPopen(method)
    _share_stdlib_tracker(prep, popen)
    _share_tracker(prep, popen)
    _share_forkserver(prep, popen)
    data = reduction._marshalled(prep, process_obj)
    if data is not None:
        return [spawn._MARSHALLED, data], popen.fds, None
    pickler_class = reduction._pickler_class()
    if not reduction._main_is_importable():
        pickler_class = reduction._refusing_main_pickler(pickler_class)
    pickler_class = reduction._readonly_arrays_as_stdlib(pickler_class)
    mp_context = sys.modules.get('multiprocessing.context')
    process.set_spawning_popen(popen)
    if mp_context is not None:
        mp_context.set_spawning_popen(popen)
    segments = reduction._Segments([spawn._STREAMED])
    try:
        pickler_class(segments, reduction._STREAM_PROTOCOL).dump(prep)
        try:
            pickler_class(segments, reduction._STREAM_PROTOCOL).dump(process_obj)
        except Exception as error:
            reduction._explain(pickler_class, process_obj, error, method)
            raise
    except BaseException:
        # No export of the arguments' buffers outlives a failed start (a traceback keeps frames).
        segments.release()
        raise
    finally:
        process.set_spawning_popen(None)
        if mp_context is not None:
            mp_context.set_spawning_popen(None)
    # CPython deletes these after start(): an inline `Queue` then unlinks its semaphores while the child may still
    # be unpickling it. The launcher keeps them until the child has loaded its payload (differs on purpose).
    refs = tuple(getattr(process_obj, name, None) for name in ('_target', '_args', '_kwargs'))
    return segments, popen.fds, refs
