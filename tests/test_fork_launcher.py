"""What procstart's own launcher adds under CPython's API: pidfd sentinels and signalling,
Ctrl-C while joining, concurrent starts, and the pipe fallback for kernels without pidfd
(children reaped by someone else and fd exhaustion: test_faults.py). procstart only (the
stdlib run skips the module).
"""

import json
import os
import signal
import threading
import time

import _targets
import pytest
from _support import CHILD_TIMEOUT, IS_STDLIB, fd_target, finish, run_threads

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart launcher internals')


@pytest.mark.skipif(
    os.environ.get('PROCSTART_DISABLE_PIDFD', '0') not in ('', '0'), reason='the pipe fallback is forced'
)
def test_sentinel_is_a_pidfd(ctx):
    p = ctx.Process(target=_targets.noop)
    p.start()
    try:
        assert fd_target(p.sentinel) == 'anon_inode:[pidfd]'
    finally:
        finish(p)
    assert p.exitcode == 0
    p.close()


def test_pidfd_fallback_to_pipes(run_py):
    # Without pidfd (old kernels; forced here) the sentinel is CPython's pipe and everything
    # else behaves the same.
    code = """
    import multiprocessing.connection, signal
    os.environ['PROCSTART_DISABLE_PIDFD'] = '1'  # read at the first start
    ctx = mp.get_context('fork')
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    kind = os.readlink(f'/proc/self/fd/{p.sentinel}')
    p.join(0.1)
    alive = p.is_alive()
    p.terminate()
    ready = multiprocessing.connection.wait([p.sentinel], 10)
    p.join()
    codes = []
    for target, args in ((_targets.noop, ()), (_targets.exit_with, (3,)), (os._exit, (7,))):
        q = ctx.Process(target=target, args=args)
        q.start()
        q.join()
        codes.append(q.exitcode)
    print(json.dumps([kind.split(':')[0], alive, bool(ready), p.exitcode, codes]))
    """
    out = run_py(code)
    assert out.stdout.split('\n')[-2] == f'["pipe", true, true, {-signal.SIGTERM}, [0, 3, 7]]'


@pytest.mark.parametrize('timeout', [None, 30])
def test_ctrl_c_interrupts_join(run_py, start_method, timeout):
    # join() waits with the GIL released; SIGINT must still raise KeyboardInterrupt at once.
    code = f"""
    p = mp.get_context({start_method!r}).Process(target=time.sleep, args=(30,))
    p.start()
    print(_targets.interrupted(p.join, {timeout}))
    p.kill()
    p.join()
    print(p.exitcode)
    """
    out = run_py(code)
    assert out.stdout.split() == ['interrupted', str(-signal.SIGKILL)]


def test_concurrent_starts_from_threads(ctx, fork_thread_check):
    # Eight threads starting and joining at once: every exit code arrives, nothing is mixed up.
    fork_thread_check('ignore')  # starting from these threads at once is what this test is about
    results, errors = {}, []

    def worker(k):
        try:
            for i in range(10):
                code = (k * 10 + i) % 200
                p = ctx.Process(target=os._exit, args=(code,))
                p.start()
                p.join(CHILD_TIMEOUT)
                results[(k, i)] = (p.exitcode, code)
                p.close()
        except BaseException as e:
            errors.append(e)

    run_threads(worker, [(k,) for k in range(8)])
    assert not errors
    assert len(results) == 80
    assert all(got == want for got, want in results.values())


def test_join_from_two_threads(ctx):
    p = ctx.Process(target=time.sleep, args=(0.3,))
    p.start()
    t = threading.Thread(target=p.join)
    t.start()
    p.join(CHILD_TIMEOUT)
    t.join(CHILD_TIMEOUT)
    assert not t.is_alive()
    assert p.exitcode == 0


def test_popen_protocol(ctx, start_method):
    # `_popen` follows CPython's Popen protocol, which stdlib code and tests reach for.
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    popen = p._popen
    assert popen.pid == p.pid and popen.sentinel == p.sentinel and popen.method == start_method
    assert popen.poll() is None and popen.returncode is None
    assert popen.wait(0.05) is None
    popen.terminate()
    assert popen.wait(CHILD_TIMEOUT) == -signal.SIGTERM
    if start_method == 'fork':
        assert popen.duplicate_for_child(5) == 5
    p.join()
    p.close()
    assert p._popen is None and p._closed


def test_start_race_on_one_object_starts_one_child(ctx, fork_thread_check):
    # Two threads calling start() on the same object: one child, one AssertionError.
    fork_thread_check('ignore')  # starting from the racing threads is what this test is about
    for _ in range(20):
        p = ctx.Process(target=time.sleep, args=(0.05,))
        barrier = threading.Barrier(2)
        errors = []

        def start(p, barrier, errors):
            barrier.wait()
            try:
                p.start()
            except AssertionError as e:
                errors.append(str(e))

        run_threads(start, [(p, barrier, errors)] * 2)
        assert errors == ['cannot start a process twice']
        finish(p)
        assert p.exitcode == 0


def test_huge_timeouts(ctx):
    p = ctx.Process(target=_targets.noop)
    p.start()
    p.join(1e300)
    assert p.exitcode == 0
    p.join(float('inf'))
    assert p.exitcode == 0


def test_fast_child_with_sigchld_ignored(run_py):
    # With SIGCHLD ignored the kernel may reap a fast child before start() returns; start()
    # must still succeed and the process report a (lost) status instead of an error.
    code = """
    import signal
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    codes = set()
    for _ in range(50):
        p = mp.get_context('fork').Process(target=_targets.noop)
        p.start()
        p.join(10)
        codes.add(p.exitcode)
    print(json.dumps(sorted(codes)))
    """
    out = run_py(code)
    assert set(json.loads(out.stdout)) <= {0, 255}


def test_popen_close_refuses_running_child(ctx):
    p = ctx.Process(target=time.sleep, args=(30,))
    p.start()
    with pytest.raises(ValueError, match='Cannot close a process while it is still running'):
        p._popen.close()
    p.kill()
    p.join()
    p.close()
