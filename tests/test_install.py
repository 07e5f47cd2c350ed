"""``procstart.install()``/``uninstall()`` and ``python -m procstart run``: stdlib ``multiprocessing``, and programs
that use only it, starting their processes through procstart. procstart extensions: the stdlib run skips them.

Whether procstart started a process is read in the process itself, through stdlib only:
``multiprocessing.process.parent_process()`` is the parent object of whichever library bootstrapped it
(``procstart.process._ParentProcess`` or stdlib's), and ``multiprocessing.Process`` is procstart's where stdlib is
redirected (installed) there too.
"""

import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.pool
import multiprocessing.resource_tracker
import os
import signal
import textwrap

import pytest
from _support import CHILD_TIMEOUT, run_python, skip_on_stdlib, wait_gone

pytestmark = skip_on_stdlib('install() and `python -m procstart run` are procstart extensions')

# (parent process's module, multiprocessing.Process's module): procstart's Process is procstart.process.Process.
BY_PROCSTART = ['procstart.process', 'procstart.process']
STDLIB_PROCESS_CLASSES = (
    multiprocessing.context.Process,
    multiprocessing.context.ForkProcess,
    multiprocessing.context.SpawnProcess,
    multiprocessing.context.ForkServerProcess,
)

# A program that uses stdlib multiprocessing only: `program.py OUT_DIR EXIT_CODE` writes OUT_DIR/report.json.
PROGRAM = '''\
import concurrent.futures
import json
import multiprocessing
import os
import signal
import sys


def origin(tag):
    """Who bootstrapped this process, whether stdlib is redirected here, and the name of its main module."""
    parent = type(multiprocessing.process.parent_process()).__module__
    return [tag, parent, multiprocessing.Process.__module__, sys.modules['__main__'].__name__]


def square(x):
    return [x * x, origin('pool')]


def increment(x):
    return [x + 1, origin('executor')]


def put_origin(q, tag):
    q.put(origin(tag))


def start_grandchild(q):
    put_origin(q, 'process')
    grandchild = multiprocessing.Process(target=put_origin, args=(q, 'grandchild'))
    grandchild.start()
    grandchild.join()


def fill(d, lst):
    d['origin'] = origin('manager client')
    lst.extend(range(3))


if __name__ == '__main__':
    out_dir, code = sys.argv[1], int(sys.argv[2])
    report = {
        'argv': sys.argv,
        'path0': sys.path[0],
        'file': __file__,
        'method': multiprocessing.get_start_method(),
        'main': origin('main'),
    }
    with multiprocessing.Pool(2) as pool:
        report['pool'] = pool.map(square, range(4))
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=start_grandchild, args=(q,))
    p.start()
    report['process'] = [q.get(timeout=60), q.get(timeout=60)]
    p.join()
    report['exitcode'] = p.exitcode
    with multiprocessing.Manager() as manager:
        d, lst = manager.dict(), manager.list()
        p = multiprocessing.Process(target=fill, args=(d, lst))
        p.start()
        p.join()
        report['manager'] = [dict(d), list(lst), type(manager._process).__module__]
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        report['executor'] = list(executor.map(increment, range(3)))
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
        json.dump(report, f)
    sys.exit(code)
'''


def python(*args, cwd, stdin=None):
    """``python args...`` in a fresh interpreter, in ``cwd``, reading ``stdin`` -> CompletedProcess (text), whatever
    its exit status."""
    return run_python(*args, cwd=cwd, stdin=stdin, timeout=120, check=False)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- python -m procstart run ---------------------------------------------------------------------------------------


def test_run_stdlib_program(tmp_path, start_method):
    _write(tmp_path / 'prog' / 'program.py', PROGRAM)
    (tmp_path / 'cwd').mkdir()
    out = tmp_path / 'out'
    out.mkdir()
    script = os.path.join('..', 'prog', 'program.py')
    proc = python('-m', 'procstart', 'run', '--start-method', start_method, script, out, 3, cwd=tmp_path / 'cwd')
    assert proc.returncode == 3, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    report = json.loads((out / 'report.json').read_text())
    # As `python ../prog/program.py OUT 3` gives them.
    assert report['argv'] == [script, str(out), '3']
    assert report['path0'] == str((tmp_path / 'prog').resolve())
    assert report['file'] == os.path.join(str(tmp_path / 'cwd'), script)
    assert report['method'] == start_method
    assert report['main'] == ['main', 'builtins', 'procstart.process', '__main__']
    # A spawn or forkserver child re-imports the script as __mp_main__; a fork child has the parent's __main__.
    main = '__main__' if start_method == 'fork' else '__mp_main__'
    assert report['pool'] == [[x * x, ['pool', *BY_PROCSTART, main]] for x in range(4)]
    assert report['process'] == [['process', *BY_PROCSTART, main], ['grandchild', *BY_PROCSTART, main]]
    assert report['exitcode'] == 0
    assert report['manager'] == [{'origin': ['manager client', *BY_PROCSTART, main]}, [0, 1, 2], 'procstart.context']
    assert report['executor'] == [[x + 1, ['executor', *BY_PROCSTART, main]] for x in range(3)]


