"""Parity-suite harness: runs the same tests against ``procstart`` or CPython's ``multiprocessing``.

``PROCSTART_TEST_TARGET=stdlib`` selects the stdlib (the reference run); anything else selects ``procstart``.

Fixtures:

* ``mp`` -- the module under test; ``modname`` -- its import name (for scripts run in a fresh interpreter).
* ``start_method`` -- parametrised over fork, spawn and forkserver.
* ``ctx`` -- ``mp.get_context(start_method)``; ``std_ctx`` -- the *stdlib* context of the same method, whose
  Queue/Pipe/Event objects are used as IPC so that stdlib objects are exercised inside procstart children.
* ``make_pipe`` -- factory of stdlib ``Pipe(duplex=False)`` pairs, closed after the test.
* ``pipe`` -- the same, for tests not parametrised over the start method.
* ``run_py`` -- run a script in a fresh interpreter (for stderr capture, interpreter exit and global state);
  ``child_env`` -- the environment it runs in.

Leak checks (autouse, around every test, plus once for the whole session):

* file descriptors: the fd table (``/proc/self/fd``, number -> readlink target) after the test must not contain
  entries that were not there before; the failure lists the readlink targets;
* no zombie children of this process (``/proc/*/stat`` with ppid == getpid() and state Z), and no *new* live
  children either (a test must join what it starts);
* no new ``sem.*`` entries in /dev/shm.

Objects of the test are released first (``gc.collect()``) and the check is retried for a few seconds, since some
cleanup is asynchronous (Queue feeder threads, Pool worker exit, Finalize callbacks).

Long-lived helpers: CPython's resource tracker and fork server are started once and kept for the life of the
process, each holding one fd in the parent (tracker pipe write end, fork server "alive" pipe write end). We (1) warm
up every start method under test once at session start (one child per method, before the session snapshot), which
starts such helpers for the stdlib and for procstart alike, and (2) additionally allow the fds and pids of the stdlib
helpers wherever they show up (procstart tests create stdlib Queues/Managers, which may start them lazily). Likewise
the stdlib shared-memory heap (behind Value/Array) keeps its arenas -- an fd plus the dup held by the mmap -- for
reuse; fds pointing at a live arena's file are allowed.
"""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    # _targets must be importable here and in every child (spawn/forkserver children get the parent's sys.path).
    sys.path.insert(0, TESTS_DIR)

from _support import ALL_METHODS, CHILD_TIMEOUT, IS_STDLIB, MODNAME

LEAK_CHECK_SECONDS = 5.0


def _import_target():
    if IS_STDLIB:
        return multiprocessing
    import procstart

    return procstart


def pytest_report_header(config):
    return f'parity target: {MODNAME} (PROCSTART_TEST_TARGET={os.environ.get("PROCSTART_TEST_TARGET", "")!r})'


def pytest_generate_tests(metafunc):
    if 'start_method' in metafunc.fixturenames:
        metafunc.parametrize('start_method', list(ALL_METHODS))


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


@pytest.fixture
def pipe():
    """Factory of stdlib ``Pipe(duplex=False)`` pairs, closed after the test, for tests not parametrised over the
    start method (a Pipe does not depend on it)."""
    conns = []

    def factory():
        r, w = multiprocessing.Pipe(duplex=False)
        conns.extend((r, w))
        return r, w

    yield factory
    for c in conns:
        c.close()


@pytest.fixture
def make_pipe(std_ctx):
    conns = []

    def factory(duplex=False):
        r, w = std_ctx.Pipe(duplex=duplex)
        conns.extend((r, w))
        return r, w

    yield factory
    for c in conns:
        c.close()


@pytest.fixture(scope='session')
def child_env(mp):
    """The environment of a fresh interpreter: tests/ (and the directory the module under test was imported from)
    on PYTHONPATH, ``PROCSTART_TEST_TARGET`` inherited."""
    paths = [TESTS_DIR]
    if not IS_STDLIB:
        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(mp.__file__))))
    if os.environ.get('PYTHONPATH'):
        paths.append(os.environ['PYTHONPATH'])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


@pytest.fixture
def run_py(child_env):
    """``run_py(code, *args, flags=(), timeout=60, check=True)`` -> CompletedProcess (text).

    The script runs as ``python [flags] -c code args...`` in ``child_env``, from tests/. ``code`` is dedented and
    prefixed with ``import json, os, sys, time; import _targets; import <module under test> as mp``.
    """
    header = f'import json, os, sys, time\nimport _targets\nimport {MODNAME} as mp\n'

    def run(code, *args, flags=(), timeout=60, check=True):
        script = header + textwrap.dedent(code)
        cmd = [sys.executable, *flags, '-c', script, *map(str, args)]
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout, env=child_env, cwd=TESTS_DIR
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f'script exited with {proc.returncode}\n--- script:\n{script}\n--- stdout:\n{proc.stdout}'
                f'\n--- stderr:\n{proc.stderr}'
            )
        return proc

    return run


# -- leak checks -----------------------------------------------------------------------------------------------


