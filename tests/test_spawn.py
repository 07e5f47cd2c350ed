"""What is specific to the spawn start method -- pinned to CPython 3.11.

The generic lifecycle / exit-code / misuse / interop tests already run for spawn (``start_method`` fixture); these
tests use ``mp.get_context('spawn')`` directly: re-import of the main module as ``__mp_main__`` (in fresh interpreters
started from scripts, ``-m`` modules, packages, ``-c``), the unguarded-main RuntimeError, pickling errors raised by
``start()``, stdlib objects sent to a spawn child, nested spawn, the fd set of the child, ``set_executable`` and the
propagation of interpreter flags.
"""

import json
import multiprocessing
import os
import re
import sys
import threading
import time
from multiprocessing.reduction import ForkingPickler

import _targets
import pytest
from _support import (
    CHILD_TIMEOUT,
    IS_STDLIB,
    TESTS_DIR,
    child_path,
    finish,
    last_json,
    recv,
    run_process,
    run_python,
    skip_on_stdlib,
    start_process,
    stderr_parts,
)


@pytest.fixture
def spawn(mp):
    """The spawn context of the module under test."""
    return mp.get_context('spawn')


@pytest.fixture
def std_spawn():
    """The stdlib spawn context (for the Queue/Pipe/Lock/... objects sent to children)."""
    return multiprocessing.get_context('spawn')


def _log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- 1. the main module is re-run in the child as __mp_main__ ----------------------------------------------------------

# Top-level code logs [__name__, pid] on every execution; ``main(target)`` chdirs, starts one spawn child that dumps
# its view (_targets.spawn_state) to a file, and prints the parent's view as JSON.
_MAIN_SOURCE = """\
import json
import os
import sys

import _targets
import {modname} as mp
{relative_import}
with open({log!r}, 'a') as f:
    f.write(json.dumps([__name__, os.getpid()]) + '\\n')


def target(path):
    _targets.dump_spawn_state(path, module_name=__name__)


def main(target):
    chdir_to, out = sys.argv[1], sys.argv[2]
    parent = {{'pid': os.getpid(), 'orig_cwd': os.getcwd()}}
    os.chdir(chdir_to)
    p = mp.get_context('spawn').Process(target=target, args=(out,))
    parent.update(argv=sys.argv, path=list(sys.path), cwd=os.getcwd())
    p.start()
    p.join()
    parent.update(exitcode=p.exitcode, name=p.name)
    print(json.dumps(parent))


{call}
"""

_GUARDED_CALL = "if __name__ == '__main__':\n    main(target)"
_UNGUARDED_CALL = 'main(_targets.dump_spawn_state)'  # for code that is never re-run (a package __main__, -c)

# how: (command line before the extra args, whether the child re-runs main)
_MAIN_KINDS = {
    'script': (['main_script.py'], True),
    'script_no_suffix': (['main_script_nosuffix'], True),
    'module': (['-m', 'spawnpkg.mainmod'], True),
    'package_main': (['-m', 'spawnpkg'], False),
    'dash_c': (['-c', None], False),
}


@pytest.fixture
def main_tree(tmp_path, modname):
    """scripts/ (launch cwd, two scripts), src/spawnpkg (a module with a relative import, a __main__), elsewhere/."""
    log = tmp_path / 'main-runs.log'
    scripts, src, elsewhere = tmp_path / 'scripts', tmp_path / 'src', tmp_path / 'elsewhere'
    pkg = src / 'spawnpkg'
    for d in (scripts, pkg, elsewhere):
        d.mkdir(parents=True)

    def source(call, relative_import=''):
        return _MAIN_SOURCE.format(modname=modname, log=str(log), call=call, relative_import=relative_import)

    (scripts / 'main_script.py').write_text(source(_GUARDED_CALL))
    (scripts / 'main_script_nosuffix').write_text(source(_GUARDED_CALL))
    (pkg / '__init__.py').write_text('')
    (pkg / 'sibling.py').write_text('')
    (pkg / 'mainmod.py').write_text(source(_GUARDED_CALL, relative_import='from . import sibling  # noqa: F401\n'))
    (pkg / '__main__.py').write_text(source(_UNGUARDED_CALL))
    return {
        'log': log,
        'scripts': scripts,
        'src': src,
        'elsewhere': elsewhere,
        'out': tmp_path / 'child.json',
        'dash_c': source(_UNGUARDED_CALL),
    }


