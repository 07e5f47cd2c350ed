"""The Python half of procstart's process model: the main and parent process objects,
authentication keys and the spawning state under which they may be pickled, exit-code names, and
what a process does at exit.

`Process` is the Rust extension's class (`_procstart.Process`) under a Python subclass, so that
stdlib's classes can become its bases when stdlib `multiprocessing` is imported (`context.py`: an
extension class cannot take new bases; `_adopt_base` adds them for isinstance only, here because
the locks of `synchronize.py` take stdlib bases too). The main and parent process classes subclass
it, as CPython's `_MainProcess` and `_ParentProcess` subclass `BaseProcess` (multiprocessing/process.py).
"""

from __future__ import annotations

import _thread
import os
import sys

from . import _procstart
from ._procstart import active_children, wait_sentinel

__all__ = ['AuthenticationString', 'Process', 'ResourceUsage']

# CPython keeps the spawning state in context.py, beside the contexts, and its process.py imports context for
# AuthenticationString; procstart's context.py imports this module (for Process), so the state lives here.
_spawning = _thread._local()


def get_spawning_popen():
    """What stands for the child whose payload this thread is pickling, or None."""
    return getattr(_spawning, 'popen', None)


def set_spawning_popen(popen):
    _spawning.popen = popen


def is_spawning():
    """True while a child's payload is being pickled, by procstart or by stdlib (authkeys and locks may then be
    pickled)."""
    if get_spawning_popen() is not None:
        return True
    mp_context = sys.modules.get('multiprocessing.context')
    return mp_context is not None and mp_context.get_spawning_popen() is not None


class AuthenticationString(bytes):
    """An authkey: refuses to be pickled except while a child is being prepared."""

    def __reduce__(self):
        if not is_spawning():
            raise TypeError('Pickling an AuthenticationString object is disallowed for security reasons')
        return AuthenticationString, (bytes(self),)


class Process(_procstart.Process):
    """`multiprocessing.Process` (CPython's `context.Process`): the extension's `Process`, under a
    Python class. Once stdlib `multiprocessing` is imported, `multiprocessing.context.Process` is its
    last base (`context._adopt_stdlib_bases`)."""


class _Absent:
    """What `_adopt_base` puts over a name only a stdlib base class has: it reads as missing, as it
    did before the base was added (a non-data descriptor: an instance's own attribute still wins)."""

    def __init__(self, name):
        self._name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            raise AttributeError(f'type object {objtype.__name__!r} has no attribute {self._name!r}')
        raise AttributeError(f'{type(obj).__name__!r} object has no attribute {self._name!r}')


def _keep_own_names(cls):
    """Make a procstart class with stdlib base classes resolve every name as it would without them:
    a name that now comes from a stdlib class is pinned to what procstart's classes (or `object`)
    give, as DefaultContext's `__init__`, or made to read as missing when only stdlib has it
    (BaseProcess's `_Popen`, `_bootstrap` …). The stdlib bases are for isinstance/issubclass only."""
    mro = cls.__mro__
    own = [k for k in mro if not k.__module__.startswith('multiprocessing')]
    for name in dir(cls):
        if name in ('__dict__', '__weakref__'):
            continue
        owner = next(k for k in mro if name in vars(k))
        if owner in own:
            continue
        previous = next((vars(k)[name] for k in own if name in vars(k)), _Absent)
        setattr(cls, name, _Absent(name) if previous is _Absent else previous)


def _adopt_base(cls, stdlib_cls):
    """Append `stdlib_cls` to the bases of procstart's `cls`, names unchanged (`_keep_own_names`)."""
    if stdlib_cls is None or issubclass(cls, stdlib_cls):
        return
    cls.__bases__ += (stdlib_cls,)
    _keep_own_names(cls)


class _MainProcess(Process):
    def __init__(self, config=None):
        self._identity = ()
        self._name = 'MainProcess'
        self._parent_pid = None
        self._config = _main_config() if config is None else config

    def close(self):
        pass


def _main_config():
    """The main process's `_config`, shared with stdlib `multiprocessing` when it is loaded.

    Sharing the dict keeps `current_process().authkey` (and the temp dir and semaphore prefix)
    the same under both packages, so stdlib Managers, Listeners and Clients authenticate across
    procstart and stdlib processes. A spawn child's configuration comes from its parent instead.
    """
    mp_process = sys.modules.get('multiprocessing.process')
    if mp_process is None:
        import multiprocessing.process as mp_process
    stdlib_main = mp_process.current_process()
    if type(stdlib_main).__name__ == '_MainProcess':
        return stdlib_main._config
    return {'authkey': AuthenticationString(os.urandom(32)), 'semprefix': '/mp'}