def test_start_method_option_is_a_default_the_program_may_override(tmp_path):
    program = _write(
        tmp_path / 'program.py',
        """
        import multiprocessing

        if __name__ == '__main__':
            before = multiprocessing.get_start_method(allow_none=True)
            multiprocessing.set_start_method('forkserver')  # as many programs do: no "already set"
            p = multiprocessing.Process(target=print, args=('child',))
            p.start()
            p.join()
            print(before, multiprocessing.get_start_method(), p._popen.method, p.exitcode)
        """,
    )
    proc = python('-m', 'procstart', 'run', '--start-method', 'spawn', program, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ['child', 'None', 'forkserver', 'forkserver', '0']


def test_program_under_plain_python_is_stdlibs(tmp_path):
    """The control for the test above: what the same program reports when stdlib starts its processes."""
    program = _write(tmp_path / 'program.py', PROGRAM)
    proc = python(program, tmp_path, 0, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / 'report.json').read_text())
    by_stdlib = ['multiprocessing.process', 'multiprocessing.context']
    assert {tuple(origin[1:3]) for _, origin in report['pool']} == {tuple(by_stdlib)}
    assert [origin[1:3] for origin in report['process']] == [by_stdlib, by_stdlib]
    assert report['manager'][2] == 'multiprocessing.context'


def test_run_module(tmp_path):
    """`run -m`: as `python -m`, the module's file as argv[0], the working directory first on sys.path, and spawn
    children re-import the module by name."""
    _write(tmp_path / 'pkg' / '__init__.py', '')
    _write(
        tmp_path / 'pkg' / 'main.py',
        """\
        import multiprocessing
        import sys


        def report(q):
            main = sys.modules['__main__']
            q.put([main.__name__, main.__spec__.name, type(multiprocessing.process.parent_process()).__module__])


        if __name__ == '__main__':
            ctx = multiprocessing.get_context('spawn')
            q = ctx.Queue()
            p = ctx.Process(target=report, args=(q,))
            p.start()
            print(sys.argv, sys.path[0], __spec__.name, q.get(timeout=60))
            p.join()
        """,
    )
    proc = python('-m', 'procstart', 'run', '-m', 'pkg.main', 'a', '--start-method', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    argv = [str(tmp_path / 'pkg' / 'main.py'), 'a', '--start-method']
    assert proc.stdout == f"{argv} {tmp_path} pkg.main ['__mp_main__', 'pkg.main', 'procstart.process']\n"


@pytest.mark.parametrize(
    'source',
    [
        'def f():\n    raise ValueError("boom")\n\nf()\n',
        'x = (\n',
        'import sys\nsys.exit("a message")\n',
        'import sys\nprint("out")\nsys.exit(7)\n',
        'raise KeyboardInterrupt\n',
    ],
    ids=['exception', 'syntax-error', 'exit-message', 'exit-code', 'keyboard-interrupt'],
)
@pytest.mark.parametrize('read_from', ['file', 'stdin'])
def test_run_ends_as_python_does(tmp_path, source, read_from):
    if read_from == 'stdin':
        program, stdin = '-', source
    else:
        program, stdin = _write(tmp_path / 'script.py', source), None
    ours = python('-m', 'procstart', 'run', program, cwd=tmp_path, stdin=stdin)
    theirs = python(program, cwd=tmp_path, stdin=stdin)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)


_STDIN_PROGRAM = """
import multiprocessing, os, sys, __main__
if __name__ == '__main__':
    print(sys.argv, repr(sys.path[0]), __main__.__file__, __main__.__spec__)
    for method in ('spawn', 'forkserver'):
        p = multiprocessing.get_context(method).Process(target=os.getpid)
        p.start()
        p.join()
        print(method, p.exitcode, type(p).__module__)
"""


