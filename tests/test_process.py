"""Process lifecycle, exit codes, repr, misuse, join(timeout), bootstrap details -- pinned to CPython 3.11.

Every test runs for each start method under test (``start_method``/``ctx`` fixtures, see conftest.py).
"""

import atexit
import gc
import json
import os
import pickle
import re
import signal
import sys
import threading
import time
import weakref
from multiprocessing.connection import wait

import _targets
import pytest
from _support import (
    CHILD_TIMEOUT,
    IS_STDLIB,
    finish,
    last_json,
    recv,
    run_in_child,
    run_process,
    skip_if_stdlib,
    skip_on_stdlib,
    start_reporting,
    stderr_parts,
    wait_gone,
    wait_until,
)


def raises_exact(exc_type, message):
    """``pytest.raises`` matching the whole message."""
    return pytest.raises(exc_type, match='^' + re.escape(message) + '$')


# -- 1. lifecycle --------------------------------------------------------------------------------------------------


def test_lifecycle(mp, ctx):
    p = ctx.Process(target=_targets.sleep, args=(0.3,))
    assert p.pid is None
    assert p.ident is None
    assert p.exitcode is None
    assert p.is_alive() is False
    assert p.daemon is False
    assert p.authkey == mp.current_process().authkey
    assert p not in mp.active_children()

    assert p.start() is None
    try:
        assert isinstance(p.pid, int)
        assert p.pid > 0
        assert p.ident == p.pid
        assert p.pid != os.getpid()
        assert p.is_alive() is True
        assert p.exitcode is None
        assert p in mp.active_children()
    finally:
        assert p.join() is None
    assert p.exitcode == 0
    assert p.is_alive() is False
    assert p not in mp.active_children()
    assert p.pid > 0  # still known after the child ended
    p.close()


def test_active_children(mp, ctx):
    p = ctx.Process(target=_targets.sleep, args=(0.2,))
    assert p not in mp.active_children()
    p.start()
    try:
        assert p in mp.active_children()
    finally:
        finish(p)
    assert p not in mp.active_children()
    # a finished child leaves the list on the next active_children() even without join()
    q = ctx.Process(target=_targets.noop)
    q.start()
    wait([q.sentinel], CHILD_TIMEOUT)
    assert wait_until(lambda: q not in mp.active_children(), CHILD_TIMEOUT)
    assert q.exitcode == 0
    q.join()


def test_sentinel(ctx):
    p = ctx.Process(target=_targets.sleep, args=(0.2,))
    with raises_exact(ValueError, 'process not started'):
        p.sentinel  # noqa: B018
    p.start()
    try:
        sentinel = p.sentinel
        assert isinstance(sentinel, int)
        assert wait([sentinel], 0) == []
        assert wait([sentinel], CHILD_TIMEOUT) == [sentinel]
    finally:
        finish(p)
    assert p.sentinel == sentinel
    p.close()
    with raises_exact(ValueError, 'process object is closed'):
        p.sentinel  # noqa: B018


def test_name_and_identity(ctx):
    cls = ctx.Process.__name__
    p = ctx.Process()
    q = ctx.Process()
    assert type(p).__name__ == cls
    assert len(p._identity) == 1
    assert q._identity == (p._identity[0] + 1,)
    assert p.name == f'{cls}-{p._identity[0]}'
    assert q.name == f'{cls}-{q._identity[0]}'
    assert ctx.Process(name='worker').name == 'worker'
    e = ctx.Process(name='')  # a false name means "choose one"
    assert e.name == f'{cls}-{e._identity[0]}'
    assert ctx.Process(name=5).name == 5  # CPython only checks the type in the setter
    p.name = 'renamed'
    assert p.name == 'renamed'


def test_daemon_argument(mp, ctx):
    assert ctx.Process().daemon is False  # inherited from the creator (the main process: not daemonic)
    assert ctx.Process(daemon=None).daemon is False
    assert ctx.Process(daemon=True).daemon is True
    assert ctx.Process(daemon=False).daemon is False
    p = ctx.Process()
    p.daemon = True
    assert p.daemon is True
    assert mp.current_process().daemon is False


