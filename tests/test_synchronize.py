"""Locks, semaphores, conditions, events, barriers and the IPC built on them, shared between processes, for every
start method: procstart's primitives behave as stdlib's (the reference run checks these same tests against stdlib)."""

import multiprocessing.synchronize
import operator

import _targets
import pytest
from _support import CHILD_TIMEOUT, finish, recv, run_in_child, skip_on_stdlib, start_process, start_reporting


def test_lock_excludes_across_processes(ctx):
    lock = ctx.Lock()
    value = ctx.Value('i', 0, lock=False)
    procs = [start_process(ctx, _targets.add_under_lock, value, lock, 300) for _ in range(4)]
    for p in procs:
        finish(p)
    assert [p.exitcode for p in procs] == [0] * 4
    assert value.value == 1200


@pytest.mark.parametrize('factory', ['Lock', 'RLock', 'Semaphore', 'BoundedSemaphore'])
def test_timeouts_while_another_process_holds_it(ctx, factory):
    lock = getattr(ctx, factory)()
    held, release = ctx.Event(), ctx.Event()
    p = start_process(ctx, _targets.hold_lock, lock, held, release)
    try:
        assert held.wait(CHILD_TIMEOUT)
        assert lock.acquire(block=False) is False
        assert lock.acquire(timeout=0.1) is False
        assert lock.acquire(timeout=-1) is False
    finally:
        release.set()
        finish(p)
    assert lock.acquire(timeout=CHILD_TIMEOUT) is True
    lock.release()


def test_lock_state_and_messages(ctx):
    lock = ctx.Lock()
    assert repr(lock) == '<Lock(owner=None)>'
    assert lock.acquire()
    assert repr(lock) == '<Lock(owner=MainProcess)>'
    lock.release()
    with pytest.raises(ValueError, match='^semaphore or lock released too many times$'):
        lock.release()


def test_rlock_recursion_and_ownership(ctx, pipe):
    rlock = ctx.RLock()
    for _ in range(3):
        assert rlock.acquire()
    assert repr(rlock) == '<RLock(MainProcess, 3)>'
    p, r = start_reporting(ctx, pipe, _targets.release_foreign, rlock)
    assert recv(r) == ['AssertionError', 'attempt to release recursive lock not owned by thread']
    finish(p)
    for _ in range(3):
        rlock.release()
    assert repr(rlock) == '<RLock(None, 0)>'
    with pytest.raises(AssertionError, match='^attempt to release recursive lock not owned by thread$'):
        rlock.release()


# -- locked(), new in CPython 3.14 (gh-115942): the semaphore's value, seen from any process ---------------------

HAS_LOCKED = hasattr(multiprocessing.synchronize.SemLock, 'locked')


def test_locked_exists_as_in_stdlib(ctx):
    for name, args in {'Lock': (), 'RLock': (), 'Semaphore': (2,), 'BoundedSemaphore': (2,)}.items():
        assert hasattr(getattr(ctx, name)(*args), 'locked') is HAS_LOCKED, name


@pytest.mark.skipif(not HAS_LOCKED, reason='locked() is new in CPython 3.14')
@pytest.mark.parametrize('factory', ['Lock', 'RLock'])
def test_locked_across_processes(ctx, make_pipe, factory):
    lock = getattr(ctx, factory)()
    locked = operator.methodcaller('locked')
    assert lock.locked() is False
    assert run_in_child(ctx, make_pipe, locked, lock)[0] == ['ok', False]
    with lock:
        assert lock.locked() is True
        assert run_in_child(ctx, make_pipe, locked, lock)[0] == ['ok', True]
    held, release = ctx.Event(), ctx.Event()
    p = start_process(ctx, _targets.hold_lock, lock, held, release)
    try:
        assert held.wait(CHILD_TIMEOUT)
        assert lock.locked() is True
    finally:
        release.set()
        finish(p)
    assert lock.locked() is False


@pytest.mark.skipif(not HAS_LOCKED, reason='locked() is new in CPython 3.14')
def test_semaphore_locked_at_zero(ctx):
    sem = ctx.BoundedSemaphore(2)
    assert sem.acquire() and sem.locked() is False
    assert sem.acquire() and sem.locked() is True
    sem.release()
    assert sem.locked() is False