@pytest.mark.parametrize('kind', list(_MAIN_KINDS))
def test_main_reimport(main_tree, kind):
    prefix, reruns = _MAIN_KINDS[kind]
    if kind == 'dash_c':
        prefix = ['-c', main_tree['dash_c']]
    proc = run_python(
        *prefix,
        main_tree['elsewhere'],
        main_tree['out'],
        'extra-arg',
        cwd=main_tree['scripts'],
        path=[main_tree['src']],
        stdin='the parent stdin\n',
    )
    parent = last_json(proc)
    assert parent['exitcode'] == 0, proc.stderr
    assert parent['name'] == 'SpawnProcess-1'
    child = json.loads(main_tree['out'].read_text())

    # the main module ran once in the parent, and once more (as __mp_main__) in the child -- or never in the child
    runs = _log_lines(main_tree['log'])
    expected = [['__main__', parent['pid']]]
    if reruns:
        expected.append(['__mp_main__', child['pid']])
    assert runs == expected
    if reruns:
        assert child['module_name'] == '__mp_main__'  # the target's module globals
        assert child['main_name'] == '__mp_main__'
        assert child['main_is_mp_main'] is True

    # argv, path ('' -> the parent's original cwd), cwd at start() time
    assert child['argv'] == parent['argv']
    assert parent['argv'][-3:] == [str(main_tree['elsewhere']), str(main_tree['out']), 'extra-arg']
    assert child['path'] == [parent['orig_cwd'] if p == '' else p for p in parent['path']]
    if kind == 'dash_c':
        assert '' in parent['path']
        assert '' not in child['path']
    assert parent['orig_cwd'] == str(main_tree['scripts'])
    assert child['cwd'] == parent['cwd'] == str(main_tree['elsewhere'])

    # the parent as the child sees it; stdin is /dev/null
    assert child['name'] == 'SpawnProcess-1'
    assert child['parent_name'] == 'MainProcess'
    assert child['parent_pid'] == parent['pid']
    assert child['parent_alive'] is True
    assert child['stdin'] == ''
    assert proc.stderr == ''


# -- 2. unguarded main: RuntimeError in the child, no fork bomb --------------------------------------------------------

_UNGUARDED_SOURCE = """\
import json
import os

import {modname} as mp

with open({log!r}, 'a') as f:
    f.write(json.dumps([__name__, os.getpid()]) + '\\n')


def foo():
    with open({log!r}, 'a') as f:
        f.write(json.dumps(['foo', os.getpid()]) + '\\n')


p = mp.get_context('spawn').Process(target=foo)
p.start()
p.join()
print(json.dumps({{'pid': os.getpid(), 'child': p.pid, 'exitcode': p.exitcode}}))
"""


def _bootstrapping_error():
    """CPython's own message (multiprocessing.spawn._check_not_importing_main) of this interpreter version."""
    import multiprocessing.spawn

    cur = multiprocessing.current_process()
    cur._inheriting = True
    try:
        multiprocessing.spawn._check_not_importing_main()
    except RuntimeError as e:
        return str(e)
    finally:
        del cur._inheriting
    raise AssertionError('_check_not_importing_main() did not raise')


def test_unguarded_main_no_fork_bomb(modname, tmp_path):
    log = tmp_path / 'runs.log'
    script = tmp_path / 'fork_bomb.py'
    script.write_text(_UNGUARDED_SOURCE.format(modname=modname, log=str(log)))
    t0 = time.monotonic()
    proc = run_python(script, cwd=tmp_path, timeout=30)
    assert time.monotonic() - t0 < 15
    res = json.loads(proc.stdout)  # nothing else on stdout
    assert res['exitcode'] == 1
    # main ran in the parent and in the child (where start() raised); foo never ran, no grandchild was started
    assert _log_lines(log) == [['__main__', res['pid']], ['__mp_main__', res['child']]]
    message = _bootstrapping_error()
    assert 'An attempt has been made to start a new process before the\n' in message
    assert 'RuntimeError: ' + message in proc.stderr
    assert proc.stderr.count('\nRuntimeError: ') == 1


