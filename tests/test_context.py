"""Context API (get_context / set_start_method / ...) -- pinned to the running CPython (3.10 to 3.15).

The default context is process-global state, so everything that reads or sets it runs in a fresh interpreter
(``run_py``); concrete contexts are singletons without mutable state and are checked in-process.
"""

import json
import multiprocessing
import os
import sys
import textwrap

import pytest
from _support import IS_STDLIB, last_json, skip_if_stdlib

V = sys.version_info
# The default start method: fork, forkserver from 3.14 (gh-84559) -- but spawn where no temporary directory is
# writeable (gh-155717, 3.14.9 and 3.15.1).
DEFAULT_METHOD = 'fork' if V < (3, 14) else 'forkserver'
DEFAULT_NEEDS_TEMPDIR = (3, 14, 9) <= V < (3, 15) or V >= (3, 15, 1)
# gh-109263 (3.13.12, 3.14.3): starting a spawn or forkserver process no longer locks the default start method in.
SPAWN_LOCKS_IN = not (V >= (3, 14, 3) or (3, 13, 12) <= V < (3, 14))
# freeze_support() locks the default in on 3.14.0 to 3.14.3 only (gh-80334; gh-140814 undid it in 3.14.4); before
# 3.14 it is a no-op outside Windows.
FREEZE_SUPPORT_LOCKS_IN = (3, 14) <= V < (3, 14, 4)
# set_forkserver_preload(..., on_error=...): 3.15 (gh-141860)
PRELOAD_ON_ERROR = V >= (3, 15)
CONTEXT_CLASS = {'fork': 'ForkContext', 'spawn': 'SpawnContext', 'forkserver': 'ForkServerContext'}


@pytest.fixture
def run_json(run_py):
    """Run a script in a fresh interpreter; return the JSON it printed last. ``check(func, *args, **kwargs)`` is
    ``_targets.outcome``: ``['ok', result]`` or ``[exception type name, message]``."""

    def run(code, *args, **kwargs):
        return last_json(run_py('check = _targets.outcome\n' + textwrap.dedent(code), *args, **kwargs))

    return run


# -- the default context (fresh interpreters) ----------------------------------------------------------------------


def test_set_start_method_twice(run_json):
    res = run_json(
        """
        print(json.dumps([check(mp.set_start_method, 'fork'), check(mp.set_start_method, 'fork'),
                          mp.get_start_method()]))
        """
    )
    assert res == [['ok', None], ['RuntimeError', 'context has already been set'], 'fork']


def test_set_start_method_force(run_json):
    res = run_json(
        """
        print(json.dumps([check(mp.set_start_method, 'fork'), check(mp.set_start_method, 'fork', force=True),
                          check(mp.set_start_method, 'fork', True), mp.get_start_method()]))
        """
    )
    assert res == [['ok', None], ['ok', None], ['ok', None], 'fork']


@pytest.mark.parametrize(
    'lock_in',
    [
        'mp.get_start_method()',
        'mp.get_context()',
        'p = mp.Process(target=_targets.noop); p.start(); p.join()',
    ],
    ids=['get_start_method', 'get_context', 'process_start'],
)
def test_implicit_lock_in(run_json, lock_in):
    res = run_json(
        f"""
        before = mp.get_start_method(allow_none=True)
        {lock_in}
        print(json.dumps([before, mp.get_start_method(allow_none=True), check(mp.set_start_method, 'fork')]))
        """
    )
    assert res == [None, DEFAULT_METHOD, ['RuntimeError', 'context has already been set']]


def test_reset_with_none_force(run_json):
    res = run_json(
        """
        out = [mp.get_start_method(allow_none=True)]
        mp.set_start_method('fork')
        out.append(mp.get_start_method(allow_none=True))
        out.append(check(mp.set_start_method, None, force=True))
        out.append(mp.get_start_method(allow_none=True))
        out.append(check(mp.set_start_method, 'fork'))  # unset again: no RuntimeError
        out.append(mp.get_start_method(allow_none=True))
        print(json.dumps(out))
        """
    )
    assert res == [None, 'fork', ['ok', None], None, ['ok', None], 'fork']