def test_args_and_kwargs_reach_child(ctx, make_pipe):
    for args in ([1, 'a'], (1, 'a'), iter([1, 'a'])):
        p, r = start_reporting(ctx, make_pipe, _targets.send_args, *args, kwargs={'k': [1, 2]})
        assert recv(r) == [[1, 'a'], {'k': [1, 2]}]
        finish(p)
        assert p.exitcode == 0


# gh-138813 (3.14.1): kwargs defaults to None, and a falsy kwargs is no keyword arguments; before, dict(kwargs).
KWARGS_NONE = sys.version_info >= (3, 14, 1)


@pytest.mark.parametrize('kwargs', [None, 0, (), ''], ids=repr)
def test_falsy_kwargs(ctx, make_pipe, kwargs):
    if not KWARGS_NONE and kwargs in (None, 0):
        with pytest.raises(TypeError) as excinfo:
            ctx.Process(target=_targets.noop, kwargs=kwargs)
        assert str(excinfo.value) == f"'{type(kwargs).__name__}' object is not iterable"
        return
    p, r = start_reporting(ctx, make_pipe, _targets.send_args, 1, kwargs=kwargs)
    assert recv(r) == [[1], {}]
    finish(p)
    assert p.exitcode == 0


def test_args_none(ctx):
    # args defaults to () on every version: tuple(None) fails
    with pytest.raises(TypeError) as excinfo:
        ctx.Process(target=_targets.noop, args=None)
    assert str(excinfo.value) == "'NoneType' object is not iterable"


def test_run_in_parent_before_start(ctx):
    seen = []
    ctx.Process(target=seen.append, args=(1,)).run()
    assert seen == [1]
    kw = {}
    ctx.Process(target=kw.update, kwargs={'a': 2}).run()
    assert kw == {'a': 2}
    assert ctx.Process().run() is None


def test_target_released_after_start(ctx):
    # bpo-30775: start() drops the references to target/args/kwargs
    c = _targets.CallableTarget()
    wr = weakref.ref(c)
    p = ctx.Process(target=c, args=(c,))
    del c
    p.start()
    finish(p)
    gc.collect()
    assert wr() is None
    assert p.exitcode == 0


def test_main_process(mp):
    cur = mp.current_process()
    assert cur.name == 'MainProcess'
    assert cur.is_alive() is True
    assert cur.daemon is False
    assert cur.pid == cur.ident == os.getpid()
    assert cur.exitcode is None
    assert cur._identity == ()
    assert isinstance(cur.authkey, bytes)
    assert len(cur.authkey) == 32
    assert repr(cur) == "<_MainProcess name='MainProcess' parent=None started>"
    assert mp.parent_process() is None
    assert mp.current_process() is cur
    cur.close()  # a no-op for the main process
    assert cur.is_alive() is True


def test_child_view(mp, ctx, make_pipe, start_method):
    res, p = run_in_child(ctx, make_pipe, _targets.child_info)
    assert res[0] == 'ok', res
    info = res[1]
    cls = type(p).__name__
    me = os.getpid()
    assert info['name'] == p.name
    assert info['getpid'] == info['pid'] == info['ident'] == p.pid
    if start_method != 'forkserver':  # a forkserver child is a child of the fork server
        assert info['getppid'] == me
    assert info['identity'] == p._identity
    assert info['daemon'] is False
    assert info['authkey'] == bytes(mp.current_process().authkey)
    assert info['stdlib_authkey'] == bytes(mp.current_process().authkey)
    assert info['exitcode'] is None
    assert info['is_alive'] is True
    assert info['repr'] == f"<{cls} name='{p.name}' parent={me} started>"
    assert info['type'] == cls
    assert info['parent_name'] == 'MainProcess'
    assert info['parent_pid'] == info['parent_ident'] == me
    assert info['parent_alive'] is True
    assert info['parent_repr'] == "<_ParentProcess name='MainProcess' parent=None unknown>"
    assert info['parent_type'] == '_ParentProcess'
    assert info['start_method'] == info['start_method_allow_none'] == start_method
    assert info['active_children'] == 0
    assert info['native_id'] == info['get_native_id'] != threading.get_native_id()


def test_child_view_daemon(ctx, make_pipe):
    res, p = run_in_child(ctx, make_pipe, _targets.child_info, daemon=True)
    info = res[1]
    assert info['daemon'] is True
    assert info['repr'] == f"<{type(p).__name__} name='{p.name}' parent={os.getpid()} started daemon>"