class _ParentProcess(Process):
    """`parent_process()` in a child: alive until its sentinel becomes readable."""

    def __init__(self, name, pid, sentinel):
        self._identity = ()
        self._name = name
        self._pid = pid
        self._parent_pid = None
        self._sentinel = sentinel
        self._config = {}

    def is_alive(self):
        return not wait_sentinel(self._sentinel, 0)

    @property
    def ident(self):
        return self._pid

    pid = ident

    @property
    def sentinel(self):
        return self._sentinel

    def join(self, timeout=None):
        wait_sentinel(self._sentinel, timeout)


def main_file(main_module):
    """The file a spawned or fork-server child runs as the main module: `main_module.__file__`, except for a program
    read from standard input (`python -`, or piped into `python`), whose `__file__` CPython sets to '<stdin>' (a real
    file is named by its absolute path): like `python -c`'s, such a main module has no file to run again."""
    path = getattr(main_module, '__file__', None)
    return None if path == '<stdin>' else path


# The working directory when procstart was imported: where a spawn child resolves the
# parent's '' entry of sys.path (CPython's process.ORIGINAL_DIR).
ORIGINAL_DIR = os.path.abspath(os.getcwd())


class _ExitcodeNames(dict):
    """As CPython's repr shows exit codes: -15 is '-SIGTERM'. Built on first use, from
    `_signal` rather than `signal` (which imports `enum`), so children that never print a
    repr do not pay for it."""

    def __missing__(self, code):
        if not self.get('_built'):
            import _signal

            for name, signum in list(_signal.__dict__.items()):
                if name[:3] == 'SIG' and '_' not in name:
                    self[-signum] = f'-{name}'
            self['_built'] = True
            if code in self:
                return self[code]
        raise KeyError(code)


_exitcode_to_name = _ExitcodeNames()


TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    class ResourceUsage(NamedTuple):
        max_rss: int
        user_time: float
        system_time: float


def __getattr__(name):
    # ResourceUsage is made on first use: a spawned child that never asks does not import
    # collections (nor typing, whose import alone costs a spawn child ~10 ms).
    if name == 'ResourceUsage':
        from collections import namedtuple

        cls = namedtuple('ResourceUsage', ('max_rss', 'user_time', 'system_time'), module=__name__)
        cls.__doc__ = (
            '`Process.rusage`: what the kernel accounted to an ended child (procstart extension): '
            'peak resident set size in bytes, CPU seconds in user mode and in the kernel.'
        )
        globals()[name] = cls
        return cls
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# Signals that mean the child itself went wrong, named as a shell or a core dump would.
_FAULTS = {
    'SIGSEGV': 'segmentation fault',
    'SIGBUS': 'bus error',
    'SIGILL': 'illegal instruction',
    'SIGFPE': 'floating-point exception',
    'SIGABRT': 'aborted',
}


def _size(nbytes):
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        nbytes /= 1024
        if nbytes < 1024 or unit == 'TiB':
            return f'{nbytes:.1f} {unit}'


def exit_reason(code, lost, signalled, usage: ResourceUsage | None):
    """`Process.exit_reason`: why the child ended, from its exit code, whether its status was
    lost, the last signal sent through its Process object (number and method) and its usage."""
    if lost:
        return 'ended, status unknown: it was collected by someone else (SIGCHLD ignored, or a waitpid(-1) elsewhere)'
    if code >= 0:
        return f'exited with {code}'
    try:
        name = _exitcode_to_name[code][1:]
    except KeyError:
        name = f'signal {-code}'
    if signalled is not None and signalled[0] == -code:
        return f'killed by {name} (sent by {signalled[1]}())'
    if name in _FAULTS:
        return f'{_FAULTS[name]} ({name})'
    if name == 'SIGKILL':
        # Nobody here sent it: the kernel's out-of-memory killer is the usual sender.
        rss = f': max RSS {_size(usage.max_rss)}' if usage is not None else ''
        return f'killed by SIGKILL (likely the out-of-memory killer{rss})'
    return f'killed by {name}'


def _exit_function():
    """At interpreter exit: terminate daemonic children, then wait for the others.

    CPython's `util._exit_function`, for procstart's children.
    """
    for p in active_children():
        if p.daemon:
            p.terminate()
    for p in active_children():
        p.join()