def test_run_program_read_from_stdin(tmp_path):
    # `python -`, and its processes procstart's, which start where stdlib's fail to open '<stdin>'.
    ours = python('-m', 'procstart', 'run', '-', 'a', cwd=tmp_path, stdin=_STDIN_PROGRAM)
    theirs = python('-', 'a', cwd=tmp_path, stdin=_STDIN_PROGRAM)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.splitlines()[0] == theirs.stdout.splitlines()[0] == "['-', 'a'] '' <stdin> None"
    assert ours.stdout.splitlines()[1:] == ['spawn 0 procstart.context', 'forkserver 0 procstart.context']
    # Stdlib's children exit 1 (3.14's fork server fails to start them at all).
    assert f"No such file or directory: '{tmp_path / '<stdin>'}'" in theirs.stderr
    assert 'spawn 1 multiprocessing.context' in theirs.stdout


_MAIN_SOURCE = """
import multiprocessing, sys
print(__name__, __spec__ and __spec__.name, sys.argv[1:], sys.path[0] == sys.argv[0])
print(type(multiprocessing.get_context('fork').Process(target=print)).__module__)
"""


def _program_as(kind, tmp_path):
    """The program `_MAIN_SOURCE` as Python can run it: a directory or zip archive with `__main__.py`, a compiled
    file, or an empty directory (which Python refuses)."""
    import py_compile
    import zipfile

    if kind == 'directory':
        _write(tmp_path / 'app' / '__main__.py', _MAIN_SOURCE)
        return 'app'
    if kind == 'zip':
        with zipfile.ZipFile(tmp_path / 'app.zip', 'w') as archive:
            archive.writestr('__main__.py', _MAIN_SOURCE)
        return 'app.zip'
    if kind == 'compiled':
        source = _write(tmp_path / 'app.py', _MAIN_SOURCE)
        py_compile.compile(str(source), cfile=str(tmp_path / 'app.pyc'), doraise=True)
        source.unlink()
        return 'app.pyc'
    (tmp_path / 'empty').mkdir()
    return 'empty'


@pytest.mark.parametrize('kind', ['directory', 'zip', 'compiled', 'no-main'])
def test_run_what_python_runs(tmp_path, kind):
    # Python runs a directory or zip archive by its __main__ module (first on sys.path) and a compiled file by its
    # code; `run` does the same, the program's processes being procstart's.
    program = _program_as(kind, tmp_path)
    ours = python('-m', 'procstart', 'run', program, 'arg', cwd=tmp_path)
    theirs = python(program, 'arg', cwd=tmp_path)
    assert (ours.returncode, ours.stdout.splitlines()[:1]) == (theirs.returncode, theirs.stdout.splitlines()[:1])
    if kind == 'no-main':
        assert ours.returncode == 1
        assert ours.stderr.split(': ', 1)[1] == theirs.stderr.split(': ', 1)[1]
    else:
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout.splitlines()[1] == 'procstart.context'
        assert theirs.stdout.splitlines()[1] == 'multiprocessing.context'


@pytest.mark.parametrize('args', [['missing.py'], ['-m', 'no_such_module']], ids=['missing-script', 'missing-module'])
def test_run_missing_program_as_python(tmp_path, args):
    ours = python('-m', 'procstart', 'run', *args, cwd=tmp_path)
    theirs = python(*args, cwd=tmp_path)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert ours.returncode != 0


@pytest.mark.parametrize(
    'args, error',
    [
        ([], 'one of the arguments -m script is required'),
        (['-m'], 'argument -m: expected a module name'),
        (['--start-method', 'bogus', 'script.py'], "argument --start-method: invalid choice: 'bogus'"),
        (['--bogus', 'script.py'], 'unrecognized arguments: --bogus'),
    ],
    ids=['nothing', 'no-module', 'bad-method', 'bad-option'],
)
def test_run_usage_errors(tmp_path, args, error):
    proc = python('-m', 'procstart', 'run', *args, cwd=tmp_path)
    assert proc.returncode == 2
    usage, message = proc.stderr.splitlines()[0], proc.stderr.splitlines()[-1]
    assert usage.startswith('usage: python -m procstart run [-h] [--start-method METHOD] (script | -m module)')
    assert message.startswith(f'python -m procstart run: error: {error}')


