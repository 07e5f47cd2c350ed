"""procstart's resource tracker: CPython's protocol and API, cleanup of what a crashed or killed tree leaked, one
tracker per process tree, and a tracker that survives bad input and signals.

procstart's own process (the stdlib reference run skips these; CPython's tracker is tested by CPython).
"""

import json
import os
import signal
import time
import uuid

import _targets
import pytest
from _support import CHILD_TIMEOUT, last_json, path_gone, run_in_child, shm_path, skip_on_stdlib, wait_until

pytestmark = skip_on_stdlib("these tests drive procstart's resource tracker")


def _name(prefix='/mp-pst-'):
    return prefix + uuid.uuid4().hex[:10]


@pytest.fixture
def tracker():
    from procstart import resource_tracker

    resource_tracker.ensure_running()
    return resource_tracker


# -- API and protocol ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('name', 'rtype', 'error', 'message'),
    [
        ('/' + 'x' * 600, 'semaphore', ValueError, 'msg too long'),
        ('/a:' + 'x' * 300, 'semaphore', ValueError, r'shared memory name too long \(max 255 bytes\)'),
        ('/é' + 'x' * 600, 'semaphore', UnicodeEncodeError, 'ascii'),
        (b'/a', 'semaphore', TypeError, 'must be str'),
        ('/a', None, TypeError, 'must be str'),
    ],
    ids=['too-long', 'too-long-json', 'not-ascii', 'bytes-name', 'none-rtype'],
)
def test_bad_names_are_refused_in_the_caller(tracker, name, rtype, error, message):
    with pytest.raises(error, match=message):
        tracker.register(name, rtype)
    with pytest.raises(error, match=message):
        tracker.unregister(name, rtype)


def test_tracker_is_a_small_program_not_an_interpreter(tracker):
    pid = tracker._resource_tracker._pid
    assert 'procstart-resource-tracker' in os.readlink(f'/proc/{pid}/exe')
    with open(f'/proc/{pid}/comm') as f:
        assert f.read().strip() == 'procstart-track'
    fds = {int(fd): os.readlink(f'/proc/{pid}/fd/{fd}') for fd in os.listdir(f'/proc/{pid}/fd')}
    # stderr, the pipe, the program; and a pidfd on each fork server it watches (test_forkserver.py)
    assert {fd for fd, target in fds.items() if target != 'anon_inode:[pidfd]'} == {2, 3, 4}
    with open(f'/proc/{pid}/status') as f:
        rss_kib = int(next(line for line in f if line.startswith('VmRSS:')).split()[1])
    assert rss_kib < 8 * 1024  # a Python interpreter alone is larger


def test_tracker_ignores_sigint_and_sigterm(tracker):
    pid = tracker._resource_tracker._pid
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.1)
    with open(f'/proc/{pid}/stat') as f:
        assert f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    assert tracker._resource_tracker._check_alive()


_SIGNAL_AT_START_SCRIPT = """
from procstart import _procstart, resource_tracker
survived = 0
for _ in range(20):
    resource_tracker.ensure_running()
    pid = _procstart._tracker_pid()
    os.kill(pid, int(sys.argv[1]))
    time.sleep(0.05)
    survived += resource_tracker._resource_tracker._check_alive()
    resource_tracker._resource_tracker._stop()
print(survived)
"""


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_tracker_survives_a_signal_right_after_its_start(run_py, signum):
    # Sent before the program has set the signal to be ignored: it must find it blocked (CPython: bpo-33613).
    proc = run_py(_SIGNAL_AT_START_SCRIPT, int(signum))
    assert proc.stdout.split() == ['20'], proc.stderr


# -- cleanup at the end of the tree ----------------------------------------------------------------------------

_LEAK_SCRIPT = """
import _multiprocessing, _posixshmem
from procstart import resource_tracker
sem, kept, shm, bad = sys.argv[1:5]
a = _multiprocessing.SemLock(1, 1, 1, sem, False)
b = _multiprocessing.SemLock(1, 1, 1, kept, False)
fd = _posixshmem.shm_open(shm, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
os.close(fd)
resource_tracker.register(sem, 'semaphore')
resource_tracker.register(kept, 'semaphore')
resource_tracker.unregister(kept, 'semaphore')   # the program cleans this one up itself
resource_tracker.register(shm, 'shared_memory')
resource_tracker.register(bad, 'semaphore')      # never created: unlinking it fails
fd = resource_tracker.getfd()  # (getfd() probes the tracker: called once, so no probe splits a line below)
os.write(fd, b'garbage without colons\\n')
os.write(fd, b'REGISTER:/x:no_such_type\\n')
os.write(fd, b'UNREGISTER:/never-registered:semaphore\\n')
os.write(fd, b'REGISTER:a:b:c:d\\n')
for _ in range(3):   # longer than a line may be: skipped, in pieces that each fit a pipe write
    os.write(fd, b'x' * 4000)
os.write(fd, b'\\n')
print(resource_tracker._resource_tracker._pid, flush=True)
"""


