"""procstart extension: ``Process.rusage`` and ``Process.exit_reason`` -- why a child died, for every start method."""

import os
import signal

import _targets
import pytest
from _support import CHILD_TIMEOUT, IS_STDLIB, finish, last_json, recv, run_process, start_reporting

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension: stdlib has no rusage/exit_reason')


def test_before_and_after_the_end(ctx):
    p = ctx.Process(target=_targets.exit_with, args=(3,))
    assert p.rusage is None and p.exit_reason is None
    p.start()
    finish(p)
    assert p.exit_reason == 'exited with 3'
    usage = p.rusage
    assert type(usage).__name__ == 'ResourceUsage' and usage == (usage.max_rss, usage.user_time, usage.system_time)
    assert usage.max_rss > 1 << 20 and usage.user_time >= 0 and usage.system_time >= 0
    p.close()
    with pytest.raises(ValueError, match='process object is closed'):
        p.exit_reason  # noqa: B018


def test_running_child_has_no_reason_yet(ctx):
    p = ctx.Process(target=_targets.sleep, args=(CHILD_TIMEOUT,))
    p.start()
    try:
        assert p.exit_reason is None and p.rusage is None
    finally:
        p.kill()
        finish(p)
    assert p.exit_reason == 'killed by SIGKILL (sent by kill())'


def test_terminate_is_named(ctx):
    p = ctx.Process(target=_targets.sleep, args=(CHILD_TIMEOUT,))
    p.start()
    p.terminate()
    finish(p)
    assert p.exitcode == -signal.SIGTERM
    assert p.exit_reason == 'killed by SIGTERM (sent by terminate())'


def test_segfault(ctx):
    p = run_process(ctx, _targets.segfault)
    assert p.exit_reason == 'segmentation fault (SIGSEGV)'


def test_foreign_sigkill_points_at_the_oom_killer_with_max_rss(ctx, make_pipe):
    """What the out-of-memory killer does, simulated: a child holding 200 MiB gets a SIGKILL nobody here sent."""
    p, r = start_reporting(ctx, make_pipe, _targets.hog_memory, 200)
    assert recv(r) == 'ready'
    os.kill(p.pid, signal.SIGKILL)
    finish(p)
    assert p.rusage.max_rss >= 200 << 20
    reason = p.exit_reason
    assert reason.startswith('killed by SIGKILL (likely the out-of-memory killer: max RSS '), reason
    assert reason.endswith(' MiB)'), reason


def test_address_space_limit_gives_memory_error(ctx):
    """The other way to run out of memory: an RLIMIT_AS the allocation exceeds -- MemoryError, exit 1."""
    p = run_process(ctx, _targets.allocate_over_limit, 256)
    assert p.exit_reason == 'exited with 1'
    assert p.rusage.max_rss < 256 << 20


def test_cpu_time(ctx):
    p = run_process(ctx, _targets.spin, 0.3)
    assert p.exitcode == 0
    assert p.rusage.user_time + p.rusage.system_time >= 0.25


def test_status_collected_elsewhere(run_py, start_method):
    out = run_py(f"""
        import signal
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        ctx = mp.get_context({start_method!r})
        p = ctx.Process(target=_targets.exit_with, args=(3,))
        p.start()
        p.join(10)
        print(json.dumps([p.exitcode, p.exit_reason, p.rusage]))
    """)
    code, reason, usage = last_json(out)
    if start_method == 'forkserver':  # the server reaps its children: nothing is lost
        assert (code, reason) == (3, 'exited with 3') and usage is not None
    else:
        assert code == 255 and usage is None
        assert reason.startswith('ended, status unknown: it was collected by someone else'), reason


def test_rusage_collects_an_ended_child(ctx):
    """Read first, once the sentinel says the child ended: rusage collects the status itself."""
    from multiprocessing.connection import wait

    p = ctx.Process(target=_targets.exit_with, args=(0,))
    p.start()
    assert wait([p.sentinel], CHILD_TIMEOUT)
    assert p.rusage is not None
    finish(p)
