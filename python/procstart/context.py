"""Context objects: one per start method plus the default one behind the module-level API.

The start-method state machine is Rust's (`_procstart.BaseContext`/`DefaultContext`); this
module names each context's `Process` class and adds the factories stdlib contexts offer
(`Queue`, `Lock`, `Pool` …). Locks and semaphores are procstart's (`synchronize.py`); the other
factories build stdlib's pure-Python classes bound to the procstart context, so that they start
their helper processes, and take their locks, through procstart.
"""

from __future__ import annotations

import sys

from . import _procstart
from ._on_import import on_import
from ._procstart import BaseContext
from .process import Process, _adopt_base

__all__ = [
    'DefaultContext',
    'ForkContext',
    'ForkProcess',
    'ForkServerContext',
    'ForkServerProcess',
    'SpawnContext',
    'SpawnProcess',
]


class _StdlibError:
    """Class attribute resolving lazily to one of stdlib's exception classes, so that
    `except multiprocessing.TimeoutError` and `except ctx.TimeoutError` catch the same errors."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, obj, objtype=None):
        import multiprocessing

        return getattr(multiprocessing, self._name)


class _Factories:
    """The Python half of CPython's `BaseContext`: the object factories bound to this context, and the
    process queries (which `Process` class a context names is all that differs between contexts)."""

    current_process = staticmethod(_procstart.current_process)
    parent_process = staticmethod(_procstart.parent_process)
    active_children = staticmethod(_procstart.active_children)

    ProcessError = _StdlibError()
    BufferTooShort = _StdlibError()
    TimeoutError = _StdlibError()
    AuthenticationError = _StdlibError()

    def Manager(self):
        from multiprocessing.managers import SyncManager

        m = SyncManager(ctx=self.get_context())
        m.start()
        return m

    def Pipe(self, duplex=True):
        from multiprocessing.connection import Pipe

        return Pipe(duplex)

    def Lock(self):
        from .synchronize import Lock

        return Lock(ctx=self.get_context())

    def RLock(self):
        from .synchronize import RLock

        return RLock(ctx=self.get_context())

    def Condition(self, lock=None):
        from multiprocessing.synchronize import Condition

        return Condition(lock, ctx=self.get_context())

    def Semaphore(self, value=1):
        from .synchronize import Semaphore

        return Semaphore(value, ctx=self.get_context())

    def BoundedSemaphore(self, value=1):
        from .synchronize import BoundedSemaphore

        return BoundedSemaphore(value, ctx=self.get_context())

    def Event(self):
        from multiprocessing.synchronize import Event

        return Event(ctx=self.get_context())

    def Barrier(self, parties, action=None, timeout=None):
        from multiprocessing.synchronize import Barrier

        return Barrier(parties, action, timeout, ctx=self.get_context())

    def Queue(self, maxsize=0):
        from multiprocessing.queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize=0):
        from multiprocessing.queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self):
        from multiprocessing.queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        from multiprocessing.pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context())

    def RawValue(self, typecode_or_type, *args):
        from multiprocessing.sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type, size_or_initializer):
        from multiprocessing.sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type, *args, lock=True):
        from multiprocessing.sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        from multiprocessing.sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    def _check_available(self):
        # Every method here is available; stdlib's BaseContext.get_context asks, and after
        # procstart.install() its registry holds these contexts.
        pass

    def allow_connection_pickling(self):
        # As CPython: importing connection registers its reducers.
        from multiprocessing import connection  # noqa: F401

    def get_logger(self):
        from multiprocessing.util import get_logger

        return get_logger()

    def log_to_stderr(self, level=None):
        from multiprocessing.util import log_to_stderr

        return log_to_stderr(level)

    @property
    def reducer(self):
        from multiprocessing import reduction

        return reduction

    @reducer.setter
    def reducer(self, reduction):
        import multiprocessing.context

        multiprocessing.context.reduction = reduction


class ForkProcess(Process):
    _start_method = 'fork'


class SpawnProcess(Process):
    _start_method = 'spawn'


class ForkServerProcess(Process):
    _start_method = 'forkserver'


class ForkContext(_Factories, BaseContext):
    _name = 'fork'
    Process = ForkProcess


class SpawnContext(_Factories, BaseContext):
    _name = 'spawn'
    Process = SpawnProcess


class ForkServerContext(_Factories, BaseContext):
    _name = 'forkserver'
    Process = ForkServerProcess


class DefaultContext(_Factories, _procstart.DefaultContext):
    Process = Process


_concrete_contexts = {
    'fork': ForkContext(),
    'spawn': SpawnContext(),
    'forkserver': ForkServerContext(),
}


def _platform_default():
    """The platform's default context, determined when first needed (CPython 3.14's
    `_get_platform_default_context`, behind its `_default_context` cached property): forkserver
    from 3.14 on (gh-84559), but spawn where there is no writeable temporary directory for the
    fork server's socket (gh-155717, 3.14.9 and 3.15.1: as the running stdlib decides, with
    `multiprocessing.util._has_writeable_tempdir`, imported only then); fork before 3.14."""
    if sys.version_info < (3, 14):
        return _concrete_contexts['fork']
    from multiprocessing import util

    has_writeable_tempdir = getattr(util, '_has_writeable_tempdir', None)
    if has_writeable_tempdir is not None and not has_writeable_tempdir():
        return _concrete_contexts['spawn']
    return _concrete_contexts['forkserver']


# Before 3.14 the default is fixed (fork); from 3.14 on it is determined when first needed, so
# that importing procstart stays cheap and does not probe the temporary directory.
_default_context = DefaultContext(_concrete_contexts['fork'] if sys.version_info < (3, 14) else None)

# multiprocessing's module-level API is its default context's bound methods (multiprocessing/__init__.py). Each is
# bound once, here: `procstart` exports it, and install() gives stdlib's module the very same object.
_module_api_objects = {}


def _module_api(name):
    """`getattr(_default_context, name)`, the same object at every call."""
    if name not in _module_api_objects:
        _module_api_objects[name] = getattr(_default_context, name)
    return _module_api_objects[name]


def _adopt_stdlib_bases(stdlib_context):
    """Make procstart's `Process` and context classes subclasses of stdlib's, once
    `multiprocessing.context` is executed (it defines the concrete classes, and imports `process`
    first): `isinstance(ctx, multiprocessing.context.BaseContext)` and `issubclass(ctx.Process,
    multiprocessing.process.BaseProcess)` then hold, as libraries check, without procstart importing
    stdlib `multiprocessing` itself (a spawned child does not)."""
    _adopt_base(Process, stdlib_context.Process)
    _adopt_base(DefaultContext, stdlib_context.DefaultContext)
    for name in ('Fork', 'Spawn', 'ForkServer'):
        _adopt_base(globals()[f'{name}Process'], getattr(stdlib_context, f'{name}Process', None))
        _adopt_base(globals()[f'{name}Context'], getattr(stdlib_context, f'{name}Context', None))


on_import('multiprocessing.context', _adopt_stdlib_bases)


def _set_default_method(method):
    """Make `method` the start method used until one is set (`python -m procstart run
    --start-method`): unlike `set_start_method`, the program may still set its own."""
    _default_context._set_default(method)
