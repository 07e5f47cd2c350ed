"""procstart extension: ``Process(new_process_group=True)`` and ``terminate(tree=True)``/``kill(tree=True)``, which
signal the child and every process descended from it, for every start method."""

import os
import signal

import _targets
import pytest
from _support import CHILD_TIMEOUT, IS_STDLIB, finish, last_json, recv, run_process, start_reporting, wait_gone

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension: stdlib has no process trees')


def _start_tree(ctx, make_pipe, depth, fanout, **kwargs):
    tree_kwargs = kwargs.pop('tree_kwargs', {})
    return start_reporting(ctx, make_pipe, _targets.descendants, depth, fanout, kwargs=tree_kwargs, **kwargs)


def _collect(r, n):
    return sorted(recv(r) for _ in range(n))


@pytest.mark.parametrize('how', ['kill', 'terminate', 'interrupt'])
def test_three_levels_all_signalled(ctx, make_pipe, how):
    # depth 2, fanout 2: the child, its 2 children, their 4 children.
    p, r = _start_tree(ctx, make_pipe, 2, 2)
    pids = _collect(r, 7)
    assert p.pid in pids
    getattr(p, how)(tree=True)
    finish(p)
    expected = {'kill': -signal.SIGKILL, 'terminate': -signal.SIGTERM, 'interrupt': 1}[how]
    assert p.exitcode == expected  # SIGINT: KeyboardInterrupt in the child, exit code 1
    survivors = [pid for pid in pids if not wait_gone(pid, CHILD_TIMEOUT)]
    assert survivors == []
    assert p.exit_reason.startswith('killed by SIG' if how != 'interrupt' else 'exited with 1')


def test_without_tree_only_the_child(ctx, make_pipe):
    p, r = _start_tree(ctx, make_pipe, 1, 1)
    pids = _collect(r, 2)
    p.kill()
    finish(p)
    (grandchild,) = [pid for pid in pids if pid != p.pid]
    try:
        assert not wait_gone(grandchild, 0.3), 'the grandchild should outlive a plain kill()'
    finally:
        os.kill(grandchild, signal.SIGKILL)
        assert wait_gone(grandchild)


def test_new_process_group(ctx, make_pipe):
    r, w = make_pipe()
    own = ctx.Process(target=_targets.send_process_group, args=(w,), new_process_group=True)
    own.start()
    pid, group = recv(r)
    finish(own)
    assert (pid, group) == (own.pid, own.pid)
    shared = ctx.Process(target=_targets.send_process_group, args=(w,))
    shared.start()
    pid, group = recv(r)
    finish(shared)
    assert group == os.getpgid(0) != pid


def test_group_reaches_orphaned_descendants(ctx, make_pipe):
    """A descendant whose parent already exited is adopted elsewhere: no walk from the child finds it, its process
    group still does."""
    p, r = _start_tree(ctx, make_pipe, 2, 1, new_process_group=True, tree_kwargs={'orphan_last': True})
    pids = _collect(r, 2)  # the child and the orphaned grandchild's child
    (orphan,) = [pid for pid in pids if pid != p.pid]
    p.kill(tree=True)
    finish(p)
    assert wait_gone(orphan, CHILD_TIMEOUT)


def test_tree_signal_after_the_end_is_harmless(ctx):
    p = run_process(ctx, _targets.exit_with, 0, new_process_group=True)
    p.kill(tree=True)
    p.terminate(tree=True)
    assert p.exitcode == 0


def test_tree_is_keyword_only(ctx):
    p = ctx.Process(target=_targets.noop)
    with pytest.raises(TypeError):
        p.kill(True)


def test_members_held_without_descriptors_to_spare(run_py, start_method):
    """Out of descriptors for pidfds, members are held by PID instead of being left out (with their subtrees)."""
    out = run_py(f"""
        import resource
        ctx = mp.get_context({start_method!r})
        r, w = __import__('multiprocessing').Pipe(duplex=False)
        p = ctx.Process(target=_targets.descendants, args=(w, 1, 40))
        p.start()
        pids = [r.recv() for _ in range(41)]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir('/proc/self/fd')) + 8, hard))
        p.kill(tree=True)
        p.join()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print(json.dumps(pids))
    """)
    pids = last_json(out)
    assert [pid for pid in pids if not wait_gone(pid, CHILD_TIMEOUT)] == []


def test_new_process_group_with_a_fork_hook_that_moves_the_child(run_py):
    """A fork hook that puts the child in a session of its own: start() still succeeds, with a handle."""
    out = run_py("""
        os.register_at_fork(after_in_child=os.setsid)
        p = mp.get_context('fork').Process(target=_targets.exit_with, args=(5,), new_process_group=True)
        p.start()
        p.join()
        print(json.dumps([p.exitcode, os.getpgid(0) != p.pid]))
    """)
    assert last_json(out) == [5, True]


# Trees several levels deep with mixed start methods: the fork server is the kernel parent of every forkserver
# process, yet each belongs under the process that asked for it.
MIXED_TREES = [
    ('forkserver', 'forkserver', 'forkserver'),
    ('fork', 'forkserver', 'forkserver'),
    ('spawn', 'forkserver'),
    ('forkserver', 'fork'),
    ('forkserver', 'spawn', 'forkserver'),
]


@pytest.mark.parametrize('methods', MIXED_TREES, ids='-'.join)
@pytest.mark.parametrize('how', ['kill', 'terminate'])
def test_mixed_tree_signalled_whole(mp, pipe, methods, how):
    p, r = start_reporting(mp.get_context(methods[0]), pipe, _targets.logical_tree, methods[1:])
    nodes = [recv(r) for _ in methods]
    pids = [pid for pid, _, _ in nodes]
    # parent_process() of every node is the node above it, whoever forked it.
    assert [parent for _, parent, _ in nodes] == [os.getpid(), *pids[:-1]]
    getattr(p, how)(tree=True)
    finish(p)
    assert [pid for pid in pids if not wait_gone(pid, CHILD_TIMEOUT)] == []


@pytest.mark.parametrize('inner', ['fork', 'spawn', 'forkserver'])
def test_grandchildren_start_in_the_childs_group(ctx, make_pipe, inner):
    p, r = start_reporting(ctx, make_pipe, _targets.logical_tree, (inner,), new_process_group=True)
    (child, _, child_group), (grandchild, _, grandchild_group) = recv(r), recv(r)
    p.kill(tree=True)
    finish(p)
    assert child_group == child == grandchild_group
    assert wait_gone(grandchild, CHILD_TIMEOUT)