def test_child_stdin_is_devnull(ctx, make_pipe):
    res, _ = run_in_child(ctx, make_pipe, _targets.child_info)
    assert res[1]['stdin'] == ''
    assert res[1]['stdin_closed'] is False


def test_grandchild_names(mp, ctx, make_pipe, start_method):
    p, r = start_reporting(ctx, make_pipe, _targets.grandchild_report)
    grandchild = recv(r)
    child = recv(r)
    finish(p)
    assert p.exitcode == 0
    n = p._identity[0]
    # the counter restarts in every child; the default-context Process is named 'Process-N:M'
    assert child == {
        'before': {'name': f'Process-{n}:1', 'identity': (n, 1)},
        'exitcode': 0,
        'child_name': p.name,
        'child_identity': (n,),
        'second_name': f'Process-{n}:2',
    }
    assert grandchild[0] == 'ok', grandchild
    info = grandchild[1]
    assert info['name'] == f'Process-{n}:1'
    assert info['identity'] == (n, 1)
    assert info['type'] == 'Process'
    assert info['parent_name'] == p.name
    assert info['parent_pid'] == p.pid
    assert info['parent_repr'] == f"<_ParentProcess name='{p.name}' parent=None unknown>"
    assert info['start_method'] == start_method
    assert info['authkey'] == bytes(mp.current_process().authkey)
    assert info['repr'] == f"<Process name='Process-{n}:1' parent={p.pid} started>"


def test_parent_process_liveness(ctx, make_pipe):
    # CPython test_parent_process: a grandchild sees its parent die
    p, r = start_reporting(ctx, make_pipe, _targets.grandchild_sleeps)
    try:
        assert recv(r) == 'alive'
    finally:
        p.terminate()
        finish(p)
    assert recv(r) == 'not alive'


# -- 2. exit codes -------------------------------------------------------------------------------------------------

EXIT_CASES = {
    # key: (target name, args, exit code)
    'return': ('noop', (), 0),
    'return_value': ('return_value', (), 0),
    'sys_exit_no_arg': ('exit_no_arg', (), 0),
    'sys_exit_none': ('exit_with', (None,), 0),
    'sys_exit_0': ('exit_with', (0,), 0),
    'sys_exit_3': ('exit_with', (3,), 3),
    'sys_exit_true': ('exit_with', (True,), 1),
    'sys_exit_false': ('exit_with', (False,), 0),
    'sys_exit_256': ('exit_with', (256,), 0),  # the kernel keeps the low byte
    'sys_exit_minus_1': ('exit_with', (-1,), 255),
    'sys_exit_str': ('exit_with', ('bye',), 1),
    'sys_exit_list': ('exit_with', ([1, 2, 3],), 1),
    'exception': ('raise_error', (), 1),
    'keyboard_interrupt': ('raise_keyboard_interrupt', (), 1),
    'os_exit_7': ('os_exit', (7,), 7),
}


@pytest.mark.parametrize('case', list(EXIT_CASES))
def test_exitcode(ctx, case):
    func, args, expected = EXIT_CASES[case]
    p = run_process(ctx, getattr(_targets, func), *args)
    assert p.exitcode == expected


_STDERR_SCRIPT = """
ctx = mp.get_context(sys.argv[1])
codes = {}
for key, func, args in json.loads(sys.argv[2]):
    print('@@' + key, file=sys.stderr, flush=True)
    p = ctx.Process(target=getattr(_targets, func), args=tuple(args), name='child-' + key)
    p.start()
    p.join()
    codes[key] = p.exitcode
print('@@end', file=sys.stderr, flush=True)
print(json.dumps(codes))
"""
_stderr_cache = {}


@pytest.fixture
def exit_stderr(run_py, start_method):
    """{case: (exit code, the child's stderr)} from one fresh interpreter per start method (cached)."""
    if start_method not in _stderr_cache:
        cases = [[key, func, list(args)] for key, (func, args, _) in EXIT_CASES.items()]
        proc = run_py(_STDERR_SCRIPT, start_method, json.dumps(cases))
        codes = last_json(proc)
        stderr = stderr_parts(proc.stderr)
        _stderr_cache[start_method] = {key: (codes[key], stderr[key]) for key in EXIT_CASES}
    return _stderr_cache[start_method]


