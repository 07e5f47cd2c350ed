"""pytest plugin for test suites of programs that start processes (a procstart extension, not in CPython).

Registered through the ``pytest11`` entry point, so pytest loads it wherever procstart is installed; it changes
nothing unless a test requests one of its fixtures:

* ``start_method`` -- parametrised over procstart's start methods (``START_METHODS``): the test runs once per
  method, with the method's name as its id and as the fixture's value.
* ``no_process_leaks`` -- fails the test (at teardown) if it left child processes running, zombies unreaped, file
  descriptors open or named POSIX semaphores in /dev/shm behind, naming each, once they have lasted
  ``procstart_leak_timeout`` seconds (ini option, default 5); then stops and reaps the leaked children.

The leak check holds for processes started with procstart and with stdlib ``multiprocessing`` alike. The
long-lived helpers of either, which are meant to outlive a test, are not leaks: the fork server and the resource
tracker (their processes and the descriptors this process holds for them), the arenas of stdlib's shared-memory
heap (behind ``Value``/``Array``, kept for reuse) and procstart's devnull reader (every fork child's
``sys.stdin``). Nor are the semaphores of other process trees or other users, which /dev/shm shows as well.

``ProcessSnapshot`` is the check itself, for other scopes (a session-wide check, say).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

import procstart

__all__ = ['START_METHODS', 'ProcessSnapshot', 'no_process_leaks', 'start_method']

TIMEOUT_INI = 'procstart_leak_timeout'
# Some cleanup is asynchronous (Queue feeder threads, Pool workers' exit, Finalize callbacks): a leak is one that
# lasts this long.
DEFAULT_TIMEOUT = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        TIMEOUT_INI,
        f'no_process_leaks: seconds to wait for asynchronous cleanup before failing a test (default {DEFAULT_TIMEOUT})',
        default=str(DEFAULT_TIMEOUT),
    )


# procstart's start methods in CPython's fixed order. Not get_all_start_methods(): from 3.14 it lists the default
# first, and finding the default imports stdlib's multiprocessing (its temporary-directory check), which this plugin
# must not do to every pytest session at its import.
START_METHODS = ('fork', 'spawn', 'forkserver')


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method available here, in turn: the test runs once per method (test id: its name)."""
    return request.param


@pytest.fixture
def no_process_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves child processes, zombies, file descriptors or named semaphores behind."""
    snapshot = ProcessSnapshot()
    yield
    snapshot.check(f'no_process_leaks: {request.node.name} left behind', float(request.config.getini(TIMEOUT_INI)))


class ProcessSnapshot:
    """This process's children, file descriptors and the named semaphores in /dev/shm, taken when created, to
    compare with later."""

    def __init__(self) -> None:
        self.fds, processes, self.semaphores = _observe()
        self.children = _children(processes)

    def leaks(self) -> list[str]:
        """What is there now that was not at the snapshot, one description per leak, helpers left out."""
        fds, processes, semaphores = _observe()
        children = _children(processes)
        helper_fds, helper_pids = _helpers()
        arenas = _arena_targets()
        out = [
            f'child process still running: {pid} ({_cmdline(pid) or comm})'
            for pid, (state, comm) in sorted(children.items())
            if state != 'Z' and pid not in self.children and pid not in helper_pids
        ]
        out += [
            f'zombie child (not reaped): {pid} ({comm})'
            for pid, (state, comm) in sorted(children.items())
            # One that was a zombie already is not this interval's.
            if state == 'Z' and self.children.get(pid, ('',))[0] != 'Z'
        ]
        out += [
            f'file descriptor {fd} -> {target}'
            for fd, target in sorted(fds.items())
            if self.fds.get(fd) != target and fd not in helper_fds and target not in arenas and not _is_libffi(target)
        ]
        new = semaphores - self.semaphores
        out += [f'named semaphore /dev/shm/{name}' for name in sorted(new - _not_this_trees(new, processes))]
        return out

    def check(self, what: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Fail (``pytest.fail``) if leaks remain ``timeout`` seconds from now, after stopping and reaping the child
        processes that leaked, so that what comes next is not blamed for them."""
        deadline = time.monotonic() + timeout
        leaks = self.leaks()
        while leaks and time.monotonic() < deadline:
            time.sleep(0.05)
            leaks = self.leaks()
        if leaks:
            self._stop_leaked_children()
            pytest.fail('\n  '.join([f'{what}:', *leaks]), pytrace=False)

    def _stop_leaked_children(self) -> None:
        _, helper_pids = _helpers()
        keep = self.children.keys() | helper_pids
        # Through their Process objects first, so that the library learns their exit status.
        for module in {sys.modules.get('multiprocessing'), procstart} - {None}:
            for p in module.active_children():
                if p.pid not in keep:
                    p.kill()
                    p.join(5)
        for pid, (state, _) in _children(_processes()).items():
            if pid in keep:
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