def test_set_start_method_none_without_force(run_json):
    res = run_json(
        """
        out = [check(mp.set_start_method, None), mp.get_start_method(allow_none=True)]
        print(json.dumps(out))
        """
    )
    # CPython: set_start_method(None) without force means get_context(None), i.e. lock in the default
    assert res == [['ok', None], DEFAULT_METHOD]


def test_unknown_method(run_json):
    res = run_json(
        """
        out = [check(mp.set_start_method, 'bogus'), mp.get_start_method(allow_none=True),
               check(mp.get_context, 'bogus'), mp.get_start_method(allow_none=True),
               check(mp.set_start_method, 'bogus', force=True), mp.get_start_method(allow_none=True)]
        print(json.dumps(out))
        """
    )
    msg = ['ValueError', "cannot find context for 'bogus'"]
    assert res == [msg, None, msg, None, msg, None]


def test_named_get_context_does_not_lock_in(run_json):
    res = run_json(
        """
        out = []
        for m in mp.get_all_start_methods():
            mp.get_context(m)
            out.append(mp.get_start_method(allow_none=True))
        print(json.dumps(out))
        """
    )
    assert res == [None, None, None]


def test_default_start_method(run_json):
    res = run_json(
        """
        out = [mp.get_start_method(allow_none=True), mp.get_start_method(), mp.get_start_method(allow_none=True),
               type(mp.get_context()).__name__, mp.get_context() is mp.get_context(mp.get_start_method())]
        print(json.dumps(out))
        """
    )
    assert res == [None, DEFAULT_METHOD, DEFAULT_METHOD, CONTEXT_CLASS[DEFAULT_METHOD], True]


def test_import_does_not_determine_the_default(run_json):
    # CPython's TestStartMethod.test_import_does_not_determine_default_start_method (3.14.9): probing the temporary
    # directory waits until the default is needed.
    res = run_json(
        """
        out = [mp.get_start_method(allow_none=True), 'tempfile' in sys.modules]
        print(json.dumps(out + [mp.get_start_method(), mp.get_all_start_methods()[0]]))
        """
    )
    assert res == [None, False, DEFAULT_METHOD, DEFAULT_METHOD]


def test_default_start_method_without_writeable_tempdir(run_json):
    # The default is determined when first needed (3.14), not at import: a temporary directory made unusable after
    # the import still counts. /proc takes no new file, not even from root.
    res = run_json(
        """
        import tempfile
        tempfile.tempdir = '/proc'
        print(json.dumps([mp.get_start_method(allow_none=True), mp.get_all_start_methods(), mp.get_start_method()]))
        """
    )
    if V < (3, 14):
        assert res == [None, ['fork', 'spawn', 'forkserver'], 'fork']
    elif DEFAULT_NEEDS_TEMPDIR:
        assert res == [None, ['spawn', 'fork', 'forkserver'], 'spawn']
    else:
        assert res == [None, ['forkserver', 'fork', 'spawn'], 'forkserver']


def test_starting_a_process_of_a_context_does_not_lock_in(run_json, start_method):
    # CPython's TestStartMethod.test_spawn_dont_set_context: preparing a spawn or forkserver child reads the start
    # method (it goes to the child), which locked the default in before gh-109263.
    res = run_json(
        """
        p = mp.get_context(sys.argv[1]).Process(target=_targets.noop)
        p.start()
        p.join()
        print(json.dumps([p.exitcode, mp.get_start_method(allow_none=True), check(mp.set_start_method, 'spawn')]))
        """,
        start_method,
    )
    if start_method != 'fork' and SPAWN_LOCKS_IN:
        assert res == [0, DEFAULT_METHOD, ['RuntimeError', 'context has already been set']]
    else:
        assert res == [0, None, ['ok', None]]


