"""procstart: CPython's multiprocessing start methods, rebuilt in Rust.

`import procstart as mp` gives the process-start half of `multiprocessing`: `Process`,
contexts and start methods, with the same behaviour and error messages. `install()` (an extension)
makes stdlib `multiprocessing` itself start its processes through procstart.
"""

from __future__ import annotations

import atexit

from . import _hooks  # noqa: F401 (registers the extension's hooks before anything can start a process)
from . import process as _process
from ._procstart import __version__ as __version__
from ._procstart import _forkserver_at_exit

# procstart's extensions, beside (not in) multiprocessing's __all__.
from ._procstart import get_fork_thread_check as get_fork_thread_check
from ._procstart import set_fork_thread_check as set_fork_thread_check
from .process import Process

TYPE_CHECKING = False
if TYPE_CHECKING:  # for type checkers; at run time ResourceUsage is made on first use (__getattr__)
    from .process import ResourceUsage as ResourceUsage
del TYPE_CHECKING
from .context import _default_context, _module_api

__all__ = [
    'Array',
    'AuthenticationError',
    'Barrier',
    'BoundedSemaphore',
    'BufferTooShort',
    'Condition',
    'Event',
    'JoinableQueue',
    'Lock',
    'Manager',
    'Pipe',
    'Pool',
    'Process',
    'ProcessError',
    'Queue',
    'RLock',
    'RawArray',
    'RawValue',
    'Semaphore',
    'SimpleQueue',
    'TimeoutError',
    'Value',
    'active_children',
    'allow_connection_pickling',
    'cpu_count',
    'current_process',
    'freeze_support',
    'get_all_start_methods',
    'get_context',
    'get_logger',
    'get_start_method',
    'install',
    'log_to_stderr',
    'parent_process',
    'set_executable',
    'set_forkserver_preload',
    'set_start_method',
    'uninstall',
]

_EXCEPTIONS = ('AuthenticationError', 'BufferTooShort', 'ProcessError', 'TimeoutError')
_EXTENSIONS = ('install', 'uninstall')

# As `multiprocessing/__init__.py`: the module-level API is the default context's bound methods.
globals().update(
    (name, _module_api(name)) for name in __all__ if name != 'Process' and name not in _EXCEPTIONS + _EXTENSIONS
)


def install() -> None:
    """Make stdlib `multiprocessing` start its processes through procstart, until `uninstall()`.

    Its module-level API becomes procstart's, its contexts (also those taken before) and `Process`
    classes (also subclasses defined before) start procstart children, and so do `Pool`, `Manager`
    and `concurrent.futures.ProcessPoolExecutor`; spawn and forkserver children of this process are
    installed too (fork children inherit it). A start method set through stdlib before stays set,
    unless one was set through procstart too. Calling it again does nothing. A procstart extension:
    CPython has no such switch.
    """
    # Imported on use: it imports stdlib multiprocessing, which a child does not always need.
    from . import _install

    _install.install()


def uninstall() -> None:
    """Undo `install()`: stdlib `multiprocessing` gets back every object install() replaced.
    Does nothing when not installed."""
    from . import _install

    _install.uninstall()


def __getattr__(name):
    # Stdlib's exception classes and pickling module, imported only when asked for.
    if name in _EXCEPTIONS or name == 'reducer':
        return getattr(_default_context, name)
    if name == 'ResourceUsage':  # procstart's extension, made on first use
        return _process.ResourceUsage
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# Run after _exit_function has joined the children (atexit runs handlers last in, first out): the fork server this
# process started follows it, and nothing of the server is left once the process has exited.
atexit.register(_forkserver_at_exit)
del _forkserver_at_exit
atexit.register(_process._exit_function)
