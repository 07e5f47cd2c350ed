"""Interop: the process-start half under test must work with the rest of CPython's multiprocessing.

Pools/executors built on the context under test, and stdlib synchronisation/IPC objects (from the *stdlib* context
of the same start method) passed in ``args`` to a child of the context under test -- plus the same objects made by
the context's own factories (``ctx.Queue()``, ``ctx.Pool()``, ...).
"""

import concurrent.futures
import multiprocessing.pool
import re

import _targets
import pytest
from _support import CHILD_TIMEOUT, finish, recv, run_in_child, run_process, start_process


@pytest.fixture(params=['stdlib', 'ctx'])
def factory(request, ctx, std_ctx):
    """Where the shared objects come from: the stdlib context of the method, or the context under test."""
    return std_ctx if request.param == 'stdlib' else ctx


# -- pools ---------------------------------------------------------------------------------------------------------


def test_pool_with_context(ctx):
    with multiprocessing.pool.Pool(2, context=ctx) as pool:
        assert pool.map(_targets.square, range(10)) == [x * x for x in range(10)]
        assert pool.apply_async(_targets.square, (7,)).get(CHILD_TIMEOUT) == 49
        pool.close()
        pool.join()


def test_ctx_pool(ctx):
    with ctx.Pool(2) as pool:
        assert pool.map(_targets.square, range(10)) == [x * x for x in range(10)]
        assert sorted(pool.imap_unordered(_targets.square, range(5))) == [0, 1, 4, 9, 16]
        pool.close()
        pool.join()


def test_process_pool_executor(ctx):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(_targets.square, range(10))) == [x * x for x in range(10)]
        assert ex.submit(_targets.square, 8).result(CHILD_TIMEOUT) == 64


# -- shared objects passed in args ---------------------------------------------------------------------------------


def test_queue(ctx, factory):
    q = factory.Queue()
    payload = {'a': [1, 2, 3], 'b': 'text'}
    assert run_process(ctx, _targets.queue_put, q, payload).exitcode == 0
    assert q.get(timeout=CHILD_TIMEOUT) == payload
    q.close()
    q.join_thread()


def test_simple_queue(ctx, factory):
    q = factory.SimpleQueue()
    assert run_process(ctx, _targets.queue_put, q, ('x', 1)).exitcode == 0
    assert q.get() == ('x', 1)
    q.close()


def test_joinable_queue(ctx, factory):
    q = factory.JoinableQueue()
    assert run_process(ctx, _targets.queue_put, q, 5).exitcode == 0
    assert q.get(timeout=CHILD_TIMEOUT) == 5
    q.task_done()
    q.join()
    q.close()
    q.join_thread()


def test_duplex_pipe(ctx, factory):
    a, b = factory.Pipe()
    p = ctx.Process(target=_targets.pipe_echo, args=(b,))
    p.start()
    b.close()
    a.send([1, 'two'])
    assert recv(a) == ('echo', [1, 'two'])
    finish(p)
    a.close()


def test_event(ctx, factory):
    evt = factory.Event()
    assert not evt.is_set()
    assert run_process(ctx, _targets.set_event, evt).exitcode == 0
    assert evt.is_set()


def test_value(ctx, factory):
    v = factory.Value('i', 0)
    procs = [start_process(ctx, _targets.value_add, v, 50) for _ in range(2)]
    for p in procs:
        finish(p)
        assert p.exitcode == 0
    assert v.value == 100


def test_array(ctx, factory):
    arr = factory.Array('i', 3)
    assert run_process(ctx, _targets.value_add, _targets.ArrayElement(arr), 4).exitcode == 0
    assert arr[0] == 4


@pytest.mark.parametrize('kind', ['Lock', 'RLock', 'Semaphore'])
def test_lock(ctx, make_pipe, factory, kind):
    lock = getattr(factory, kind)()
    assert lock.acquire(timeout=CHILD_TIMEOUT)
    try:
        assert run_in_child(ctx, make_pipe, _targets.lock_try, lock)[0] == ['ok', False]  # held by the parent
    finally:
        lock.release()
    assert run_in_child(ctx, make_pipe, _targets.lock_try, lock)[0] == ['ok', True]


def test_manager_dict(ctx, factory):
    with factory.Manager() as manager:
        d = manager.dict()
        lst = manager.list()
        assert run_process(ctx, _targets.dict_set, d, 'key', [1, 2]).exitcode == 0
        assert run_process(ctx, _targets.queue_put, _targets.ListAppender(lst), 'item').exitcode == 0
        assert dict(d) == {'key': [1, 2]}
        assert list(lst) == ['item']


def _proxy_refcounts(ctx, make_pipe, manager):
    """The manager's reference count of a proxy's object while a child of ``ctx`` holds it, and after."""
    proxy = manager.dict()

    def refcount():
        found = re.search(rf'{re.escape(proxy._token.id)}:\s+refcount=(\d+)', manager._debug_info())
        return int(found.group(1)) if found else 0

    parent, child = make_pipe(duplex=True)
    p = ctx.Process(target=_targets.hold_proxy_until_told, args=(proxy, child))
    p.start()
    assert recv(parent) == 'ready'
    running = refcount()
    parent.send('go')
    finish(p)
    assert p.exitcode == 0
    return running, refcount()


def test_manager_proxy_references_as_stdlib(ctx, std_ctx, make_pipe):
    # A proxy unpickled while the child inherits takes no reference of its own (CPython's RebuildProxy asks stdlib's
    # current process): procstart's child must count as stdlib's does, and give back what it took when it exits.
    with multiprocessing.Manager() as manager:
        assert _proxy_refcounts(ctx, make_pipe, manager) == _proxy_refcounts(std_ctx, make_pipe, manager)


def test_stdlib_resource_tracker_is_the_parents(ctx, make_pipe):
    # What a child registers with stdlib's tracker (stdlib's shared memory) is the tree's, as under stdlib: a tracker
    # of the child's own would unlink it when the child exits. On CPython 3.14 a fork child keeps the tracker's pipe
    # only when the fork declares a Process start (gh-146313).
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    pid = resource_tracker._resource_tracker._pid
    assert run_in_child(ctx, make_pipe, _targets.stdlib_tracker_reused, pid)[0] == ['ok', True]
