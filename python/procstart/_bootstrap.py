"""The Python part of every procstart child's bootstrap (the rest is `src/bootstrap.rs`):
running the process and turning how `run()` ended into CPython's exit code.
"""

from __future__ import annotations

import os
import sys
import threading


def devnull_stdin():
    """A child's `sys.stdin` (CPython's `util._close_stdin`), made once in the parent.

    The descriptor is close-on-exec and shared by every fork child: reading devnull has no
    state to share, and making it per child would cost each child the pages it touches.
    """
    return open(os.open(os.devnull, os.O_RDONLY), encoding='utf-8')


def run_process(process):
    """Run `process` in this child; return its exit code as CPython's `_bootstrap` computes it."""
    exitcode = 1
    try:
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
    return exitcode