def test_process_names_and_repr_fresh_interpreter(run_json):
    res = run_json(
        """
        # A child that outlives the repr right after start() (a noop child can be gone by then).
        p = mp.Process(target=time.sleep, args=(0.5,))
        q = mp.get_context('fork').Process()
        out = [p.name, q.name, repr(p)]
        p.start()
        out.append(repr(p))
        p.join()
        out.append(repr(p))
        p.close()
        out.append(repr(p))
        out.append(os.getpid())
        print(json.dumps(out))
        """
    )
    pid = res[-1]
    names_and_reprs = res[:-1]
    started = names_and_reprs[3]
    child_pid = int(started.split(' pid=')[1].split()[0])
    assert names_and_reprs == [
        'Process-1',
        'ForkProcess-2',  # one counter for all contexts
        f"<Process name='Process-1' parent={pid} initial>",
        f"<Process name='Process-1' pid={child_pid} parent={pid} started>",
        f"<Process name='Process-1' pid={child_pid} parent={pid} stopped exitcode=0>",
        f"<Process name='Process-1' parent={pid} closed>",
    ]


def test_set_executable(run_json, start_method):
    res = run_json(
        """
        import pathlib
        ctx = mp.get_context(sys.argv[1])
        out = []
        for exe in (sys.executable, os.fsencode(sys.executable), pathlib.Path(sys.executable)):
            r = mp.set_executable(exe)
            p = ctx.Process(target=_targets.noop)
            p.start()
            p.join()
            out.append([r, p.exitcode])
        mp.set_executable(sys.executable)
        print(json.dumps(out))
        """,
        start_method,
    )
    assert res == [[None, 0]] * 3


def test_freeze_support(run_json):
    res = run_json(
        """
        print(json.dumps([mp.freeze_support(), mp.get_start_method(allow_none=True)]))
        """
    )
    assert res == [None, DEFAULT_METHOD if FREEZE_SUPPORT_LOCKS_IN else None]


def test_freeze_support_then_set_start_method(run_json):
    # CPython's TestStartMethod.test_freeze_support_dont_set_context (gh-140814)
    res = run_json(
        """
        print(json.dumps([check(mp.freeze_support), check(mp.set_start_method, 'spawn'), mp.get_start_method()]))
        """
    )
    if FREEZE_SUPPORT_LOCKS_IN:
        assert res == [['ok', None], ['RuntimeError', 'context has already been set'], DEFAULT_METHOD]
    else:
        assert res == [['ok', None], ['ok', None], 'spawn']


def test_child_start_method_with_default_context(run_json, start_method):
    res = run_json(
        """
        import multiprocessing
        method = sys.argv[1]
        mp.set_start_method(method)
        r, w = multiprocessing.get_context(method).Pipe(duplex=False)
        p = mp.Process(target=_targets.call_and_send, args=(w, _targets.child_info))
        p.start()
        w.close()
        res = r.recv()
        p.join()
        info = res[1]
        print(json.dumps([res[0], type(p).__name__, p.name, info['type'], info['start_method'],
                          info['start_method_allow_none'], p.exitcode]))
        """,
        start_method,
    )
    assert res == ['ok', 'Process', 'Process-1', 'Process', start_method, start_method, 0]


# -- concrete contexts (in-process) --------------------------------------------------------------------------------


def test_concrete_context(mp, ctx, start_method):
    prefix = {'fork': 'Fork', 'spawn': 'Spawn', 'forkserver': 'ForkServer'}[start_method]
    assert type(ctx).__name__ == f'{prefix}Context'
    assert ctx.Process.__name__ == f'{prefix}Process'
    assert mp.get_context(start_method) is ctx
    assert ctx.get_context() is ctx
    assert ctx.get_context(None) is ctx
    assert ctx.get_context(start_method) is ctx
    assert ctx.get_start_method() == start_method
    assert ctx.get_start_method(allow_none=True) == start_method
    for args in ((start_method,), (None,), (start_method, True)):
        with pytest.raises(ValueError) as excinfo:
            ctx.set_start_method(*args)
        assert str(excinfo.value) == 'cannot set start method of concrete context'
    with pytest.raises(ValueError) as excinfo:
        ctx.get_context('bogus')
    assert str(excinfo.value) == "cannot find context for 'bogus'"


