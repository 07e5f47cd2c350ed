"""Binds CPython's own ``test._test_multiprocessing`` to procstart (see test_cpython_processes.py for the why).

The target is procstart; with ``PROCSTART_TEST_TARGET=stdlib`` (the project's switch for the reference run) it is
stdlib ``multiprocessing`` itself, through the very same harness -- a test failing only against procstart is then a
procstart difference, not a harness one.

Importing this module *installs* the binding in the running interpreter -- the pytest process, and every spawned
child, since a child unpickling one of the generated test classes (or a wrapper below) imports it first:

* the global ``multiprocessing`` of ``test._test_multiprocessing`` becomes :data:`facade`, a module object that
  answers the process-start API (:data:`PROCESS_START_API`) from procstart and everything else (Pipe, Queue, Event,
  Lock, Pool, Manager, ``connection``, ``queues``, ``process`` ...) from stdlib ``multiprocessing``;
* its ``_UpperCaser`` (a ``multiprocessing.Process`` subclass made when the module was imported) is replaced by
  :class:`ProcstartUpperCaser`, the same class body on ``procstart.Process``;
* its module-level child targets that create processes themselves (:data:`CHILD_TARGETS`) are replaced by
  same-named wrappers here, so that a spawned child running them imports this module, and with it the binding,
  before running CPython's function.

Nothing else of CPython's module is changed. This module must not import pytest: it is also imported by fresh
interpreters started with ``-E -S`` (TestFlags), where only the paths added by :func:`bootstrap_code` exist.
"""

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.spawn
import os
import re
import tempfile
import types

import procstart
import test._test_multiprocessing as cpython_tests
from test.support import script_helper

TARGET_IS_STDLIB = os.environ.get('PROCSTART_TEST_TARGET', 'procstart') == 'stdlib'
# The module whose process-start API the tests exercise.
target = multiprocessing if TARGET_IS_STDLIB else procstart

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))
# The directory procstart is imported from (the package's parent): a fresh interpreter started with -S needs it.
PROCSTART_PARENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(procstart.__file__)))

# What procstart answers; every other attribute of ``multiprocessing`` is stdlib's.
PROCESS_START_API = (
    'Process',
    'current_process',
    'parent_process',
    'active_children',
    'get_context',
    'get_start_method',
    'set_start_method',
    'get_all_start_methods',
    'set_executable',
    'set_forkserver_preload',
    'cpu_count',
    'freeze_support',
)

# Upper bound for a program run in a fresh interpreter that would otherwise wait for ever (normally < 2 s).
CHILD_PROGRAM_TIMEOUT = 30

# Module-level functions of CPython's tests that a child runs and that start processes themselves.
CHILD_TARGETS = ('_test_process', 'pool_in_process')


class _Facade(types.ModuleType):
    """``multiprocessing`` as seen by CPython's test bodies: the target's process-start API, stdlib for the rest."""

    def __getattr__(self, name):
        return getattr(multiprocessing, name)

    def __dir__(self):
        return sorted(set(dir(multiprocessing)) | set(PROCESS_START_API))


facade = _Facade('multiprocessing', f'{target.__name__} process-start API over stdlib multiprocessing (compat tests)')
for _name in PROCESS_START_API:
    setattr(facade, _name, getattr(target, _name))


def _on_target(cls, global_name):
    """``cls`` (a stdlib ``multiprocessing.Process`` subclass) rebuilt on the target's ``Process``, picklable by
    reference as ``<this module>.<global_name>``."""
    namespace = {k: v for k, v in vars(cls).items() if k not in ('__dict__', '__weakref__')}
    namespace.update(__module__=__name__, __qualname__=global_name)
    return type(cls.__name__, (target.Process,), namespace)


_ORIGINAL = {}


def _test_process():
    """CPython's ``_test_process`` (run in a child: starts a grandchild with a Queue)."""
    return _ORIGINAL['_test_process']()


def pool_in_process():
    """CPython's ``pool_in_process`` (run in a child: starts a Pool)."""
    return _ORIGINAL['pool_in_process']()


def install():
    """Install the binding in ``test._test_multiprocessing`` (idempotent)."""
    if cpython_tests.multiprocessing is facade:
        return
    for name in CHILD_TARGETS:
        _ORIGINAL[name] = getattr(cpython_tests, name)
        setattr(cpython_tests, name, globals()[name])
    cpython_tests._UpperCaser = ProcstartUpperCaser
    cpython_tests.multiprocessing = facade


ProcstartUpperCaser = _on_target(cpython_tests._UpperCaser, 'ProcstartUpperCaser')
install()


# -- start methods -------------------------------------------------------------------------------------------------


def activate(method):
    """Make ``method`` the default start method of procstart *and* stdlib (as CPython's ``setUpModule`` does for
    stdlib): CPython's test bodies start processes with the default ``Process`` and make IPC objects with the
    default context's factories. Returns the state for :func:`restore`."""
    saved = (
        procstart.get_start_method(allow_none=True),
        multiprocessing.get_start_method(allow_none=True),
        procstart._procstart.get_executable(),
        multiprocessing.spawn.get_executable(),
    )
    procstart.set_start_method(method, force=True)
    multiprocessing.set_start_method(method, force=True)
    return saved


def restore(saved):
    """Undo :func:`activate`, and any ``set_executable`` since (test_set_executable leaves its last path)."""
    ps_method, std_method, ps_executable, std_executable = saved
    procstart.set_start_method(ps_method, force=True)
    multiprocessing.set_start_method(std_method, force=True)
    procstart.set_executable(ps_executable)
    multiprocessing.set_executable(std_executable)