def _observe() -> tuple[dict[int, str], dict[int, tuple[int, str, str]], set[str]]:
    # Objects that are no longer referenced release their descriptors and children first.
    gc.collect()
    return _fd_table(), _processes(), _semaphores()


def _fd_table() -> dict[int, str]:
    """{fd: readlink target} of this process."""
    table = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            table[int(name)] = os.readlink(f'/proc/self/fd/{name}')
        except OSError:  # the directory fd used by listdir, or closed meanwhile
            continue
    return table


def _processes() -> dict[int, tuple[int, str, str]]:
    """{pid: (ppid, state, comm)} of the processes in /proc."""
    out = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                data = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: it ends at the last ')'.
        lparen, rparen = data.find('('), data.rfind(')')
        fields = data[rparen + 2 :].split()
        out[int(entry)] = (int(fields[1]), fields[0], data[lparen + 1 : rparen])
    return out


def _children(processes: dict[int, tuple[int, str, str]]) -> dict[int, tuple[str, str]]:
    """{pid: (state, comm)} of the direct children of this process."""
    me = os.getpid()
    return {pid: (state, comm) for pid, (ppid, state, comm) in processes.items() if ppid == me}


def _cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return os.fsdecode(f.read().rstrip(b'\0').replace(b'\0', b' '))
    except OSError:
        return ''


def _semaphores() -> set[str]:
    try:
        return {name for name in os.listdir('/dev/shm') if name.startswith('sem.')}
    except FileNotFoundError:
        return set()


def _not_this_trees(semaphores: set[str], processes: dict[int, tuple[int, str, str]]) -> set[str]:
    """Those of ``semaphores`` that belong to others, as /dev/shm is shared by the whole machine (a test suite
    running beside this one, say): owned by another user, or open in a process outside this process's tree."""
    uid = os.getuid()
    out = set()
    # A process maps a semaphore under the temporary name sem_open() created it with: the file is known by its
    # device and inode.
    by_file = {}
    for name in semaphores:
        try:
            st = os.stat(f'/dev/shm/{name}')
        except FileNotFoundError:  # unlinked meanwhile: no one's leak
            out.add(name)
            continue
        if st.st_uid != uid:
            out.add(name)
        else:
            by_file[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = name
    tree = {os.getpid()}
    while True:
        descendants = {pid for pid, (ppid, _, _) in processes.items() if ppid in tree} - tree
        if not descendants:
            break
        tree |= descendants
    for pid in processes.keys() - tree:
        if not by_file:
            break
        try:
            with open(f'/proc/{pid}/maps') as f:
                mappings = [line.split() for line in f if '/dev/shm/sem.' in line]
        except OSError:
            continue
        for fields in mappings:
            major, minor = fields[3].split(':')
            name = by_file.pop((int(major, 16), int(minor, 16), int(fields[4])), None)
            if name is not None:
                out.add(name)
    return out


def _helpers() -> tuple[set[int], set[int]]:
    """(fds, pids) of the long-lived helpers that stdlib and procstart started in this process, if any."""
    fds, pids = set(), set()
    tracker = sys.modules.get('multiprocessing.resource_tracker')
    if tracker is not None:
        fds.add(tracker._resource_tracker._fd)
        pids.add(tracker._resource_tracker._pid)
    forkserver = sys.modules.get('multiprocessing.forkserver')
    if forkserver is not None:
        fds.add(forkserver._forkserver._forkserver_alive_fd)
        pids.add(forkserver._forkserver._forkserver_pid)
    fds.update(procstart._procstart._forkserver_fds())
    fds.update(procstart._procstart._tracker_fds())
    pids.add(procstart._procstart._forkserver_pid())
    pids.add(procstart._procstart._tracker_pid())
    bootstrap = sys.modules.get('procstart._bootstrap')
    reader = getattr(bootstrap, 'devnull_reader', None)
    if reader is not None and not reader.closed:
        fds.add(reader.fileno())
    fds.discard(None)
    pids.discard(None)
    return fds, pids


def _is_libffi(target: str) -> bool:
    """libffi's own library file, which libffi (3.4+, static trampolines) opens at the first ctypes callback a
    process makes and keeps open to map its trampoline tables from (ctypes behind `Value` on 3.14, for instance)."""
    return os.path.basename(target).startswith('libffi.so')


def _arena_targets() -> set[str]:
    """readlink targets of the arenas of stdlib's shared-memory heap, each held by its fd and by a dup inside its
    mmap object."""
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
