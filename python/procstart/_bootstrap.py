"""The Python part of every procstart child's bootstrap (the rest is `src/child/bootstrap.rs`)."""

from __future__ import annotations

import os
import sys

# What `devnull_stdin` made: it stays open for the life of the process, which leak checks
# (`procstart.pytest_plugin`) need to tell from a leaked descriptor.
devnull_reader = None


def devnull_stdin():
    """A child's `sys.stdin` (CPython's `util._close_stdin`), made once in the parent.

    The descriptor is close-on-exec and shared by every fork child: reading devnull has no
    state to share, and making it per child would cost each child the pages it touches.
    """
    global devnull_reader
    devnull_reader = open(os.open(os.devnull, os.O_RDONLY), encoding='utf-8')  # noqa: SIM115 (kept open)
    return devnull_reader


def exit_code_for(process, exc):
    """The exit code of a child whose `run()` raised `exc`, reported as CPython's `_bootstrap` does."""
    if isinstance(exc, SystemExit):
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            # What os._exit() and the kernel keep of it.
            return exc.code & 0xFF
        sys.stderr.write(str(exc.code) + '\n')
        return 1
    import traceback

    sys.stderr.write(f'Process {process.name}:\n')
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    return 1


def other_threads():
    """The Python threads running besides the calling one (all a fork drops), by name (repr)."""
    import threading

    current = threading.current_thread()
    return [repr(thread.name) for thread in threading.enumerate() if thread is not current]