def test_context_process_class(mp, ctx):
    assert mp.Process.__name__ == 'Process'
    if IS_STDLIB:
        # CPython: ctx.Process and mp.Process are siblings (both derive from process.BaseProcess); neither is a
        # subclass of the other, so isinstance(ctx.Process(), mp.Process) is False.
        assert not issubclass(ctx.Process, mp.Process)
        assert not issubclass(mp.Process, ctx.Process)
    else:
        # procstart (by design): every context's Process is a subclass of procstart.Process, a Python subclass of
        # the Rust class procstart._procstart.Process (so that stdlib's classes can be appended to its bases).
        assert issubclass(ctx.Process, mp.Process)
        assert mp.Process.__bases__[0] is mp._procstart.Process
    common = (set(ctx.Process.__mro__) & set(mp.Process.__mro__)) - {object}
    assert common
    assert all(hasattr(base, 'start') and hasattr(base, 'join') for base in common)


def test_get_context_bogus(mp):
    with pytest.raises(ValueError) as excinfo:
        mp.get_context('bogus')
    assert str(excinfo.value) == "cannot find context for 'bogus'"


def test_get_context_singletons(mp, start_method):
    assert mp.get_context(start_method) is mp.get_context(start_method)


def test_get_all_start_methods(mp):
    # 3.14: the default first, then the others in CPython's order (fork, spawn, forkserver)
    expected = ['fork', 'spawn', 'forkserver'] if V < (3, 14) else ['forkserver', 'fork', 'spawn']
    assert mp.get_all_start_methods() == expected


@pytest.mark.parametrize('names', [[1, 2], ['os', 1], [b'os']], ids=repr)
def test_set_forkserver_preload_type(mp, names):
    # 3.10's check looks at the previously set list instead (fixed in 3.11): it would store these and fail later
    skip_if_stdlib('3.10 checks the previously set module list, not the new one', condition=V < (3, 11))
    with pytest.raises(TypeError) as excinfo:
        mp.set_forkserver_preload(names)
    assert str(excinfo.value) == 'module_names must be a list of strings'


@pytest.mark.parametrize('on_error', ['ignore', 'warn', 'fail'])
def test_set_forkserver_preload_on_error(mp, on_error):
    # 3.15 (gh-141860): on_error, keyword-only; unknown to earlier versions' set_forkserver_preload
    try:
        if PRELOAD_ON_ERROR:
            assert mp.set_forkserver_preload(['os'], on_error=on_error) is None
        else:
            with pytest.raises(TypeError) as excinfo:
                mp.set_forkserver_preload(['os'], on_error=on_error)
            message = "BaseContext.set_forkserver_preload() got an unexpected keyword argument 'on_error'"
            assert str(excinfo.value) == message
        with pytest.raises(TypeError):
            mp.set_forkserver_preload(['os'], on_error)  # keyword-only
    finally:
        mp.set_forkserver_preload(['__main__'])


@pytest.mark.parametrize('on_error', ['invalid', 'IGNORE', None, 1], ids=repr)
def test_set_forkserver_preload_on_error_unknown(mp, on_error):
    if not PRELOAD_ON_ERROR:
        pytest.skip('on_error is new in 3.15')
    with pytest.raises(ValueError) as excinfo:
        mp.set_forkserver_preload(['os'], on_error=on_error)
    assert str(excinfo.value) == f"on_error must be 'ignore', 'warn', or 'fail', not {on_error!r}"
    # checked after the module names, as CPython
    with pytest.raises(TypeError) as excinfo:
        mp.set_forkserver_preload([1], on_error=on_error)
    assert str(excinfo.value) == 'module_names must be a list of strings'