# -- programs run in fresh interpreters ----------------------------------------------------------------------------


def sys_path_code():
    """A line of Python that puts procstart (the copy under test, not one installed elsewhere) and tests/compat first
    on ``sys.path`` of a fresh interpreter, even one started with -I or -E -S."""
    return f'import sys; sys.path[:0] = {[PROCSTART_PARENT_DIR, COMPAT_DIR]!r}'


def bootstrap_code(method):
    """Python statements that install this binding in a fresh interpreter (even one started with -E -S) and make
    ``method`` the default start method there."""
    return f'{sys_path_code()}; import _compat_binding; _compat_binding.activate({method!r}); '


_IMPORT_REWRITES = (
    # import multiprocessing as mp  ->  import procstart as mp
    (re.compile(r'^([ \t]*)import multiprocessing as (\w+)[ \t]*$', re.MULTILINE), r'\1import procstart as \2'),
    # import multiprocessing, sys  ->  import procstart as multiprocessing, sys
    (
        re.compile(r'^([ \t]*)import multiprocessing[ \t]*(,|$)', re.MULTILINE),
        r'\1import procstart as multiprocessing\2',
    ),
    # import multiprocessing.spawn  ->  import procstart.spawn
    (re.compile(r'^([ \t]*)import multiprocessing\.(\w+)', re.MULTILINE), r'\1import procstart.\2'),
    # from multiprocessing import get_context  ->  from procstart import get_context
    (re.compile(r'^([ \t]*)from multiprocessing import ', re.MULTILINE), r'\1from procstart import '),
)


def rebind_source(source):
    """``source`` with its ``import multiprocessing`` and ``from multiprocessing import`` statements importing
    procstart instead (unchanged when the target is stdlib). Refuses a program in which nothing was rewritten, or
    that imports from ``multiprocessing`` in a form left as it was."""
    if TARGET_IS_STDLIB:
        return source
    count = 0
    for pattern, replacement in _IMPORT_REWRITES:
        source, n = pattern.subn(replacement, source)
        count += n
    if not count or re.search(r'^[ \t]*(from|import)[ \t]+multiprocessing\b', source, re.MULTILINE):
        raise AssertionError(f'compat harness: cannot rebind this program to procstart:\n{source}')
    return source


@contextlib.contextmanager
def scripts_on_procstart(rewrite=rebind_source, namespace=script_helper):
    """While active, ``assert_python_ok/_failure`` as found in ``namespace`` (``script_helper``, or a test module
    that imported them by name) run their program (``-c`` code or a script file) passed through ``rewrite``: by
    default, with its ``import multiprocessing`` statements rebound to procstart. A script file is rewritten into a
    temporary directory under the same base name."""
    with tempfile.TemporaryDirectory(prefix='procstart-compat-') as tmp:

        def rebind_args(args):
            args = list(args)
            if args[:1] == ['-c']:
                args[1] = rewrite(args[1])
            elif args and os.path.isfile(args[0]):
                with open(args[0], encoding='utf-8') as f:
                    source = f.read()
                path = os.path.join(tmp, os.path.basename(args[0]))
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(rewrite(source))
                args[0] = path
            else:
                raise AssertionError(f'compat harness: unexpected script_helper arguments {args!r}')
            return args

        originals = {
            name: getattr(namespace, name)
            for name in ('assert_python_ok', 'assert_python_failure')
            if hasattr(namespace, name)
        }

        def wrap(original):
            def wrapper(*args, **env_vars):
                return original(*rebind_args(args), **env_vars)

            return wrapper

        for name, original in originals.items():
            setattr(namespace, name, wrap(original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(namespace, name, original)


@contextlib.contextmanager
def subprocess_on_procstart(method):
    """While active, ``subprocess.check_output`` as called by CPython's test bodies runs ``-c`` programs with
    :func:`bootstrap_code` prepended (the binding and ``method``, in the fresh interpreter)."""
    real = cpython_tests.subprocess

    class _Subprocess(types.ModuleType):
        def __getattr__(self, name):
            return getattr(real, name)

    def check_output(args, *rest, **kwargs):
        args = list(args)
        i = args.index('-c')
        args[i + 1] = bootstrap_code(method) + args[i + 1]
        # The program waits for its child without a timeout; a child that dies early would hang the test until
        # pytest-timeout ends the session's budget. A bound turns that into a quick failure (TimeoutExpired).
        kwargs.setdefault('timeout', CHILD_PROGRAM_TIMEOUT)
        return real.check_output(args, *rest, **kwargs)

    proxy = _Subprocess('subprocess')
    proxy.check_output = check_output
    cpython_tests.subprocess = proxy
    try:
        yield
    finally:
        cpython_tests.subprocess = real


@contextlib.contextmanager
def module_is_target():
    """While active, the global ``multiprocessing`` of CPython's tests is the target module itself (for tests that
    inspect the module object rather than call it)."""
    cpython_tests.multiprocessing = target
    try:
        yield
    finally:
        cpython_tests.multiprocessing = facade


@contextlib.contextmanager
def forkserver_is_target():
    """While active, ``multiprocessing.forkserver._forkserver`` (which ``check_forkserver_death`` imports to find and
    kill the server, and 3.14's authentication tests to find its address and ``_forkserver_authkey``) is the target's
    fork server: procstart's, whose children the test starts."""
    if TARGET_IS_STDLIB:
        yield
        return
    import multiprocessing.forkserver

    import procstart.forkserver

    real = multiprocessing.forkserver._forkserver
    multiprocessing.forkserver._forkserver = procstart.forkserver._forkserver
    try:
        yield
    finally:
        multiprocessing.forkserver._forkserver = real