@pytest.mark.parametrize('case', list(EXIT_CASES))
def test_exit_stderr(exit_stderr, case):
    code, err = exit_stderr[case]
    assert code == EXIT_CASES[case][2]
    if case == 'sys_exit_str':
        assert err == 'bye\n'
    elif case == 'sys_exit_list':
        assert err == '[1, 2, 3]\n'
    elif case in ('exception', 'keyboard_interrupt'):
        last = 'RuntimeError: kaboom' if case == 'exception' else 'KeyboardInterrupt'
        assert err.startswith(f'Process child-{case}:\nTraceback (most recent call last):\n'), err
        assert err.endswith(f'\n{last}\n'), err
    else:
        assert err == ''


@pytest.mark.parametrize('meth, signum', [('terminate', signal.SIGTERM), ('kill', signal.SIGKILL)])
def test_terminate_and_kill(mp, ctx, meth, signum):
    p = ctx.Process(target=_targets.sleep, args=(30,), daemon=True)
    p.start()
    try:
        assert p.is_alive() is True
        assert p.exitcode is None
    finally:
        assert getattr(p, meth)() is None
        t0 = time.monotonic()
        finish(p)
    assert time.monotonic() - t0 < 5
    assert p.exitcode == -signum
    assert p.is_alive() is False
    assert p not in mp.active_children()
    getattr(p, meth)()  # no-op once the exit status is known
    assert p.exitcode == -signum


# -- 3. repr -------------------------------------------------------------------------------------------------------


def test_repr_states(ctx):
    cls = ctx.Process.__name__
    me = os.getpid()
    p = ctx.Process(target=_targets.sleep, args=(0.3,))
    n = p.name
    assert repr(p) == f"<{cls} name='{n}' parent={me} initial>"
    p.start()
    try:
        assert repr(p) == f"<{cls} name='{n}' pid={p.pid} parent={me} started>"
    finally:
        finish(p)
    assert repr(p) == f"<{cls} name='{n}' pid={p.pid} parent={me} stopped exitcode=0>"
    p.close()
    assert repr(p) == f"<{cls} name='{n}' parent={me} closed>"


def test_repr_exitcode_names(ctx):
    cls = ctx.Process.__name__
    me = os.getpid()
    d = ctx.Process(target=_targets.sleep, args=(30,), daemon=True, name="it's")
    assert repr(d) == f'<{cls} name="it\'s" parent={me} initial daemon>'
    d.start()
    d.terminate()
    finish(d)
    assert repr(d) == f'<{cls} name="it\'s" pid={d.pid} parent={me} stopped exitcode=-SIGTERM daemon>'
    k = ctx.Process(target=_targets.sleep, args=(30,), name='k')
    k.start()
    k.kill()
    finish(k)
    assert repr(k) == f"<{cls} name='k' pid={k.pid} parent={me} stopped exitcode=-SIGKILL>"
    e = run_process(ctx, _targets.exit_with, 3, name='e')
    assert repr(e) == f"<{cls} name='e' pid={e.pid} parent={me} stopped exitcode=3>"
    d.close()
    assert repr(d) == f'<{cls} name="it\'s" parent={me} closed daemon>'


def test_repr_default_process_class(mp):
    assert re.fullmatch(rf"<Process name='Process-\d+' parent={os.getpid()} initial>", repr(mp.Process()))


def test_repr_unknown_in_child(ctx, make_pipe):
    other = ctx.Process(name='other')
    res, _ = run_in_child(ctx, make_pipe, _targets.repr_of, other)
    assert res == ['ok', f"<{type(other).__name__} name='other' parent={os.getpid()} unknown>"]


# -- 4. misuse -----------------------------------------------------------------------------------------------------


def test_start_twice(ctx):
    p = ctx.Process(target=_targets.noop)
    p.start()
    try:
        with raises_exact(AssertionError, 'cannot start a process twice'):
            p.start()
    finally:
        finish(p)
    with raises_exact(AssertionError, 'cannot start a process twice'):
        p.start()