def test_semaphores(ctx):
    sem = ctx.Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire()
    assert sem.acquire(False) is False
    assert repr(sem) == '<Semaphore(value=0)>'
    sem.release()
    sem.release()
    sem.release()  # an unbounded semaphore may go above its start value
    assert sem.get_value() == 3
    bounded = ctx.BoundedSemaphore(2)
    assert repr(bounded) == '<BoundedSemaphore(value=2, maxvalue=2)>'
    with pytest.raises(ValueError, match='^semaphore or lock released too many times$'):
        bounded.release()


def test_condition_wait_for_across_processes(ctx, pipe):
    cond = ctx.Condition()
    flag = ctx.Value('i', 0, lock=False)
    p, r = start_reporting(ctx, pipe, _targets.wait_for_flag, cond, flag)
    with cond:
        flag.value = 1
        cond.notify_all()
    assert recv(r) is True
    finish(p)


def test_event_across_processes(ctx, pipe):
    event = ctx.Event()
    p, r = start_reporting(ctx, pipe, _targets.event_wait, event)
    assert not event.is_set()
    event.set()
    assert recv(r) is True
    finish(p)
    assert event.wait(0)


def test_barrier_across_four_processes(ctx, pipe):
    barrier = ctx.Barrier(4)
    started = [start_reporting(ctx, pipe, _targets.barrier_wait, barrier) for _ in range(4)]
    indices = sorted(recv(r) for _, r in started)
    for p, _ in started:
        finish(p)
    assert indices == [0, 1, 2, 3]


def test_queue_with_10000_items(ctx):
    q = ctx.Queue()
    p = start_process(ctx, _targets.queue_put_many, q, 10_000)
    got = [q.get(timeout=CHILD_TIMEOUT) for _ in range(10_000)]
    finish(p)
    assert got == list(range(10_000))
    q.close()
    q.join_thread()


def test_pool_map(ctx):
    with ctx.Pool(2) as pool:
        assert pool.map(_targets.square, range(100)) == [i * i for i in range(100)]


def test_manager_dict(ctx):
    with ctx.Manager() as manager:
        d = manager.dict()
        p = start_process(ctx, _targets.manager_dict_set, d, 50)
        finish(p)
        assert dict(d) == {i: i * i for i in range(50)}


def test_lock_pickled_outside_spawning(ctx):
    import pickle

    for factory in ('Lock', 'RLock', 'Semaphore', 'BoundedSemaphore'):
        obj = getattr(ctx, factory)()
        with pytest.raises(
            RuntimeError, match=f'^{factory} objects should only be shared between processes through inheritance$'
        ):
            pickle.dumps(obj)


def test_fork_context_lock_refused_by_spawn(mp):
    lock = mp.get_context('fork').Lock()
    p = mp.get_context('spawn').Process(target=_targets.noop, args=(lock,))
    with pytest.raises(
        RuntimeError, match='^A SemLock created in a fork context is being shared with a process in a spawn context'
    ):
        p.start()


def test_ctrl_c_interrupts_acquire(run_py):
    out = run_py("""
        lock = mp.Lock()
        lock.acquire()
        print(_targets.interrupted(lock.acquire))
    """).stdout
    assert out.strip() == 'interrupted'


def test_flags_may_be_ints(ctx):
    """As CPython's ``bool(accept={int})`` arguments: Queue passes ``block`` through as given."""
    import queue

    lock = ctx.Lock()
    assert lock.acquire(1) is True
    assert lock.acquire(0) is False
    assert lock.acquire(0, 5) is False  # not blocking: the timeout does not apply
    lock.release()
    q = ctx.Queue()
    q.put('x', 1, 1)
    assert q.get(1, CHILD_TIMEOUT) == 'x'
    with pytest.raises(queue.Empty):
        q.get(0)
    q.close()
    q.join_thread()


@skip_on_stdlib('CPython rebuilds from a bare handle, trusting any integer as a semaphore address')
def test_semlock_is_rebuilt_only_by_name(mp):
    with pytest.raises(ValueError, match='^a SemLock can only be rebuilt from its name$'):
        mp._procstart.SemLock._rebuild(12345, 1, 1, None)