# -- 3. unpicklable targets and arguments: start() raises in the parent ------------------------------------------------

MODULE_LAMBDA = lambda: None  # pickled by name: the lookup of '<lambda>' fails

# case -> where the culprit sits. What CPython raises for it: AttributeError "Can't pickle local object ..." for local
# functions (3.13: "Can't get local object ..."; 3.14: PicklingError "Can't pickle local object <function ...>"),
# PicklingError for the module lambda ("... attribute lookup <lambda> on test_spawn failed"), TypeError "cannot
# pickle '_io.TextIOWrapper' object" / "cannot pickle '_thread.lock' object".
UNPICKLABLE = {
    'lambda_target': 'target',
    'nested_function_target': 'target',
    'module_lambda_target': 'target',
    'open_file_arg': 'args[1]',
    'thread_lock_arg': 'args[1]',
    'lambda_kwarg': "kwargs['key']",
}


def _unpicklable_case(case, open_file):
    """(Process keyword arguments, the unpicklable object)."""
    if case == 'lambda_target':
        obj = lambda: None
        return {'target': obj}, obj
    if case == 'nested_function_target':

        def nested():
            pass

        return {'target': nested}, nested
    if case == 'module_lambda_target':
        return {'target': MODULE_LAMBDA}, MODULE_LAMBDA
    if case == 'open_file_arg':
        obj = open_file
        return {'target': _targets.noop, 'args': (1, obj)}, obj
    if case == 'thread_lock_arg':
        obj = threading.Lock()
        return {'target': _targets.noop, 'args': (1, obj)}, obj
    assert case == 'lambda_kwarg'
    obj = lambda: 0
    return {'target': _targets.noop, 'kwargs': {'other': 1, 'key': obj}}, obj


def _cpython_pickling_error(obj):
    """What CPython's pickler raises for the culprit alone."""
    with pytest.raises(Exception) as info:
        ForkingPickler.dumps(obj)
    return info.value


def _assert_not_started(mp, p):
    assert repr(p).endswith(' initial>'), repr(p)
    assert p.exitcode is None
    assert p.pid is None
    assert p.is_alive() is False
    assert p not in mp.active_children()


def _pickling_notes(where, process):
    """The notes 3.14's pickle adds to its error (gh-122213) on its way from the process object to the culprit."""
    if sys.version_info < (3, 14):
        return []
    cls = f'{type(process).__module__}.{type(process).__qualname__}'
    steps = {
        'target': ["when serializing dict item '_target'"],
        'args[1]': ['when serializing tuple item 1', "when serializing dict item '_args'"],
        "kwargs['key']": ["when serializing dict item 'key'", "when serializing dict item '_kwargs'"],
    }[where]
    return [*steps, f'when serializing {cls} state', f'when serializing {cls} object']


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
@pytest.mark.parametrize('case', list(UNPICKLABLE))
def test_unpicklable_raises_from_start(mp, method, case):
    # The running CPython's pickling error -- type, message and (3.14) notes -- raised by start() in the parent.
    # procstart adds a note naming the culprit (3.11+: notes are new in 3.11; on 3.10 the error is left as it is).
    where = UNPICKLABLE[case]
    ctx = mp.get_context(method)
    with open(os.devnull) as f:
        kwargs, obj = _unpicklable_case(case, f)
        original = _cpython_pickling_error(obj)
        assert where not in str(original)  # the note would prove nothing otherwise
        p = ctx.Process(**kwargs)
        for _ in range(2):  # retrying without fixing anything fails the same way
            with pytest.raises(Exception) as info:
                p.start()
            error = info.value
            assert type(error) is type(original)
            assert str(error) == str(original)
            assert error.__cause__ is None
            notes = _pickling_notes(where, p)
            if not IS_STDLIB and sys.version_info >= (3, 11):
                notes.append(f'procstart: {where} of {p!r} cannot be pickled for the {method} start method')
            assert getattr(error, '__notes__', None) == (notes or None)
            _assert_not_started(mp, p)
        p.close()