def _fd_table():
    table = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            table[int(name)] = os.readlink(f'/proc/self/fd/{name}')
        except OSError:  # the directory fd used by listdir, or closed meanwhile
            continue
    return table


def _children():
    """{pid: (state, comm)} of the direct children of this process."""
    me = os.getpid()
    out = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                data = f.read()
        except OSError:
            continue
        lparen, rparen = data.find('('), data.rfind(')')
        fields = data[rparen + 2 :].split()
        if int(fields[1]) == me:
            out[int(entry)] = (fields[0], data[lparen + 1 : rparen])
    return out


def _shm_sems():
    try:
        return {n for n in os.listdir('/dev/shm') if n.startswith('sem.')}
    except FileNotFoundError:
        return set()


def _stdlib_helpers():
    """(fds, pids) of the long-lived helper processes (CPython's, procstart's fork server and resource tracker), if
    they were started in this process."""
    fds, pids = set(), set()
    rt = sys.modules.get('multiprocessing.resource_tracker')
    if rt is not None:
        fds.add(rt._resource_tracker._fd)
        pids.add(rt._resource_tracker._pid)
    fs = sys.modules.get('multiprocessing.forkserver')
    if fs is not None:
        fds.add(fs._forkserver._forkserver_alive_fd)
        pids.add(fs._forkserver._forkserver_pid)
    procstart_rust = sys.modules.get('procstart._procstart')
    if procstart_rust is not None:
        fds.update(procstart_rust._forkserver_fds())
        fds.update(procstart_rust._tracker_fds())
        pids.add(procstart_rust._forkserver_pid())
        pids.add(procstart_rust._tracker_pid())
    fds.discard(None)
    pids.discard(None)
    return fds, pids


def _stdlib_arena_targets():
    """readlink targets of the shared-memory arenas behind stdlib Value/Array.

    The heap keeps (small) arenas for reuse for the life of the process; each holds its fd and, inside its mmap
    object, a dup of it.
    """
    heap = sys.modules.get('multiprocessing.heap')
    targets = set()
    if heap is not None:
        for arena in list(heap.BufferWrapper._heap._arenas):
            fd = getattr(arena, 'fd', -1)
            if fd >= 0:
                try:
                    targets.add(os.readlink(f'/proc/self/fd/{fd}'))
                except OSError:
                    pass
    return targets


class _Snapshot:
    def __init__(self):
        gc.collect()
        self.fds = _fd_table()
        self.children = {pid for pid, (state, _) in _children().items() if state != 'Z'}
        self.sems = _shm_sems()

    def problems(self):
        gc.collect()
        helper_fds, helper_pids = _stdlib_helpers()
        arenas = _stdlib_arena_targets()
        out = []
        now = _fd_table()
        leaked = {fd: t for fd, t in now.items() if self.fds.get(fd) != t and fd not in helper_fds and t not in arenas}
        if leaked:
            out.append('leaked fds: ' + ', '.join(f'{fd} -> {t}' for fd, t in sorted(leaked.items())))
        kids = _children()
        zombies = {pid: comm for pid, (state, comm) in kids.items() if state == 'Z'}
        if zombies:
            out.append(f'zombie children (not reaped): {zombies}')
        alive = {
            pid: comm
            for pid, (state, comm) in kids.items()
            if state != 'Z' and pid not in self.children and pid not in helper_pids
        }
        if alive:
            out.append(f'children still running: {alive}')
        sems = _shm_sems() - self.sems
        if sems:
            out.append(f'new /dev/shm semaphores: {sorted(sems)}')
        return out

    def check(self, what):
        deadline = time.monotonic() + LEAK_CHECK_SECONDS
        while True:
            problems = self.problems()
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if problems:
            _cleanup_children(self.children)
            pytest.fail(f'{what}: ' + '; '.join(problems), pytrace=False)


def _cleanup_children(keep):
    """After a leak: stop what the test left running so that later tests are not blamed for it."""
    for mod in {multiprocessing, sys.modules.get('procstart')} - {None}:
        for p in mod.active_children():
            p.kill()
            p.join(5)
    _, helper_pids = _stdlib_helpers()
    for pid, (state, _) in _children().items():
        if pid in keep or pid in helper_pids:
            continue
        if state != 'Z':
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture(scope='session', autouse=True)
def _session_leak_check():
    # Warm-up: one child per start method under test, so that helper processes (fork server, resource tracker,
    # procstart's own helpers if any) exist before the session snapshot.
    try:
        target = _import_target()
    except ImportError:
        target = None
    if target is not None:
        import _targets

        for method in ALL_METHODS:
            p = target.get_context(method).Process(target=_targets.noop)
            p.start()
            p.join(CHILD_TIMEOUT)
            p.close()
    snapshot = _Snapshot()
    yield
    snapshot.check('session-level leak check')


@pytest.fixture(autouse=True)
def _leak_check(_session_leak_check):
    snapshot = _Snapshot()
    yield
    snapshot.check('leak check')