def test_run_help(tmp_path):
    proc = python('-m', 'procstart', 'run', '--help', cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith('usage: python -m procstart run')
    assert '--start-method METHOD' in proc.stdout


# -- install() and uninstall() in a program ------------------------------------------------------------------------


def _stdlib_state():
    """What install() replaces, as (label, object) pairs, to compare by identity."""
    default = multiprocessing.context._default_context
    return [
        *((f'multiprocessing.{name}', vars(multiprocessing)[name]) for name in multiprocessing.__all__),
        ('_concrete_contexts', multiprocessing.context._concrete_contexts),
        ('type(_default_context)', type(default)),
        *((f'_default_context.{name}', value) for name, value in vars(default).items()),
        *((f'{cls.__name__}._Popen', vars(cls)['_Popen']) for cls in STDLIB_PROCESS_CLASSES),
        *((f'resource_tracker.{name}', getattr(multiprocessing.resource_tracker, name)) for name in TRACKER_NAMES),
        *((f'forkserver.{name}', getattr(multiprocessing.forkserver, name)) for name in FORKSERVER_NAMES),
    ]


TRACKER_NAMES = ('_resource_tracker', 'ensure_running', 'register', 'unregister', 'getfd')
FORKSERVER_NAMES = ('_forkserver', 'ensure_running', 'set_forkserver_preload')


def test_install_uninstall_round_trip(mp):
    before = _stdlib_state()
    mp.install()
    try:
        mp.install()
        assert multiprocessing.Process is mp.Process
        assert multiprocessing.get_context is mp.get_context
        assert multiprocessing.set_start_method is mp.set_start_method
        default = multiprocessing.context._default_context
        for method in mp.get_all_start_methods():
            assert multiprocessing.get_context(method) is mp.get_context(method)
            # stdlib's own methods, as `multiprocessing.pool` and libraries bound them at import.
            assert default.get_context(method) is mp.get_context(method)
            assert multiprocessing.context._concrete_contexts[method].get_context(method) is mp.get_context(method)
        assert default.get_start_method(allow_none=True) == mp.get_start_method(allow_none=True)
        assert default.Process is mp.Process
        from procstart import resource_tracker

        for name in TRACKER_NAMES:
            assert getattr(multiprocessing.resource_tracker, name) is getattr(resource_tracker, name)
        from procstart import forkserver

        for name in FORKSERVER_NAMES:
            assert getattr(multiprocessing.forkserver, name) is getattr(forkserver, name)
    finally:
        mp.uninstall()
    mp.uninstall()
    after = _stdlib_state()
    assert [label for label, _ in after] == [label for label, _ in before]
    assert [label for (label, a), (_, b) in zip(before, after, strict=True) if a is not b] == []
    assert multiprocessing.Process is multiprocessing.context.Process


# A library imported before install(): it subclassed stdlib's Process and kept stdlib's functions and a context.
LIBRARY = """\
import multiprocessing
import sys
from multiprocessing import get_context, get_start_method, set_start_method

SPAWN = multiprocessing.get_context('spawn')


def origin(tag):
    current = multiprocessing.current_process()
    parent = type(multiprocessing.process.parent_process()).__module__
    return [tag, type(current).__name__, parent, multiprocessing.Process.__module__]


def put_origin(q, tag):
    q.put(origin(tag))


class Worker(multiprocessing.Process):
    def __init__(self, q, go, code):
        super().__init__()
        self.q, self.go, self.code = q, go, code

    def run(self):
        self.q.put(origin('worker') + [multiprocessing.current_process() is self])
        self.go.wait(60)
        sys.exit(self.code)
"""


def test_stdlib_objects_from_before_install(run_py, tmp_path, start_method):
    _write(tmp_path / 'library.py', LIBRARY)
    out = run_py(
        f"""
        import multiprocessing, multiprocessing.pool
        sys.path.insert(0, {str(tmp_path)!r})
        import library

        report = {{}}
        multiprocessing.set_start_method({start_method!r})  # through stdlib, before install()
        mp.install()
        report['method'] = [mp.get_start_method(), library.get_start_method()]
        report['context'] = library.get_context() is mp.get_context({start_method!r})
        q, go = multiprocessing.Queue(), multiprocessing.Event()
        w = library.Worker(q, go, 5)
        w.start()
        report['worker'] = q.get(timeout=60)
        report['listed'] = multiprocessing.active_children() == [w] and mp.active_children() == []
        go.set()
        w.join()
        report['exitcode'] = w.exitcode
        sq = library.SPAWN.Queue()
        p = library.SPAWN.Process(target=library.put_origin, args=(sq, 'stdlib spawn context'))
        p.start()
        report['spawn'] = sq.get(timeout=60)
        p.join()
        with multiprocessing.pool.Pool(1) as pool:
            report['pool'] = [type(worker).__module__ for worker in pool._pool]
        library.set_start_method('spawn', force=True)
        report['forced'] = mp.get_start_method()

        mp.uninstall()
        w = library.Worker(q, go, 0)
        w.start()
        report['uninstalled'] = q.get(timeout=60)
        w.join()
        p = mp.get_context({start_method!r}).Process(target=library.put_origin, args=(q, 'procstart'))
        p.start()
        report['procstart child'] = q.get(timeout=60)
        p.join()
        print(json.dumps(report))
        """
    )
    report = json.loads(out.stdout)
    assert report['method'] == [start_method, start_method]
    assert report['context'] is True
    # Started by procstart, and in the child the Worker object itself is the current process, as under stdlib.
    assert report['worker'] == ['worker', 'Worker', *BY_PROCSTART, True]
    assert report['listed'] is True
    assert report['exitcode'] == 5
    assert report['spawn'] == ['stdlib spawn context', 'SpawnProcess', *BY_PROCSTART]
    assert report['pool'] == ['procstart.context']
    assert report['forced'] == 'spawn'
    assert report['uninstalled'] == ['worker', 'Worker', 'multiprocessing.process', 'multiprocessing.context', True]
    # procstart children of an uninstalled parent leave stdlib alone.
    assert report['procstart child'][2:] == ['procstart.process', 'multiprocessing.context']


_SHARED_MEMORY_LEAK = """
import multiprocessing
from multiprocessing import resource_tracker, shared_memory
mp.install()
assert resource_tracker._resource_tracker is mp.resource_tracker._resource_tracker


def leak(name):
    shared_memory.SharedMemory(name=name, create=True, size=16)
    os._exit(0)  # without unlinking it


if __name__ == '__main__':
    p = multiprocessing.get_context(sys.argv[1]).Process(target=leak, args=(sys.argv[2],))
    p.start()
    p.join()
    print(p.exitcode)
"""


def test_stdlib_shared_memory_registers_with_procstarts_tracker(run_py, tmp_path, start_method):
    # Under install(), stdlib's shared memory registers with the one tracker of the tree: what a child leaks is
    # unlinked when the tree has ended, and only one tracker runs.
    name = f'psm-install-{os.getpid()}-{start_method}'
    script = tmp_path / 'leak.py'
    script.write_text('import os, sys\nimport procstart as mp\n' + _SHARED_MEMORY_LEAK)
    proc = run_py(f'import runpy; runpy.run_path({str(script)!r}, run_name="__main__")', start_method, name)
    assert proc.stdout.split() == ['0']
    assert 'leaked shared_memory' in proc.stderr, proc.stderr
    assert not os.path.exists(f'/dev/shm/{name}')


# -- issue 15's guarantees reach programs that use only stdlib's names -------------------------------------------------


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
def test_inline_queue_under_install(run_py, method):
    # CPython's child fails in SemLock._rebuild when the parent drops the queue while the child still unpickles it;
    # under install() the queue lives until the child has it, whatever name the program started it by.
    out = run_py(f"""
        import gc
        import multiprocessing
        mp.install()
        ctx = multiprocessing.get_context({method!r})
        p = ctx.Process(target=_targets.use_queue, args=(_targets.SlowToLoad(0.5), ctx.Queue()))
        p.start()
        gc.collect()
        p.join()
        print(p.exitcode)
    """)
    assert out.stdout.split() == ['0'], out.stderr


@pytest.mark.parametrize('how', ['kill', 'terminate'])
def test_forkserver_tree_signalled_whole_under_install(run_py, how):
    # Three levels of forkserver processes started through stdlib's names: the fork server is the kernel parent of
    # all of them, and a tree signal still reaches the whole user's tree.
    out = run_py(f"""
        import multiprocessing
        mp.install()
        ctx = multiprocessing.get_context('forkserver')
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_targets.logical_tree, args=(w, ('forkserver', 'forkserver')))
        p.start()
        nodes = [r.recv() for _ in range(3)]
        p.{how}(tree=True)
        p.join()
        print(json.dumps([[pid for pid, _, _ in nodes], [parent for _, parent, _ in nodes], p.exitcode]))
    """)
    pids, parents, exitcode = json.loads(out.stdout.splitlines()[-1])
    assert parents[1:] == pids[:-1]
    assert exitcode == -(signal.SIGKILL if how == 'kill' else signal.SIGTERM)
    assert [pid for pid in pids if not wait_gone(pid, CHILD_TIMEOUT)] == []