def test_join_before_start(ctx):
    p = ctx.Process(target=_targets.noop)
    with raises_exact(AssertionError, 'can only join a started process'):
        p.join()
    with raises_exact(AssertionError, 'can only join a started process'):
        p.join(0)


def test_join_current_process(mp):
    with raises_exact(AssertionError, 'can only join a child process'):
        mp.current_process().join()
    with raises_exact(AssertionError, 'can only join a child process'):
        mp.current_process().join(0)


def test_join_self_in_child(ctx, make_pipe):
    res, _ = run_in_child(ctx, make_pipe, _targets.join_current)
    assert res == ['AssertionError', 'can only join a child process']


def test_foreign_process_in_child(ctx, make_pipe):
    other = ctx.Process(target=_targets.noop, name='other')
    res, _ = run_in_child(ctx, make_pipe, _targets.misuse_foreign_process, other)
    assert res == [
        'ok',
        {
            'join': ['AssertionError', 'can only join a child process'],
            'join_timeout': ['AssertionError', 'can only join a child process'],
            'is_alive': ['AssertionError', 'can only test a child process'],
            'start': ['AssertionError', 'can only start a process object created by current process'],
            'repr': ['ok', f"<{type(other).__name__} name='other' parent={os.getpid()} unknown>"],
        },
    ]


def test_fork_child_sees_started_sibling(ctx, make_pipe, start_method):
    if start_method != 'fork':
        pytest.skip('only a fork child inherits a started Process object')
    sibling = ctx.Process(target=_targets.sleep, args=(30,), name='sib', daemon=True)
    sibling.start()
    try:
        res, _ = run_in_child(ctx, make_pipe, _targets.misuse_foreign_process, sibling)
    finally:
        sibling.terminate()
        finish(sibling)
    assert res == [
        'ok',
        {
            'join': ['AssertionError', 'can only join a child process'],
            'join_timeout': ['AssertionError', 'can only join a child process'],
            'is_alive': ['AssertionError', 'can only test a child process'],
            'start': ['AssertionError', 'cannot start a process twice'],
            'repr': ['ok', f"<ForkProcess name='sib' pid={sibling.pid} parent={os.getpid()} unknown daemon>"],
        },
    ]


def test_start_in_daemonic_child(ctx, make_pipe):
    res, _ = run_in_child(ctx, make_pipe, _targets.start_grandchild, daemon=True)
    assert res == ['AssertionError', 'daemonic processes are not allowed to have children']


def test_daemon_after_start(ctx):
    p = ctx.Process(target=_targets.noop)
    p.start()
    try:
        with raises_exact(AssertionError, 'process has already started'):
            p.daemon = True
    finally:
        finish(p)
    with raises_exact(AssertionError, 'process has already started'):
        p.daemon = False
    assert p.daemon is False


def test_name_must_be_string(ctx):
    p = ctx.Process()
    with raises_exact(AssertionError, 'name must be a string'):
        p.name = 5
    with raises_exact(AssertionError, 'name must be a string'):
        p.name = None
    assert p.name == f'{type(p).__name__}-{p._identity[0]}'


def test_group_must_be_none(ctx):
    with raises_exact(AssertionError, 'group argument must be None for now'):
        ctx.Process('group')
    with raises_exact(AssertionError, 'group argument must be None for now'):
        ctx.Process(group=0, target=_targets.noop)
    assert ctx.Process(None).name


def _closed_process(ctx, started):
    p = ctx.Process(target=_targets.noop, name='closed-one', daemon=True)
    if started:
        p.start()
        finish(p)
    p.close()
    return p


CLOSED_CALLS = {
    'start': lambda p: p.start(),
    'terminate': lambda p: p.terminate(),
    'kill': lambda p: p.kill(),
    'join': lambda p: p.join(),
    'join_timeout': lambda p: p.join(0),
    'is_alive': lambda p: p.is_alive(),
    'exitcode': lambda p: p.exitcode,
    'pid': lambda p: p.pid,
    'ident': lambda p: p.ident,
    'sentinel': lambda p: p.sentinel,
    'interrupt': lambda p: p.interrupt(),
}