_DASH_C_TARGET = """
def f():
    pass

ctx = mp.get_context('spawn')
_targets.start_helpers(ctx)
helpers = {pid for pid, _ in _targets.child_pids()}
p = ctx.Process(target=f)
res = []
for _ in range(2):
    try:
        p.start()
    except Exception as e:
        res.append([type(e).__module__ + '.' + type(e).__qualname__, isinstance(e, pickle.PicklingError), str(e)])
    else:
        p.join()
        res.append(['started', p.exitcode])
        break
print(json.dumps({'res': res, 'initial': repr(p).endswith(' initial>'), 'exitcode': p.exitcode, 'pid': p.pid,
                  'active': len(mp.active_children()),
                  'children': [c for c in _targets.child_pids() if c[0] not in helpers]}))
"""


@pytest.mark.skipif(not IS_STDLIB, reason='CPython reference for test_dash_c_target_raises_pickling_error')
def test_dash_c_target_child_fails_stdlib(run_py):
    # __main__ has no __file__: nothing is re-run in the child, which cannot find f
    proc = run_py('import pickle\n' + _DASH_C_TARGET)
    res = last_json(proc)
    assert res['res'] == [['started', 1]]
    # 3.12 names a built-in module by its loader in its repr; 3.14 raises the plain AttributeError
    if sys.version_info >= (3, 14):
        message = "AttributeError: module '__main__' has no attribute 'f'\n"
    elif sys.version_info >= (3, 12):
        message = "AttributeError: Can't get attribute 'f' on <module '__main__' (<class '_frozen_importlib.BuiltinImporter'>)>\n"
    else:
        message = "AttributeError: Can't get attribute 'f' on <module '__main__' (built-in)>\n"
    assert proc.stderr.count(message) == 1


@skip_on_stdlib("the child dies with AttributeError: Can't get attribute 'f' on <module '__main__' (built-in)>")
def test_dash_c_target_raises_pickling_error(run_py):
    proc = run_py('import pickle\n' + _DASH_C_TARGET)
    res = last_json(proc)
    assert len(res['res']) == 2
    for kind, is_pickling_error, message in res['res']:
        assert is_pickling_error, kind
        assert '__main__' in message
    assert res['res'][0] == res['res'][1]
    assert res['initial'] is True
    assert res['exitcode'] is None
    assert res['pid'] is None
    assert res['active'] == 0
    assert res['children'] == []
    assert proc.stderr == ''


_STDIN_PROGRAM = """
def f():
    pass

if __name__ == '__main__':
    results = {}
    for method in ('spawn', 'forkserver'):
        ctx = mp.get_context(method)
        p = ctx.Process(target=_targets.noop)
        p.start()
        p.join()
        try:
            ctx.Process(target=f).start()
            error = None
        except Exception as e:
            error = [type(e).__name__, str(e)]
        results[method] = [p.exitcode, error]
    print(json.dumps(results))
"""


@pytest.mark.skipif(not IS_STDLIB, reason='CPython reference for test_program_read_from_stdin_starts_children')
def test_program_read_from_stdin_children_fail_stdlib(run_stdin):
    # CPython names such a main module's file '<stdin>' and every spawn or fork-server child tries to open it; where
    # the fork server preloads the main module's file (3.14), the server fails to, and start() fails.
    proc = run_stdin(_STDIN_PROGRAM, check=False)
    assert re.search(r"FileNotFoundError: \[Errno 2\] No such file or directory: '.*/<stdin>'", proc.stderr)
    if proc.returncode == 0:
        for exitcode, error in last_json(proc).values():
            assert exitcode == 1 and error is None
    else:
        assert 'multiprocessing/forkserver.py' in proc.stderr


@skip_on_stdlib("every spawn and fork-server child dies with FileNotFoundError: '<stdin>'")
def test_program_read_from_stdin_starts_children(run_stdin):
    # As from python -c: children run no main module, and what __main__ defines is refused at start().
    results = last_json(run_stdin(_STDIN_PROGRAM))
    for method, (exitcode, error) in results.items():
        assert exitcode == 0, method
        assert error[0] == 'PicklingError' and 'a program read from standard input' in error[1], method


# -- 4. stdlib objects as spawn arguments (the rest is in test_interop.py) ---------------------------------------------


