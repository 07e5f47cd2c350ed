"""Helpers shared by the test modules (importable because conftest puts tests/ on sys.path)."""

import os
import sys
import time

import _targets
import pytest

TARGET = os.environ.get('PROCSTART_TEST_TARGET', 'procstart')
IS_STDLIB = TARGET == 'stdlib'
MODNAME = 'multiprocessing' if IS_STDLIB else 'procstart'
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Upper bound for anything a child must do; only reached when something is broken.
CHILD_TIMEOUT = 20.0


def skip_on_stdlib(reason):
    """Marker for a deliberate procstart improvement over CPython (the stdlib run skips it)."""
    return pytest.mark.skipif(IS_STDLIB, reason=f'procstart improvement, CPython differs: {reason}')


def skip_if_stdlib(reason, condition=True):
    """Skip at run time (for improvements that depend on the start method or the Python version)."""
    if IS_STDLIB and condition:
        pytest.skip(f'procstart improvement, CPython {sys.version_info[0]}.{sys.version_info[1]} differs: {reason}')


def wait_gone(pid, timeout=5.0):
    """Wait until process ``pid`` has ended (gone, or a zombie); whether it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f'/proc/{pid}/stat') as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


def recv(conn, timeout=CHILD_TIMEOUT):
    """``conn.recv()`` that fails instead of hanging."""
    assert conn.poll(timeout), f'nothing received within {timeout} s'
    return conn.recv()


def finish(p, timeout=CHILD_TIMEOUT):
    """Join ``p``; kill it if it does not end in time (then fail)."""
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f'{p!r} did not exit within {timeout} s')


def run_in_child(ctx, make_pipe, func, *args, **process_kwargs):
    """Run ``func(*args)`` in a ``ctx.Process`` child; return ``(outcome, process)`` after joining it.

    ``outcome`` is ``['ok', result]`` or ``[exception type name, message]`` (see ``_targets.outcome``).
    The parent's copy of the write end is closed right after ``start()`` (as CPython's own tests do), so a child
    that dies without reporting gives EOFError instead of a hang.
    """
    r, w = make_pipe()
    p = ctx.Process(target=_targets.call_and_send, args=(w, func, *args), **process_kwargs)
    p.start()
    w.close()
    try:
        res = recv(r)
    finally:
        finish(p)
    assert p.exitcode == 0, p
    return res, p
