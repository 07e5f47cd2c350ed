"""Parity-suite harness: runs the same tests against ``procstart`` or CPython's ``multiprocessing``.

``PROCSTART_TEST_TARGET=stdlib`` selects the stdlib (the reference run); anything else selects ``procstart``.

Fixtures:

* ``mp`` -- the module under test; ``modname`` -- its import name (for scripts run in a fresh interpreter).
* ``start_method`` -- procstart's pytest plugin's: parametrised over its ``START_METHODS`` (fork, spawn and
  forkserver).
* ``ctx`` -- ``mp.get_context(start_method)``; ``std_ctx`` -- the *stdlib* context of the same method, whose
  Queue/Pipe/Event objects are used as IPC so that stdlib objects are exercised inside procstart children.
* ``make_pipe`` -- factory of stdlib ``Pipe(duplex=False)`` pairs, closed after the test.
* ``pipe`` -- the same, for tests not parametrised over the start method.
* ``run_py`` -- run a script in a fresh interpreter (for stderr capture, interpreter exit and global state).
* ``fork_thread_check`` -- set procstart's fork thread check for one test (set back after it).

Helpers that are not fixtures (running a program, starting and finishing a process, waiting, descriptors) are in
``_support``; what children run is in ``_targets``; tests/README.md says where a new test goes.

Leak checks, procstart's pytest plugin's (``procstart.pytest_plugin``): its ``no_process_leaks`` around every test
(autouse), and its ``ProcessSnapshot`` once for the whole session. Each fails when there are new live children (a
test must join what it starts), zombies, new file descriptors (``/proc/self/fd``, number -> readlink target) or
new ``sem.*`` entries in /dev/shm (of this process tree), after a ``gc.collect()`` and a few seconds of retries
for asynchronous cleanup.

Long-lived helpers (the fork servers and resource trackers of procstart and the stdlib, the stdlib's shared-memory
heap arenas, procstart's devnull reader) are allowed by the plugin wherever they show up (procstart tests create
stdlib Queues/Managers, which may start them lazily). The session check also warms up every start method under test
once at session start (one child per method, before the session snapshot), which starts such helpers for the stdlib
and for procstart alike.
"""

import multiprocessing
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
import textwrap

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    # _targets must be importable here and in every child (spawn/forkserver children get the parent's sys.path).
    sys.path.insert(0, TESTS_DIR)

from _support import CHILD_TIMEOUT, IS_STDLIB, MODNAME, SCRIPT_HEADER, run_python

# The start_method fixture and the leak checks (already registered where procstart is installed, by the pytest11
# entry point of the same name; listed for a run from the source tree), and the suite's own summary.
pytest_plugins = ['procstart.pytest_plugin', '_summary']


def _import_target():
    if IS_STDLIB:
        return multiprocessing
    import procstart

    return procstart


_run_tmpdir = None


def pytest_configure(config):
    # A temporary directory of this run's own (TMPDIR, which procstart's fork server and stdlib's read at each use),
    # so that what a test finds there -- socket directories left behind -- is what this run made, not what another
    # session on the same machine has.
    global _run_tmpdir
    _run_tmpdir = tempfile.mkdtemp(prefix='pstests-')
    os.environ['TMPDIR'] = _run_tmpdir
    tempfile.tempdir = None
    # Started in the background of a shell (`cmd &`, nohup), pytest inherits SIGINT ignored, and so would every
    # child and program the tests start: the tests of Ctrl-C and Process.interrupt() need it as a terminal has it.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config):
    if _run_tmpdir is None:
        return
    # Stdlib's temporary directory lives inside ours: its finalizer (priority -100, run at exit otherwise) first, so
    # that it does not fail on a directory already removed. Not a finalizer of our own: CPython's tests run them all
    # (util._cleanup_tests) in the middle of the run.
    multiprocessing.util._run_finalizers(-100)
    shutil.rmtree(_run_tmpdir, ignore_errors=True)


def pytest_report_header(config):
    return f'parity target: {MODNAME} (PROCSTART_TEST_TARGET={os.environ.get("PROCSTART_TEST_TARGET", "")!r})'


@pytest.fixture(scope='session')
def mp():
    return _import_target()


@pytest.fixture(scope='session')
def modname():
    return MODNAME


@pytest.fixture
def ctx(mp, start_method):
    return mp.get_context(start_method)


@pytest.fixture
def std_ctx(start_method):
    return multiprocessing.get_context(start_method)


def _pipes():
    """Factory of stdlib ``Pipe(duplex=False)`` pairs (``duplex=True`` on request), closed after the test."""
    conns = []

    def factory(duplex=False):
        r, w = multiprocessing.Pipe(duplex=duplex)
        conns.extend((r, w))
        return r, w

    yield factory
    for c in conns:
        c.close()


@pytest.fixture
def pipe():
    """``_pipes`` for tests not parametrised over the start method (a Pipe does not depend on it)."""
    yield from _pipes()


@pytest.fixture
def make_pipe(std_ctx):
    """``_pipes`` for tests parametrised over the start method (through ``std_ctx``)."""
    yield from _pipes()


@pytest.fixture
def run_py():
    """``run_py(code, *args, flags=(), timeout=60, check=True, env=None)`` -> CompletedProcess (text).

    The script runs as ``python [flags] -c code args...`` through ``_support.run_python`` (from tests/, with
    ``env`` set over ``_support.child_env()``). ``code`` is dedented and prefixed with ``_support.SCRIPT_HEADER``:
    ``import json, os, sys, time; import _targets; import <module under test> as mp``.
    """

    def run(code, *args, flags=(), timeout=60, check=True, env=None):
        script = SCRIPT_HEADER + textwrap.dedent(code)
        return run_python('-c', script, *args, flags=flags, timeout=timeout, check=check, env=env)

    return run


@pytest.fixture
def run_stdin():
    """``run_stdin(code, check=True)`` -> CompletedProcess (text): ``code``, prefixed as by ``run_py``, read by
    ``python -`` from its standard input."""

    def run(code, check=True):
        return run_python('-', stdin=SCRIPT_HEADER + textwrap.dedent(code), check=check)

    return run


@pytest.fixture
def fork_thread_check(mp):
    """``fork_thread_check(mode)`` sets procstart's fork thread check for the test (which re-arms its once-per-process
    warning), and the mode it found is set back after it. Stdlib has no such check: there it does nothing."""
    if IS_STDLIB:
        yield lambda mode: None
        return
    before = mp.get_fork_thread_check()
    yield mp.set_fork_thread_check
    mp.set_fork_thread_check(before)


# -- leak checks: procstart.pytest_plugin's ----------------------------------------------------------------


@pytest.fixture(scope='session', autouse=True)
def _session_leak_check():
    import _targets

    # Here, not at the top: a plugin module imported before pytest_plugins registers it cannot be assertion-rewritten
    # (pytest warns).
    from procstart.pytest_plugin import ProcessSnapshot

    # Warm-up: one child per start method under test, so that helper processes (fork server, resource tracker,
    # procstart's own helpers if any) exist before the session snapshot.
    target = _import_target()
    for method in target.get_all_start_methods():
        p = target.get_context(method).Process(target=_targets.noop)
        p.start()
        p.join(CHILD_TIMEOUT)
        p.close()
    snapshot = ProcessSnapshot()
    yield
    snapshot.check('session-level leak check: the session left behind')


@pytest.fixture(autouse=True)
def _leak_check(_session_leak_check, no_process_leaks):
    pass