def test_leaks_are_unlinked_and_named_when_the_tree_exits(run_py):
    sem, kept, shm, bad = _name(), _name(), _name('/psm_pst'), _name()
    try:
        proc = run_py(_LEAK_SCRIPT, sem, kept, shm, bad)
        pid = int(proc.stdout.split()[-1])
        assert path_gone(shm_path(sem))
        assert path_gone(shm_path(shm, 'shared_memory'))
        assert os.path.exists(shm_path(kept))
        path_gone(f'/proc/{pid}')
    finally:
        if os.path.exists(shm_path(kept)):
            os.unlink(shm_path(kept))
    err = proc.stderr
    # Bad lines are reported and skipped; the tracker goes on.
    assert 'not enough values to unpack (expected 3, got 1)' in err
    assert 'Cannot register /x for automatic cleanup: unknown resource type no_such_type' in err
    assert "KeyError: '/never-registered'" in err
    assert 'too many values to unpack (expected 3)' in err
    assert 'line longer than 4096 bytes' in err
    assert 'resource_tracker: There appear to be 2 leaked semaphore objects to clean up at shutdown: ' in err
    assert repr(sem) in err and repr(bad) in err and repr(kept) not in err
    assert (
        f"resource_tracker: There appear to be 1 leaked shared_memory objects to clean up at shutdown: {{'{shm}'}}"
        in err
    )
    assert f"resource_tracker: '{bad}': [Errno 2] No such file or directory" in err


_ANY_NAME_SCRIPT = """
import _posixshmem
from procstart import resource_tracker
resource_tracker._resource_tracker._use_simple_format = sys.argv[1] == 'simple'
for name in json.loads(sys.argv[2]):
    os.close(_posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600))
    resource_tracker.register(name, 'shared_memory')
"""


@pytest.mark.parametrize('line_format', ['simple', 'json'])
def test_names_with_colons_and_newlines_are_tracked(run_py, line_format):
    # What a `cmd:name:rtype` line cannot carry goes as CPython 3.14's JSON line (every message does with
    # _use_simple_format off, as CPython's tests set it); a leaked name is unlinked when the tree exits.
    names = [_name('/psm_pst:') + suffix for suffix in ('', ':x:', '\nnl', '\n:')]
    if line_format == 'json':
        names.append(_name('/psm_pst\u00e9'))  # not ASCII: only a JSON line carries it (as in CPython)
    try:
        proc = run_py(_ANY_NAME_SCRIPT, line_format, json.dumps(names))
        for name in names:
            assert path_gone(shm_path(name, 'shared_memory')), name
        assert f'There appear to be {len(names)} leaked shared_memory objects' in proc.stderr
        assert 'Traceback' not in proc.stderr and 'procstart resource_tracker: ValueError' not in proc.stderr
    finally:
        for name in names:
            if os.path.exists(shm_path(name, 'shared_memory')):
                os.unlink(shm_path(name, 'shared_memory'))


def test_exit_codes(run_py):
    """CPython 3.13's: 0 clean, 1 leaks cleaned up, 2 an unlink failed, 3 a line not understood (the last to happen)."""
    out = run_py("""
        import _multiprocessing
        from procstart import resource_tracker
        rt = resource_tracker._resource_tracker
        codes = []
        rt.ensure_running(); rt._stop(); codes.append(rt._exitcode)
        name = '/mp-pst-exit-' + str(os.getpid())
        s = _multiprocessing.SemLock(1, 1, 1, name, False)
        rt.register(name, 'semaphore'); rt._stop(); codes.append(rt._exitcode)
        rt.register(name, 'semaphore'); rt._stop(); codes.append(rt._exitcode)
        rt.ensure_running(); os.write(rt._fd, b'nonsense\\n'); rt._stop(); codes.append(rt._exitcode)
        print(json.dumps(codes))
    """).stdout
    assert json.loads(out) == [0, 1, 2, 3]


@pytest.mark.parametrize('method', ['fork', 'spawn', 'forkserver'])
def test_sigkilled_child_leaves_nothing_behind(run_py, method):
    names = [_name(), _name()]
    proc = run_py(
        f"""
        import multiprocessing
        r, w = multiprocessing.Pipe(duplex=False)
        p = mp.get_context({method!r}).Process(target=_targets.make_registered_semaphores, args=(w, {names!r}))
        p.start()
        assert r.recv() == 'ready'
        assert all(os.path.exists('/dev/shm/sem.' + n[1:]) for n in {names!r})
        p.kill()
        p.join()
        print(p.exitcode)
        """
    )
    assert proc.stdout.split()[-1] == str(-signal.SIGKILL)
    for name in names:
        assert path_gone(shm_path(name)), name
        assert repr(name) in proc.stderr
    assert 'There appear to be 2 leaked semaphore objects' in proc.stderr


# -- one tracker per tree --------------------------------------------------------------------------------------


@pytest.mark.parametrize('method', ['fork', 'spawn', 'forkserver'])
def test_children_share_the_tracker(mp, tracker, pipe, method):
    res, _ = run_in_child(mp.get_context(method), pipe, _targets.tracker_pid)
    assert res == ['ok', tracker._resource_tracker._pid]


def test_dead_tracker_is_relaunched_with_a_warning(tracker):
    rt = tracker._resource_tracker
    old = rt._pid
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not rt._check_alive(), CHILD_TIMEOUT)
    with pytest.warns(
        UserWarning, match='resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.'
    ):
        tracker.ensure_running()
    assert rt._pid != old
    assert not os.path.exists(f'/proc/{old}')  # reaped
    assert rt._check_alive()


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
def test_sigkilled_child_holding_procstart_locks(run_py, method):
    proc = run_py(
        f"""
        import multiprocessing
        r, w = multiprocessing.Pipe(duplex=False)
        p = mp.get_context({method!r}).Process(target=_targets.make_locks_then_wait, args=(w, {method!r}, 3))
        p.start()
        names = r.recv()
        assert all(os.path.exists('/dev/shm/sem.' + n[1:]) for n in names), names
        p.kill()
        p.join()
        print(json.dumps(names))
        """
    )
    names = last_json(proc)
    assert len(names) == 3
    for name in names:
        assert path_gone(shm_path(name)), name
        assert repr(name) in proc.stderr
    assert 'There appear to be 3 leaked semaphore objects' in proc.stderr
