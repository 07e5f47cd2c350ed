"""What every procstart child runs, whatever started it: CPython's `BaseProcess._bootstrap`
with Python 3.13's exit semantics (the child's own atexit handlers run) on every version.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from . import _stdlib, _procstart
from .process import _exit_function, _ParentProcess


def flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass


def _close_stdin():
    # As CPython: fd 0 itself is left alone, sys.stdin reads from devnull.
    if sys.stdin is None:
        return
    try:
        sys.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        try:
            sys.stdin = open(fd, encoding='utf-8', closefd=False)
        except BaseException:
            os.close(fd)
            raise
    except (OSError, ValueError):
        pass


def child_main(process, parent_sentinel, method):
    """Entry point of a forked child, called by the Rust launcher; returns the exit status."""
    # The parent's atexit handlers belong to the parent; the child runs its own, then the
    # exit functions that wait for its children and flush stdlib queues.
    atexit._clear()
    atexit.register(_exit_function)
    _stdlib.register_exit_function()
    code = bootstrap(process, parent_sentinel, method)
    try:
        atexit._run_exitfuncs()
    finally:
        flush_std_streams()
    return code & 0xFF


def bootstrap(process, parent_sentinel, method):
    """Run `process` in this child; return its exit code as CPython computes it."""
    exitcode = 1
    try:
        _procstart._force_start_method(method)
        parent = _ParentProcess(process._parent_name, process._parent_pid, parent_sentinel)
        _procstart._enter_child(process, parent)
        _close_stdin()
        _set_main_thread_native_id()
        _stdlib.enter_child(process, parent, method)
        process.run()
        exitcode = 0
    except SystemExit as e:
        if e.code is None:
            exitcode = 0
        elif isinstance(e.code, int):
            exitcode = e.code
        else:
            sys.stderr.write(str(e.code) + '\n')
            exitcode = 1
    except BaseException:
        import traceback

        sys.stderr.write(f'Process {process.name}:\n')
        traceback.print_exc()
        exitcode = 1
    finally:
        threading._shutdown()
        flush_std_streams()
    return exitcode


def _set_main_thread_native_id():
    set_native_id = getattr(threading.main_thread(), '_set_native_id', None)
    if set_native_id is not None:
        set_native_id()
