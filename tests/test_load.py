"""Load, for every start method: 1 000 processes started and joined with at most 64 alive at once, and 8 threads each
starting 50 processes at the same time. Every exit code must be right, the descriptor count must stay bounded while it
runs and come back to where it was (the autouse leak checks), and no zombie may remain."""

import _targets
import pytest
from _support import CHILD_TIMEOUT, fd_count, run_threads

pytestmark = pytest.mark.slow

# Per live child a parent holds its sentinel (and, without pidfd, a pipe end or two); stdlib also holds a pipe per
# child. Well above that, well below a leak of a few descriptors per start.
FDS_PER_LIVE_CHILD = 4


def test_1000_processes_at_most_64_alive(ctx):
    baseline = fd_count()
    peak = baseline
    alive, codes = [], {}
    for i in range(1000):
        if len(alive) == 64:
            oldest = alive.pop(0)
            oldest.join(CHILD_TIMEOUT)
            codes[oldest.name] = oldest.exitcode
        p = ctx.Process(target=_targets.os_exit, args=(i % 256,), name=f'load-{i}')
        p.start()
        alive.append(p)
        peak = max(peak, fd_count())
    for p in alive:
        p.join(CHILD_TIMEOUT)
        codes[p.name] = p.exitcode
    assert codes == {f'load-{i}': i % 256 for i in range(1000)}
    assert peak <= baseline + 64 * FDS_PER_LIVE_CHILD + 16, (baseline, peak)


def test_8_threads_each_starting_50(ctx, fork_thread_check):
    fork_thread_check('ignore')  # starting from these threads at once is what this test is about
    codes, errors = {}, []

    def starter(t):
        try:
            procs = []
            for i in range(50):
                p = ctx.Process(target=_targets.os_exit, args=((t * 50 + i) % 256,))
                p.start()
                procs.append((t * 50 + i, p))
            for n, p in procs:
                p.join(CHILD_TIMEOUT)
                codes[n] = p.exitcode
        except Exception as e:  # reported below
            errors.append(repr(e))

    run_threads(starter, [(t,) for t in range(8)])
    assert errors == []
    assert codes == {n: n % 256 for n in range(400)}