def test_lockless_value_under_explicit_lock_from_three_children(spawn, std_spawn):
    value = std_spawn.Value('i', 0, lock=False)
    lock = std_spawn.Lock()
    procs = [start_process(spawn, _targets.add_under_lock, value, lock, 200) for _ in range(3)]
    for p in procs:
        finish(p)
        assert p.exitcode == 0
    assert value.value == 600


def test_many_stdlib_objects_in_one_start(spawn, std_spawn):
    q = std_spawn.Queue()
    sq = std_spawn.SimpleQueue()
    a, b = std_spawn.Pipe()
    lock = std_spawn.Lock()
    evt = std_spawn.Event()
    value = std_spawn.Value('i', 0)
    with std_spawn.Manager() as manager:
        d = manager.dict()
        p = spawn.Process(target=_targets.use_stdlib_objects, args=(q, sq, a, b, lock, evt, value, d))
        p.start()
        try:
            assert q.get(timeout=CHILD_TIMEOUT) == ('queue', 'ping')
            assert recv(a) == ('pong', 'ping')
        finally:
            finish(p)
        assert p.exitcode == 0
        assert sq.get() == ('simple', 'ping')
        assert evt.is_set()
        assert value.value == 1
        assert dict(d) == {'child': 'ping'}
    for obj in (q, sq, a, b):
        obj.close()
    q.join_thread()


# -- 5. nested spawn ---------------------------------------------------------------------------------------------------


def test_nested_spawn(spawn, std_spawn):
    # gh-108520: a spawn child passes the Queue it received on to its own spawn child
    q = std_spawn.Queue()
    p = spawn.Process(target=_targets.spawn_nested, args=(q,))
    p.start()
    try:
        grandchild, child, summary = (q.get(timeout=CHILD_TIMEOUT) for _ in range(3))
    finally:
        finish(p)
    q.close()
    q.join_thread()
    assert p.exitcode == 0
    n = p._identity[0]
    assert p.name == f'SpawnProcess-{n}'
    assert child == {
        'name': p.name,
        'pid': p.pid,
        'ppid': os.getpid(),
        'parent_name': 'MainProcess',
        'parent_pid': os.getpid(),
        'start_method': 'spawn',
    }
    assert summary == {
        'grandchild_name': f'SpawnProcess-{n}:1',
        'grandchild_pid': grandchild['pid'],
        'grandchild_exitcode': 0,
    }
    assert grandchild == {
        'name': f'SpawnProcess-{n}:1',
        'pid': summary['grandchild_pid'],
        'ppid': p.pid,
        'parent_name': p.name,
        'parent_pid': p.pid,
        'start_method': 'spawn',
    }


def test_nested_spawn_names_fresh_interpreter(run_py):
    proc = run_py(
        """
        import multiprocessing
        q = multiprocessing.get_context('spawn').Queue()
        p = mp.get_context('spawn').Process(target=_targets.spawn_nested, args=(q,))
        p.start()
        res = [q.get(timeout=20) for _ in range(3)]
        p.join()
        print(json.dumps([p.name, p.exitcode, res[0]['name'], res[0]['parent_name'], res[1]['name']]))
        """
    )
    assert last_json(proc) == ['SpawnProcess-1', 0, 'SpawnProcess-1:1', 'SpawnProcess-1', 'SpawnProcess-1']


# -- 6. the child gets only the fds it needs (CPython TestCloseFds) ----------------------------------------------------


def test_child_does_not_inherit_inheritable_fds(spawn, tmp_path):
    out = tmp_path / 'fds.json'
    r, w = os.pipe()
    high = max(_targets.open_fds()) + 16  # higher than anything a fresh child opens
    os.dup2(w, high)  # inheritable by default
    try:
        os.set_inheritable(w, True)
        assert os.get_inheritable(high)
        pipe_target = os.readlink(f'/proc/self/fd/{w}')
        p = run_process(spawn, _targets.dump_fds, str(out))
    finally:
        for fd in (high, r, w):
            os.close(fd)
    assert p.exitcode == 0
    fds = {int(fd): target for fd, target in json.loads(out.read_text()).items()}
    assert {0, 1, 2} <= set(fds)
    assert high not in fds
    assert pipe_target not in fds.values(), fds
    # 0-2, the parent sentinel, the devnull stdin, and what this process shares when it runs them: stdlib's resource
    # tracker, procstart's, and the fork server (its alive pipe, and the child's pidfd on it).
    assert len(fds) <= 9, fds