@pytest.mark.parametrize('started', [True, False], ids=['started', 'never_started'])
@pytest.mark.parametrize('call', list(CLOSED_CALLS))
def test_closed_process_raises(ctx, started, call):
    p = _closed_process(ctx, started)
    if call == 'interrupt':
        skip_if_stdlib('Process.interrupt() is new in 3.14', condition=not hasattr(p, 'interrupt'))
    with raises_exact(ValueError, 'process object is closed'):
        CLOSED_CALLS[call](p)


@pytest.mark.parametrize('started', [True, False], ids=['started', 'never_started'])
def test_closed_process_still_works(mp, ctx, started):
    p = _closed_process(ctx, started)
    assert p.name == 'closed-one'
    p.name = 'renamed'
    assert p.name == 'renamed'
    assert p.daemon is True
    assert p.authkey == mp.current_process().authkey
    assert repr(p) == f"<{type(p).__name__} name='renamed' parent={os.getpid()} closed daemon>"
    assert p.close() is None  # idempotent
    assert p not in mp.active_children()


def test_close_while_running(mp, ctx):
    p = ctx.Process(target=_targets.sleep, args=(30,))
    p.start()
    try:
        with raises_exact(
            ValueError,
            'Cannot close a process while it is still running. You should first call join() or terminate().',
        ):
            p.close()
        assert p.is_alive() is True  # still fully usable
        assert p in mp.active_children()
    finally:
        p.terminate()
        finish(p)
    p.close()
    assert p not in mp.active_children()


@pytest.mark.parametrize('meth', ['terminate', 'kill', 'interrupt'])
def test_signal_before_start(ctx, meth):
    p = ctx.Process(target=_targets.noop)
    skip_if_stdlib('Process.interrupt() is new in 3.14', condition=not hasattr(p, meth))
    with pytest.raises(AttributeError) as excinfo:
        getattr(p, meth)()
    assert 'NoneType' in str(excinfo.value)
    assert f"'{meth}'" in str(excinfo.value)


def test_run_after_start_in_parent(ctx):
    p = run_process(ctx, _targets.noop)
    with pytest.raises(AttributeError):  # target/args/kwargs were dropped by start() (bpo-30775)
        p.run()


def test_pickle_process(ctx):
    # a Process carries the authkey, which refuses to be pickled outside of Process.start()
    message = 'Pickling an AuthenticationString object is disallowed for security reasons'
    p = ctx.Process(target=_targets.noop, name='pickled')
    with pytest.raises(TypeError) as excinfo:
        pickle.dumps(p)
    assert str(excinfo.value) == message
    # 3.14 notes where pickling failed (gh-122213); the class is the one under test, stdlib's or procstart's
    cls = f'{type(p).__module__}.{type(p).__qualname__}'
    notes = [
        "when serializing dict item 'authkey'",
        "when serializing dict item '_config'",
        f'when serializing {cls} state',
        f'when serializing {cls} object',
    ]
    assert getattr(excinfo.value, '__notes__', None) == (notes if sys.version_info >= (3, 14) else None)
    with pytest.raises(TypeError) as excinfo:
        pickle.dumps(p.authkey)
    assert str(excinfo.value) == message
    assert getattr(excinfo.value, '__notes__', None) is None


# -- 1+4. subclassing ----------------------------------------------------------------------------------------------


def _check_subclass(p, conn_pair):
    r, w = conn_pair
    cls = type(p)
    assert p.x == 5
    assert p.name == f'{cls.__name__}-{p._identity[0]}'
    p.conn = w
    p.start()
    w.close()
    got = recv(r)
    finish(p)
    assert p.exitcode == 5
    assert got == {
        'x': 5,
        'extra': {'x': 5, 'list': [1, 2, 3]},
        'name': p.name,
        'type': cls.__name__,
        'is_current': True,
    }


def test_subclass(ctx, make_pipe, start_method):
    cls = getattr(_targets, f'Sub_{start_method}')
    p = cls(5)
    assert isinstance(p, ctx.Process)
    _check_subclass(p, make_pipe())


def test_subclass_of_default_process(mp, make_pipe):
    p = _targets.Sub_default(5)
    assert isinstance(p, mp.Process)
    _check_subclass(p, make_pipe())


# -- 5. join(timeout) ----------------------------------------------------------------------------------------------


