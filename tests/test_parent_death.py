"""A parent SIGKILLed mid-run, for every start method: ``die_with_parent=True`` children (procstart extension) and
daemon children are gone within a second, and so are procstart's fork server and resource tracker, which unlinks the
named semaphores the parent left; other children outlive it, as under CPython."""

import json
import os
import signal
import textwrap
import time

import pytest
from _support import CHILD_TIMEOUT, IS_STDLIB, path_gone, shm_path, wait_gone

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension: CPython leaves all of these running')

# The bound: nothing that must die with the parent outlives it by more than this.
GRACE = 1.0


def _run_and_kill_parent(run_py, tmp_path, code, env=None):
    """Run ``code``, which calls ``report(obj)`` and then SIGKILLs its own process; return ``obj`` and the time the
    parent was seen dead. The script's stdout and stderr are devnull before it starts anything, so that what
    outlives it does not hold the test's pipes open."""
    path = tmp_path / 'report.json'
    prologue = f"""
        import signal
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        def report(obj):
            with open({str(path)!r}, 'w') as f:
                json.dump(obj, f)
        """
    out = run_py(textwrap.dedent(prologue) + textwrap.dedent(code), check=False, timeout=60, env=env)
    died = time.monotonic()
    assert out.returncode == -signal.SIGKILL, out.stderr
    return json.loads(path.read_text()), died


def _gone_by(pids, deadline):
    return {pid: wait_gone(pid, max(deadline - time.monotonic(), 0.0)) for pid in pids}


def test_children_and_helpers_die_with_a_sigkilled_parent(run_py, tmp_path, start_method):
    state, died = _run_and_kill_parent(
        run_py,
        tmp_path,
        f"""
        import threading
        mp.set_fork_thread_check('ignore')  # the worker-thread start below is deliberate
        ctx = mp.get_context({start_method!r})
        pids = {{}}
        for name, kwargs in (('die_with_parent', dict(die_with_parent=True)), ('daemon', dict(daemon=True))):
            p = ctx.Process(target=_targets.sleep, args=(60,), **kwargs)
            p.start()
            pids[name] = p.pid
        # PR_SET_PDEATHSIG would fire when this thread ends: the child must live on until the process dies.
        box = []
        def start_from_thread():
            box.append(ctx.Process(target=_targets.sleep, args=(60,), die_with_parent=True))
            box[0].start()
        t = threading.Thread(target=start_from_thread)
        t.start()
        t.join()
        time.sleep(0.5)
        pids['from_ended_thread_alive'] = box[0].is_alive()
        pids['from_thread'] = box[0].pid
        lock = ctx.Lock()
        sem = lock._semlock.name if {start_method!r} != 'fork' else None
        helpers = {{'forkserver': mp._procstart._forkserver_pid(), 'tracker': mp._procstart._tracker_pid()}}
        report([pids, helpers, sem])
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    pids, helpers, sem = state
    assert pids.pop('from_ended_thread_alive') is True
    deadline = died + GRACE
    assert _gone_by(pids.values(), deadline) == dict.fromkeys(pids.values(), True), pids
    if start_method == 'forkserver':
        assert helpers['forkserver']
    if start_method != 'fork':
        assert helpers['tracker'] and sem
    live_helpers = [pid for pid in helpers.values() if pid]
    # The server ends once its last client (parent, children) has gone; the tracker after it.
    assert _gone_by(live_helpers, deadline + GRACE) == dict.fromkeys(live_helpers, True), helpers
    if sem is not None:
        assert path_gone(shm_path(sem), deadline + GRACE - time.monotonic()), f'{sem} left in /dev/shm'


def test_other_children_outlive_a_sigkilled_parent(run_py, tmp_path, start_method):
    (pid,), _ = _run_and_kill_parent(
        run_py,
        tmp_path,
        f"""
        p = mp.get_context({start_method!r}).Process(target=_targets.sleep, args=(60,))
        p.start()
        report([p.pid])
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    try:
        assert not wait_gone(pid, GRACE), 'a child without die_with_parent should outlive its parent'
    finally:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, CHILD_TIMEOUT)


def test_fork_siblings_do_not_keep_a_child_alive_without_pidfd(run_py, tmp_path):
    """On kernels without pidfd the parent sentinel is a pipe; a later fork child must not inherit its write end
    (it would keep the watched child's parent 'alive' for as long as it runs)."""
    (watched, sibling), died = _run_and_kill_parent(
        run_py,
        tmp_path,
        """
        import threading
        mp.set_fork_thread_check('ignore')
        ctx = mp.get_context('fork')
        box = []
        def start_from_thread():  # the watcher thread, not PR_SET_PDEATHSIG
            box.append(ctx.Process(target=_targets.sleep, args=(60,), die_with_parent=True))
            box[0].start()
        t = threading.Thread(target=start_from_thread)
        t.start()
        t.join()
        sibling = ctx.Process(target=_targets.sleep, args=(60,))
        sibling.start()
        report([box[0].pid, sibling.pid])
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        env={'PROCSTART_DISABLE_PIDFD': '1'},
    )
    try:
        assert _gone_by([watched], died + GRACE) == {watched: True}
        assert not wait_gone(sibling, 0.2)
    finally:
        os.kill(sibling, signal.SIGKILL)
    assert wait_gone(sibling, CHILD_TIMEOUT)