# -- 7. set_executable -------------------------------------------------------------------------------------------------

_SET_EXECUTABLE = """
import errno, pathlib
ctx = mp.get_context('spawn')
_targets.start_helpers(ctx)
before = sorted(_targets.open_fds().items())
helpers = {pid for pid, _ in _targets.child_pids()}  # long-lived helpers (a resource tracker): by pid, their state changes
missing = os.path.join(sys.argv[1], 'no-such-python')
res = {}
for key, exe in [('missing', missing), ('missing_bytes', os.fsencode(missing)),
                 ('not_executable', pathlib.Path(sys.argv[2]))]:
    mp.set_executable(exe)
    p = ctx.Process(target=_targets.noop)
    out = []
    for _ in range(2):
        try:
            p.start()
        except OSError as e:
            out.append([type(e).__name__, errno.errorcode.get(e.errno)])
        else:
            p.join()
            out.append(['started', p.exitcode])
            break
    res[key] = [out, repr(p).endswith(' initial>'), p.exitcode, p.pid, len(mp.active_children())]
res['fds_unchanged'] = sorted(_targets.open_fds().items()) == before
res['children'] = [c for c in _targets.child_pids() if c[0] not in helpers]
mp.set_executable(sys.executable)
p = ctx.Process(target=_targets.noop)
p.start()
p.join()
res['restored'] = p.exitcode
print(json.dumps(res))
"""


@skip_on_stdlib('start() succeeds and the child exits with 255 (exec failure is not reported to the parent)')
def test_set_executable_failures_raise_in_parent(run_py, tmp_path):
    # str/bytes/Path of sys.executable: test_context.py::test_set_executable (for every start method)
    not_executable = tmp_path / 'not-executable'
    not_executable.write_text('#!/bin/sh\nexit 0\n')
    not_executable.chmod(0o644)
    res = last_json(run_py(_SET_EXECUTABLE, tmp_path, not_executable))
    assert res == {
        'missing': [[['FileNotFoundError', 'ENOENT']] * 2, True, None, None, 0],
        'missing_bytes': [[['FileNotFoundError', 'ENOENT']] * 2, True, None, None, 0],
        'not_executable': [[['PermissionError', 'EACCES']] * 2, True, None, None, 0],
        'fds_unchanged': True,
        'children': [],
        'restored': 0,
    }


# -- 8. interpreter flags propagate (CPython TestFlags) ----------------------------------------------------------------

_FLAGS_SOURCE = """\
import sys

sys.path.extend(p for p in {paths!r} if p not in sys.path)  # -E/-I ignore PYTHONPATH
import json

import _targets
import {modname} as mp

if __name__ == '__main__':
    p = mp.get_context('spawn').Process(target=_targets.dump_flags, args=(sys.argv[1],))
    p.start()
    p.join()
    print(json.dumps({{'exitcode': p.exitcode, 'flags': list(sys.flags)}}))
"""


@pytest.mark.parametrize(
    'flags, expected',
    [
        (['-O'], {'optimize': 1, 'ignore_environment': 0, 'no_user_site': 0, 'isolated': 0}),
        (['-OO', '-B'], {'optimize': 2, 'ignore_environment': 0, 'no_user_site': 0, 'isolated': 0}),
        (['-E', '-s'], {'optimize': 0, 'ignore_environment': 1, 'no_user_site': 1, 'isolated': 0}),
        (['-I'], {'optimize': 0, 'ignore_environment': 1, 'no_user_site': 1, 'isolated': 1}),
    ],
    ids=['O', 'OO_B', 'E_s', 'I'],
)
def test_interpreter_flags_propagate(modname, tmp_path, flags, expected):
    script = tmp_path / 'flags_main.py'
    script.write_text(_FLAGS_SOURCE.format(paths=child_path(), modname=modname))
    out = tmp_path / 'flags.json'
    parent = last_json(run_python(script, out, flags=flags, cwd=tmp_path))
    assert parent['exitcode'] == 0
    child = json.loads(out.read_text())
    assert {key: child[key] for key in expected} == expected
    assert child['flags'] == parent['flags']  # all of sys.flags, as CPython's TestFlags checks