def test_join_zero_and_negative_timeout(ctx):
    p = ctx.Process(target=_targets.sleep, args=(30,), daemon=True)
    p.start()
    try:
        for timeout in (0, -1, 0.0):
            t0 = time.monotonic()
            assert p.join(timeout) is None
            assert time.monotonic() - t0 < 0.5
            assert p.is_alive() is True
            assert p.exitcode is None
    finally:
        p.terminate()
        finish(p)


def test_join_timeout_on_running_child(ctx):
    p = ctx.Process(target=_targets.sleep, args=(30,), daemon=True)
    p.start()
    try:
        t0 = time.monotonic()
        assert p.join(0.2) is None
        elapsed = time.monotonic() - t0
        assert 0.15 <= elapsed < 2.0
        assert p.exitcode is None
        assert p.is_alive() is True
    finally:
        p.terminate()
        finish(p)


def test_join_many_times(mp, ctx):
    p = ctx.Process(target=_targets.exit_with, args=(4,))
    p.start()
    for _ in range(5):
        assert p.join(CHILD_TIMEOUT) is None
        assert p.exitcode == 4
    for _ in range(3):
        assert p.join() is None
        assert p.join(0) is None
        assert p.exitcode == 4
    assert p not in mp.active_children()


def _start_forking_child(ctx, make_pipe):
    p, r = start_reporting(ctx, make_pipe, _targets.fork_grandchild, 30)
    return p, recv(r)


def test_join_without_timeout_with_forked_grandchild(ctx, make_pipe):
    p, grandchild = _start_forking_child(ctx, make_pipe)
    try:
        t0 = time.monotonic()
        p.join()
        assert time.monotonic() - t0 < 5
        assert p.exitcode == 0
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_join_timeout_with_forked_grandchild(ctx, make_pipe, start_method):
    skip_if_stdlib(
        'the sentinel is a pipe whose write end a forked grandchild inherits: join(timeout) waits for it',
        condition=start_method != 'forkserver',
    )
    if os.environ.get('PROCSTART_DISABLE_PIDFD', '0') not in ('', '0'):
        pytest.skip('without pidfd procstart falls back to the pipe sentinel, which has the same limitation as CPython')
    p, grandchild = _start_forking_child(ctx, make_pipe)
    try:
        t0 = time.monotonic()
        p.join(10)
        assert time.monotonic() - t0 < 5
        assert p.exitcode == 0
        assert p.is_alive() is False
        if not IS_STDLIB:
            # procstart's sentinel (a pidfd) stays readable once the child ended; CPython's forkserver status pipe
            # is only readable until join() has consumed the status and the server has not yet closed its end
            assert wait([p.sentinel], 0) == [p.sentinel]
    finally:
        os.kill(grandchild, signal.SIGKILL)
        finish(p)


# -- 7. exit of the parent, atexit in the child --------------------------------------------------------------------


def test_parent_exit_terminates_daemons_joins_others(run_py, start_method, tmp_path):
    path = tmp_path / 'non-daemon'
    code = """
    ctx = mp.get_context(sys.argv[1])
    d = ctx.Process(target=_targets.sleep, args=(30,), daemon=True)
    n = ctx.Process(target=_targets.sleep_then_write, args=(sys.argv[2], 0.5))
    d.start()
    n.start()
    print(json.dumps([d.pid, n.pid]), flush=True)
    """
    t0 = time.monotonic()
    proc = run_py(code, start_method, path)
    assert time.monotonic() - t0 < 15
    daemon_pid, other_pid = json.loads(proc.stdout)
    assert path.read_text() == 'done'  # the non-daemon child was joined
    assert wait_gone(daemon_pid), 'the daemon child survived its parent'
    assert wait_gone(other_pid)
    assert proc.stderr == ''


def test_child_atexit_handlers_run(ctx, start_method, tmp_path):
    skip_if_stdlib(
        'atexit handlers registered in a fork/forkserver child only run on 3.13+ (gh-83856)',
        condition=sys.version_info < (3, 13) and start_method != 'spawn',
    )
    path = tmp_path / 'atexit'
    p = run_process(ctx, _targets.register_atexit_writer, str(path))
    assert p.exitcode == 0
    assert path.read_text() == 'atexit ran'