_PRELOAD_RUN = """
import multiprocessing
mp.set_forkserver_preload(json.loads(sys.argv[1]), **json.loads(sys.argv[2]))
r, w = multiprocessing.Pipe(duplex=False)
p = mp.get_context('forkserver').Process(target=_targets.send_args, args=(w, 42))
try:
    p.start()
except Exception as e:
    out = ['error', isinstance(e, (EOFError, ConnectionError)), getattr(e, '__notes__', None)]
else:
    w.close()
    out = ['ok', r.recv(), p.join(), p.exitcode]
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ('modules', 'on_error'),
    [
        (['no_such_module_xyz'], None),
        (['no_such_module_xyz'], 'ignore'),
        (['no_such_module_xyz'], 'warn'),
        (['no_such_module_xyz'], 'fail'),
        (['os', 'json'], 'fail'),
    ],
    ids=['default', 'ignore', 'warn', 'fail', 'fail_valid'],
)
def test_forkserver_preload_on_error(run_py, modules, on_error):
    # 3.15 (gh-141860), CPython's test_multiprocessing_forkserver.test_preload: a preload module that cannot be
    # imported is skipped (ignore, before 3.15 always), skipped with an ImportWarning on the server's stderr (warn),
    # or ends the server, so that start() fails with a note saying so (fail).
    if on_error is not None and not PRELOAD_ON_ERROR:
        pytest.skip('on_error is new in 3.15')
    kwargs = {} if on_error is None else {'on_error': on_error}
    proc = run_py(_PRELOAD_RUN, json.dumps(modules), json.dumps(kwargs), flags=('-W', 'always::ImportWarning'))
    res = last_json(proc)
    failing = 'no_such_module_xyz' in modules
    if on_error == 'fail' and failing:
        assert res == ['error', True, ['Forkserver process may have crashed during module preloading. Check stderr.']]
        assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in proc.stderr
        return
    assert res == ['ok', [[42], {}], None, 0]
    warning = "ImportWarning: Failed to preload module 'no_such_module_xyz': No module named 'no_such_module_xyz'"
    assert (warning in proc.stderr) == (on_error == 'warn' and failing), proc.stderr
    assert ('Traceback' in proc.stderr) is False, proc.stderr


_FAILING_MAIN = """
import sys
if __name__ == '__mp_main__':
    raise RuntimeError('boom in main')
if __name__ == '__main__':
    import json
    import _targets
    import {modname} as mp
    mp.set_forkserver_preload(['__main__'], **json.loads(sys.argv[1]))
    p = mp.get_context('forkserver').Process(target=_targets.noop)
    p.start()
    p.join()
    print(json.dumps(p.exitcode))
"""


@pytest.mark.parametrize('on_error', [None, 'warn'], ids=['default', 'warn'])
def test_forkserver_preload_failing_main(run_py, tmp_path, modname, on_error):
    # 3.15 (gh-141860): a main module that fails in the server is skipped silently, or with an ImportWarning; the
    # child then runs it itself and fails. (Before 3.15, CPython's server dies of it and procstart reports it.)
    if not PRELOAD_ON_ERROR:
        pytest.skip('on_error is new in 3.15')
    script = tmp_path / 'failing_main.py'
    script.write_text(_FAILING_MAIN.format(modname=modname))
    kwargs = {} if on_error is None else {'on_error': on_error}
    proc = run_py(
        f'import runpy; sys.argv = [{str(script)!r}, {json.dumps(kwargs)!r}]; runpy.run_path(sys.argv[0], run_name="__main__")',
        flags=('-W', 'always::ImportWarning'),
    )
    assert last_json(proc) == 1
    assert proc.stderr.count('RuntimeError: boom in main') == 1, proc.stderr
    warning = f'ImportWarning: Failed to preload __main__ from {str(script)!r}: boom in main'
    assert (warning in proc.stderr) == (on_error == 'warn'), proc.stderr


def test_cpu_count(mp):
    n = mp.cpu_count()
    assert type(n) is int
    assert n >= 1
    assert n == os.cpu_count()


def test_context_factories(ctx, start_method):
    # everything a stdlib context offers (Queue, Pool, Manager, Lock, ...) exists on the context under test
    std = multiprocessing.get_context(start_method)
    missing = [name for name in dir(std) if not name.startswith('_') and not hasattr(ctx, name)]
    assert missing == []


def test_module_api(mp):
    missing = [name for name in multiprocessing.__all__ if not hasattr(mp, name)]
    assert missing == []