# -- 9. the child does not import the stdlib multiprocessing package ---------------------------------------------------


@skip_on_stdlib('the stdlib spawn child imports multiprocessing (its bootstrap is multiprocessing.spawn)')
@pytest.mark.parametrize('stdlib_tracker', [False, True], ids=['plain', 'stdlib-tracker-running'])
def test_child_does_not_import_stdlib_multiprocessing(run_py, stdlib_tracker):
    # Also when the parent runs stdlib's resource tracker, which the child is handed (and would
    # use if it created stdlib semaphores) without importing stdlib for it.
    proc = run_py(
        f"""
        if {stdlib_tracker!r}:
            import multiprocessing
            keep = multiprocessing.get_context('spawn').Lock()
        p = mp.get_context('spawn').Process(target=_targets.exit_if_multiprocessing_imported)
        p.start()
        p.join()
        print(json.dumps(p.exitcode))
        """
    )
    assert last_json(proc) == 0, "'multiprocessing' in sys.modules of the spawn child"


# -- 10. exit reporting from a fresh interpreter -----------------------------------------------------------------------


def test_exit_reporting_default_names(run_py):
    proc = run_py(
        """
        ctx = mp.get_context('spawn')
        res = []
        for key, func, args in [('exception', _targets.raise_error, ()),
                                ('exit_msg', _targets.exit_with, ('goodbye from the child',))]:
            print('@@' + key, file=sys.stderr, flush=True)
            p = ctx.Process(target=func, args=args)
            p.start()
            p.join()
            res.append([p.name, p.exitcode])
        print('@@end', file=sys.stderr, flush=True)
        print(json.dumps(res))
        """
    )
    assert last_json(proc) == [['SpawnProcess-1', 1], ['SpawnProcess-2', 1]]
    err = stderr_parts(proc.stderr)
    assert err['exit_msg'] == 'goodbye from the child\n'
    tb = err['exception']
    assert tb.startswith('Process SpawnProcess-1:\nTraceback (most recent call last):\n'), tb
    assert '_targets.py", line' in tb
    assert ', in raise_error\n' in tb
    assert tb.endswith('\nRuntimeError: kaboom\n'), tb


# -- payload fidelity: whatever path the payload takes, the child gets what pickle would give ---------------


def _describe_in_child(spawn, tmp_path, *args, **kwargs):
    # Reported through a file named by a str: with only plain data in the payload, procstart sends
    # it without pickle, and that path is the one under test.
    path = str(tmp_path / 'described.json')
    p = run_process(spawn, _targets.describe_args_to_file, path, args, kwargs)
    assert p.exitcode == 0
    with open(path) as f:
        return json.load(f)


def test_plain_arguments_round_trip(spawn, tmp_path):
    args = (
        None,
        True,
        0,
        -(2**100),
        1.5,
        -0.0,
        float('inf'),
        2j,
        'ü\x00',
        b'\x00\xff',
        (1, (2, [3, {'k': (4,)}])),
        [],
        {1: 'a', 'b': [None]},
    )
    kwargs = {'flag': False, 'data': {'nested': [1, 2, (3,)]}}
    info = _describe_in_child(spawn, tmp_path, *args, **kwargs)
    assert info['repr'] == repr((args, kwargs))
    assert info['types'] == [type(a).__name__ for a in args] + ['bool', 'dict']


def test_argument_types_and_identity_are_kept(spawn, tmp_path):
    shared = [1, 2]
    info = _describe_in_child(spawn, tmp_path, shared, shared)
    assert info['same_0_1'] is True  # pickle keeps one list for both arguments
    info = _describe_in_child(spawn, tmp_path, _targets.TaggedStr('x'), True, 1, float('nan'))
    assert info['types'] == ['TaggedStr', 'bool', 'int', 'float']
    assert info['nan_is_nan'] is True


def test_by_reference_arguments(spawn, tmp_path):
    # Functions, builtins and classes travel by name, instances by pickle; all arrive.
    info = _describe_in_child(spawn, tmp_path, _targets.noop, os.getpid, _targets.TaggedStr)
    assert info['types'] == ['function', 'builtin_function_or_method', 'type']
    info = _describe_in_child(spawn, tmp_path, _targets.CustomReduceProcessHolder(7))
    assert info['types'] == ['CustomReduceProcessHolder']


