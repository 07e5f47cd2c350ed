"""procstart's locks and semaphores: CPython's `multiprocessing.synchronize` classes over
procstart's `SemLock` (`src/semlock.rs`) and resource tracker.

As in CPython, a SemLock made for the fork start method is unlinked at once (fork children
inherit the mapping); for spawn and forkserver it keeps its name, is registered with the
resource tracker and unlinked when its owner finalises it -- or by the tracker, if the whole
tree ended without doing so. `Condition`, `Event` and `Barrier` are CPython's classes: they are
built from their context's `Lock`, `RLock` and `Semaphore`, which on a procstart context are
these.
"""

from __future__ import annotations

import multiprocessing.synchronize as _stdlib
from multiprocessing import util

from . import _procstart, process, resource_tracker
from .process import _keep_own_names

__all__ = ['BoundedSemaphore', 'Lock', 'RLock', 'SemLock', 'Semaphore']

RECURSIVE_MUTEX, SEMAPHORE = _stdlib.RECURSIVE_MUTEX, _stdlib.SEMAPHORE
SEM_VALUE_MAX = _procstart.SemLock.SEM_VALUE_MAX

_FORK_CONTEXT_ERROR = (
    'A SemLock created in a fork context is being shared with a process in a spawn context. This is not '
    'supported. Please use the same context to create multiprocessing objects and Process.'
)


def _after_fork(obj):
    obj._semlock._after_fork()


class SemLock(_stdlib.SemLock):
    """CPython's `synchronize.SemLock`, with procstart's semaphore and tracker."""

    _make_methods = _stdlib.SemLock._make_methods
    __enter__ = _stdlib.SemLock.__enter__
    __exit__ = _stdlib.SemLock.__exit__
    _make_name = staticmethod(_stdlib.SemLock._make_name)
    # CPython 3.14 (gh-115942, gh-132561): whether the semaphore is at zero, in any process. Only where the running
    # stdlib has it, as CPython's locks of that version do (_keep_own_names hides stdlib's own).
    if hasattr(_stdlib.SemLock, 'locked'):
        locked = _stdlib.SemLock.locked

    def __init__(self, kind, value, maxvalue, *, ctx):
        if ctx is None:
            ctx = _procstart._default_context().get_context()
        self._is_fork_ctx = ctx.get_start_method() == 'fork'
        for _ in range(100):
            try:
                sl = self._semlock = _procstart.SemLock(kind, value, maxvalue, self._make_name(), self._is_fork_ctx)
            except FileExistsError:
                pass
            else:
                break
        else:
            raise FileExistsError('cannot find name for semaphore')
        self._make_methods()
        util.register_after_fork(self, _after_fork)
        if sl.name is not None:
            resource_tracker.register(sl.name, 'semaphore')
            util.Finalize(self, SemLock._cleanup, (sl.name,), exitpriority=0)

    @staticmethod
    def _cleanup(name):
        _procstart.sem_unlink(name)
        resource_tracker.unregister(name, 'semaphore')

    def __getstate__(self):
        if not process.is_spawning():
            raise RuntimeError(
                f'{type(self).__name__} objects should only be shared between processes through inheritance'
            )
        if self._is_fork_ctx:
            raise RuntimeError(_FORK_CONTEXT_ERROR)
        sl = self._semlock
        return (sl.handle, sl.kind, sl.maxvalue, sl.name)

    def __setstate__(self, state):
        self._semlock = _procstart.SemLock._rebuild(*state)
        self._make_methods()
        # A rebuilt SemLock can be passed on again (gh-108520).
        self._is_fork_ctx = False


class Semaphore(SemLock, _stdlib.Semaphore):
    def __init__(self, value=1, *, ctx):
        SemLock.__init__(self, SEMAPHORE, value, SEM_VALUE_MAX, ctx=ctx)

    get_value = _stdlib.Semaphore.get_value
    __repr__ = _stdlib.Semaphore.__repr__


class BoundedSemaphore(Semaphore, _stdlib.BoundedSemaphore):
    def __init__(self, value=1, *, ctx):
        SemLock.__init__(self, SEMAPHORE, value, value, ctx=ctx)

    __repr__ = _stdlib.BoundedSemaphore.__repr__


class Lock(SemLock, _stdlib.Lock):
    def __init__(self, *, ctx):
        SemLock.__init__(self, SEMAPHORE, 1, 1, ctx=ctx)

    __repr__ = _stdlib.Lock.__repr__


class RLock(SemLock, _stdlib.RLock):
    def __init__(self, *, ctx):
        SemLock.__init__(self, RECURSIVE_MUTEX, 1, 1, ctx=ctx)

    __repr__ = _stdlib.RLock.__repr__


# The stdlib bases are for isinstance only: every name resolves as it would without them.
for _cls in (SemLock, Semaphore, BoundedSemaphore, Lock, RLock):
    _keep_own_names(_cls)
del _cls
