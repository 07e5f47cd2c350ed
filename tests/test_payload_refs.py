"""What a spawned or fork-server child's payload references lives in the parent until the child has loaded it.

CPython deletes a process's target and arguments at ``start()``; an object passed inline (``args=(ctx.Queue(),)``)
then dies with them, and a ``Queue`` unlinks its semaphores while the child may still be unpickling it: the child
fails with ``FileNotFoundError`` in ``SemLock._rebuild``. procstart keeps them until the child has its payload
(differs on purpose). Fork children share the parent's memory and need nothing kept.
"""

import gc
import weakref

import _targets
import pytest
from _support import finish, recv, skip_on_stdlib, start_process

pytestmark = skip_on_stdlib('arguments live until the child has loaded them')


@pytest.fixture(params=['spawn', 'forkserver'])
def ctx(request, mp):
    return mp.get_context(request.param)


def test_inline_queue_outlives_start(ctx):
    # The child is still loading when the parent drops the queue: Slow unpickles before the queue does.
    p = ctx.Process(target=_targets.use_queue, args=(_targets.SlowToLoad(0.5), ctx.Queue()))
    p.start()
    gc.collect()
    finish(p)
    assert p.exitcode == 0


def test_references_released_once_loaded(ctx):
    kept = _targets.Referent()
    probe = weakref.ref(kept)
    here, there = ctx.Pipe()
    p = ctx.Process(target=_targets.report_loaded_then_wait, args=(there, kept))
    p.start()
    del kept
    gc.collect()
    assert probe() is not None, 'released before the child had loaded its payload'
    assert here.recv() == 'loaded'
    assert p.is_alive()
    gc.collect()
    assert probe() is None, 'still held once the child had loaded its payload'
    here.send('done')
    finish(p)
    assert p.exitcode == 0


def test_big_payload_references_released_once_loaded(ctx):
    # A payload past the pipe's size, a big bytes spliced into it: the child reads it exactly (the parent keeps its
    # end of the pipe open, so no end of file comes), then closes its end, and the parent lets go.
    kept = _targets.Referent()
    probe = weakref.ref(kept)
    here, there = ctx.Pipe()
    p = start_process(ctx, _targets.report_loaded_then_wait, there, (kept, b'b' * (8 << 20)))
    del kept
    assert recv(here) == 'loaded'
    assert p.is_alive()  # a look at the child lets go of what it has loaded
    gc.collect()
    assert probe() is None, 'still held once the child had loaded its payload'
    here.send('done')
    finish(p)
    assert p.exitcode == 0


def test_references_released_when_child_dies_loading(ctx):
    kept = _targets.Referent()
    probe = weakref.ref(kept)
    p = ctx.Process(target=_targets.noop, args=(_targets.ExitWhileLoading(), kept))
    p.start()
    del kept
    finish(p)
    assert p.exitcode == 3
    gc.collect()
    assert probe() is None