@skip_on_stdlib('procstart sends plain payloads marshalled, without pickle')
def test_payload_encoding_choice(mp, spawn):
    from procstart import popen_spawn, reduction

    def encoding(*args):
        p = spawn.Process(target=_targets.describe_args_to_file, args=args)
        segments, fds, refs = popen_spawn.payload(p)
        # Only a pickled payload can reference what must outlive start() (plain values hold no resource).
        assert (refs is None) == (segments[0] == b'M')
        return segments[0], fds

    from multiprocessing import resource_tracker

    # Shared with the child when this process runs them: stdlib's tracker, procstart's tracker (started for the
    # first spawn start) and fork server.
    tracker_fd = resource_tracker._resource_tracker._fd
    server = mp._procstart._forkserver_info()
    from procstart import resource_tracker as procstart_tracker

    helpers = [fd for fd in (tracker_fd, procstart_tracker.getfd(), server and server[2]) if fd is not None]
    assert encoding('path', (1, 'a', [2.0]), {'k': None}) == (b'M', helpers)
    assert encoding('path', (bytearray(b'ab'), [bytearray()]), {})[0] == b'M'
    for shared in ([], bytearray(b'ab')):
        assert encoding('path', (shared, shared), {})[0] == b'S'
    assert encoding('path', (_targets.TaggedStr('x'),), {})[0] == b'S'
    # Strings past marshal's budget, in one or in many, go to the pickle stream.
    budget = reduction.MARSHAL_BUDGET
    assert encoding('path', (b'x' * (budget // 2),), {})[0] == b'M'
    assert encoding('path', (b'x' * (budget + 1),), {})[0] == b'S'
    assert encoding('path', (bytearray(budget // 2), b'x' * (budget // 2 + 1)), {})[0] == b'S'
    assert encoding('path', (['x' * 1024] * (budget // 1024 + 1),), {})[0] == b'S'
    local = lambda: 0
    with pytest.raises(Exception) as info:
        encoding('path', (local,), {})  # left to pickle, which refuses it as CPython does
    original = _cpython_pickling_error(local)
    assert (type(info.value), str(info.value)) == (type(original), str(original))
    r, w = multiprocessing.get_context('spawn').Pipe()
    try:
        data, fds = encoding('path', (w,), {})
        assert data == b'S' and fds == [*helpers, w.fileno()]
    finally:
        r.close()
        w.close()


def test_child_shares_the_stdlib_resource_tracker(spawn, tmp_path):
    # As CPython: a spawn child registers its stdlib semaphores with the parent's tracker
    # instead of starting one of its own.
    keep = multiprocessing.get_context('spawn').Lock()  # makes this process run stdlib's tracker
    path = str(tmp_path / 'tracker.json')
    p = run_process(spawn, _targets.stdlib_tracker_state, path)
    assert p.exitcode == 0
    with open(path) as f:
        assert json.load(f) == {'inherited_fd': True, 'own_tracker_pid': None}
    del keep


@skip_on_stdlib('stdlib multiprocessing is always importable; procstart may be on a path set at run time')
def test_child_finds_procstart_on_a_runtime_path(mp):
    # -I ignores PYTHONPATH and user site: the parent finds procstart only through sys.path.insert,
    # and so must its spawn children.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mp.__file__)))
    code = (
        f'import sys; sys.path.insert(0, {package_parent!r}); sys.path.insert(0, {TESTS_DIR!r})\n'
        'import procstart, _targets\n'
        "p = procstart.get_context('spawn').Process(target=_targets.exit_with, args=(5,))\n"
        'p.start(); p.join(30); print(p.exitcode)\n'
    )
    proc = run_python('-c', code, flags=['-I'], check=False)
    assert proc.stdout.strip() == '5', proc.stderr


def test_process_supports_weak_references(mp, spawn):
    import weakref

    for cls in (mp.Process, spawn.Process):
        p = cls(target=_targets.noop)
        ref = weakref.ref(p)
        del p
        assert ref() is None
