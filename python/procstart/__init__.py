"""procstart: CPython's multiprocessing start methods, rebuilt in Rust.

`import procstart as mp` gives the process-start half of `multiprocessing`: `Process`,
contexts and start methods, with the same behaviour and error messages.
"""

from __future__ import annotations

import atexit

from . import process as _process
from ._procstart import Process
from ._procstart import __version__ as __version__

# procstart's extensions, beside (not in) multiprocessing's __all__.
from ._procstart import get_fork_thread_check as get_fork_thread_check
from ._procstart import set_fork_thread_check as set_fork_thread_check
from .process import ResourceUsage as ResourceUsage
from .context import _default_context

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
    'log_to_stderr',
    'parent_process',
    'set_executable',
    'set_forkserver_preload',
    'set_start_method',
]

_EXCEPTIONS = ('AuthenticationError', 'BufferTooShort', 'ProcessError', 'TimeoutError')

# As `multiprocessing/__init__.py`: the module-level API is the default context's bound methods.
globals().update(
    (name, getattr(_default_context, name)) for name in __all__ if name != 'Process' and name not in _EXCEPTIONS
)


def __getattr__(name):
    # Stdlib's exception classes and pickling module, imported only when asked for.
    if name in _EXCEPTIONS or name == 'reducer':
        return getattr(_default_context, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


atexit.register(_process._exit_function)