def test_parent_atexit_handlers_do_not_run_in_child(ctx, tmp_path):
    path = tmp_path / 'parent-atexit'
    atexit.register(_targets.write_marker, str(path))
    try:
        p = run_process(ctx, _targets.noop)
    finally:
        atexit.unregister(_targets.write_marker)
    assert p.exitcode == 0
    assert not path.exists()


# -- 8. bootstrap details ------------------------------------------------------------------------------------------


def test_child_waits_for_non_daemon_threads(ctx, std_ctx):
    # CPython test_wait_for_threads
    evt = std_ctx.Event()
    p = run_process(ctx, _targets.start_threads, evt)
    assert p.exitcode == 0
    assert evt.is_set()


@pytest.mark.parametrize('stream_name', ['stdout', 'stderr'])
@pytest.mark.parametrize('broken', ['closed', 'none'])
def test_broken_stdio_in_parent(ctx, std_ctx, stream_name, broken):
    # CPython test_error_on_stdio_flush_1
    evt = std_ctx.Event()
    old = getattr(sys, stream_name)
    setattr(sys, stream_name, _targets.broken_stream(broken == 'closed'))
    try:
        p = run_process(ctx, _targets.set_event, evt)
    finally:
        setattr(sys, stream_name, old)
    assert evt.is_set()
    assert p.exitcode == 0


@pytest.mark.parametrize('stream_name', ['stdout', 'stderr'])
@pytest.mark.parametrize('action', ['close', 'remove'])
def test_broken_stdio_in_child(ctx, std_ctx, stream_name, action):
    # CPython test_error_on_stdio_flush_2
    evt = std_ctx.Event()
    p = run_process(ctx, _targets.break_stdio_then_set, evt, stream_name, action)
    assert evt.is_set()
    assert p.exitcode == 0


# -- procstart improvements ----------------------------------------------------------------------------------------


_OPTIMIZE_SCRIPT = """
import multiprocessing

def check(func, *args):
    res = _targets.outcome(func, *args)
    return [res[0], None if res[0] == 'ok' else res[1]]

method = sys.argv[1]
ctx = mp.get_context(method)
res = {'optimize': sys.flags.optimize}
p = ctx.Process(target=_targets.noop)
res['join_before_start'] = check(p.join)
res['name'] = check(setattr, p, 'name', 5)
res['group'] = check(ctx.Process, 'group')
res['join_current'] = check(mp.current_process().join)
p.start()
res['start_twice'] = check(p.start)
res['daemon_after_start'] = check(setattr, p, 'daemon', True)
p.join()
r, w = multiprocessing.get_context(method).Pipe(duplex=False)
d = ctx.Process(target=_targets.call_and_send, args=(w, _targets.start_grandchild), daemon=True)
d.start()
w.close()
res['daemonic_children'] = r.recv()
d.join()
print(json.dumps(res))
"""


@skip_on_stdlib('under python -O the assert-based misuse checks vanish')
def test_misuse_checks_survive_optimize(run_py, start_method):
    proc = run_py(_OPTIMIZE_SCRIPT, start_method, flags=['-O'])
    assert json.loads(proc.stdout) == {
        'optimize': 1,
        'join_before_start': ['AssertionError', 'can only join a started process'],
        'name': ['AssertionError', 'name must be a string'],
        'group': ['AssertionError', 'group argument must be None for now'],
        'join_current': ['AssertionError', 'can only join a child process'],
        'start_twice': ['AssertionError', 'cannot start a process twice'],
        'daemon_after_start': ['AssertionError', 'process has already started'],
        'daemonic_children': ['AssertionError', 'daemonic processes are not allowed to have children'],
    }


@pytest.mark.parametrize('default_handler, expected', [(False, 1), (True, -signal.SIGINT)], ids=['handler', 'sig_dfl'])
def test_interrupt(ctx, make_pipe, default_handler, expected):
    skip_if_stdlib('Process.interrupt() is new in 3.14 (gh-131913)', condition=sys.version_info < (3, 14))
    p, r = start_reporting(ctx, make_pipe, _targets.wait_for_interrupt, default_handler)
    try:
        assert recv(r) == 'ready'
        assert p.interrupt() is None
    finally:
        p.join(CHILD_TIMEOUT)
        if p.exitcode is None:
            p.kill()
            p.join()
    assert p.exitcode == expected
