"""CPython's own Process-lifecycle tests (``test._test_multiprocessing``), run against procstart for fork, spawn and forkserver.

The tests are loaded at run time from the interpreter's ``test`` package -- nothing of CPython's is copied here -- and
bound to procstart the way CPython binds them to ``multiprocessing`` in ``test_multiprocessing_<method>``
(``install_tests_in_module_dict(globals(), method, only_type='processes')``):

* **Mixin tests** (``_TestProcess``, ``_TestSubclassingProcess``, ``_TestPollEintr``, ``_TestAtExit`` where the
  running CPython has it): ``<Method>_WithProcesses<Name>(base, mixin, TestCase)``, the mixin being CPython's
  ``ProcessesMixin`` with ``Process``, ``current_process``, ``parent_process``, ``active_children`` and
  ``set_executable`` taken from procstart (``Process`` is ``procstart.Process``, the default-context class, as
  CPython's mixin uses ``multiprocessing.Process``), and every other factory (``Pipe``, ``Queue``, ``Event``,
  ``Lock`` ...) from the *stdlib* context of the same start method: procstart children must work with stdlib IPC
  objects.
* **Module-level tests** (``TestStartMethod``, ``TestNoForkBomb``, ``TestCloseFds``, ``TestFlags``,
  ``TestStdinBadfiledescriptor``, ``TestTimeouts``, ``TestIgnoreEINTR``, ``TestWait``, ``TestNamedResource``,
  ``MiscTestCase``): ``<Method>_<Name>(base)``. Their bodies call the module global ``multiprocessing`` directly.

Each generated class, like CPython's ``setUpModule``, makes its method the default start method -- of procstart
*and* of stdlib, so that ``multiprocessing.Queue()`` in a test body is the stdlib queue of that method -- sets the
stdlib logger to CPython's test level, and restores all that (and procstart's executable) afterwards. Each test runs
in a fresh temporary working directory, as under CPython's regrtest (tests write ``os_helper.TESTFN``).

Rebinding the module globals (``_compat_binding``, imported by this module and so by every spawned child that
unpickles one of these classes): the global ``multiprocessing`` of ``test._test_multiprocessing`` is replaced by a
module object that serves procstart's process-start API (``Process``, ``current_process``, ``parent_process``,
``active_children``, ``get_context``, ``get_start_method``, ``set_start_method``, ``get_all_start_methods``,
``set_executable``, ``set_forkserver_preload``, ``cpu_count``, ``freeze_support``) and falls through to stdlib
``multiprocessing`` for everything else (``Pipe``, ``Queue``, ``Pool``, ``connection``, ``process._dangling`` ...).
``_UpperCaser`` (subclassed from stdlib's ``Process`` when CPython's module was imported) is replaced by the same
class body on ``procstart.Process``; ``_test_process`` and ``pool_in_process`` (child targets that start processes
themselves) by wrappers that make a spawned child install the binding before running CPython's function. The
binding is installed once, for the whole session; only CPython's test module sees it.

Tests that run a program in a fresh interpreter get that program rebound, for the duration of the test only:

* ``TestNoForkBomb``, ``TestNamedResource``, ``MiscTestCase.test_spawn_sys_executable_none_allows_import``: the
  script (CPython's ``mp_fork_bomb.py``, the test's own script file, the ``-c`` code) is run with its
  ``import multiprocessing`` statements importing procstart (a rewritten copy in a temporary directory);
* ``TestFlags``: the ``-E -S -O -c`` program gets a prefix that puts procstart and this directory on ``sys.path``,
  installs the binding and makes the class's method the default start method (CPython's program uses the
  interpreter's default, fork on Linux; here the grandchild is started with the method under test), and the
  program is bounded by a timeout (it waits for its child without one);
* ``_TestProcess.test_forkserver_sigint``/``_sigkill`` find the server to kill, and (3.14)
  ``test_forkserver_auth_is_enabled``/``test_forkserver_without_auth_fails`` the server to authenticate with and its
  ``_forkserver_authkey``, as ``multiprocessing.forkserver._forkserver``: procstart's server stands there for the test;
* ``MiscTestCase.test__all__`` sees the ``procstart`` module itself as ``multiprocessing`` (it inspects the module
  object: procstart's ``__all__`` must list exactly its public names).

Nothing is skipped by this harness: the skips seen in a run are CPython's own (forkserver-only tests,
``only_run_in_spawn_testsuite``, fd inflation "not appropriate for fork").

Children: mixin tests start processes with classmethods of the generated class, module-level ones with
classmethods or module functions of CPython's module; under spawn the child imports this module by name (it lives
in tests/compat, which the parent's ``sys.path`` -- passed to spawned children -- holds, see conftest.py).

``<Method>_CompatHarness`` checks the harness itself (the rebinding is in force in the parent and in a child).
``PROCSTART_TEST_TARGET=stdlib`` runs everything against stdlib ``multiprocessing`` through the same harness, the
reference run: whatever fails only against procstart is a procstart difference.
"""

import importlib.util
import multiprocessing
import sys
import unittest

import pytest

_VERSION = f'{sys.version_info[0]}.{sys.version_info[1]}'
_MISSING = (
    f"CPython's regression-test package (test._test_multiprocessing) is not installed for {sys.executable}: the "
    f'CPython compat tests need it. Install it, e.g. on Debian/Ubuntu: apt install libpython{_VERSION}-testsuite '
    '(pyenv and python.org builds include it).'
)

try:
    _SPEC = importlib.util.find_spec('test._test_multiprocessing')
except ImportError:
    _SPEC = None
if _SPEC is None:
    pytest.skip(_MISSING, allow_module_level=True)

try:
    import _compat_binding as binding
except unittest.SkipTest as exc:  # CPython's module skips itself (no _multiprocessing, broken sem_open, ASAN)
    pytest.skip(f'test._test_multiprocessing refuses to run here: {exc}', allow_module_level=True)

from test.support import os_helper

cpython_tests = binding.cpython_tests
target = binding.target  # procstart; stdlib multiprocessing for the reference run (PROCSTART_TEST_TARGET=stdlib)

METHODS = ('fork', 'spawn', 'forkserver')

# CPython's BaseTestCase subclasses (run with the processes mixin) and plain TestCase classes, as named in
# test._test_multiprocessing; names the running CPython lacks are listed in ABSENT (and in the session summary).
MIXIN_TESTS = ('_TestProcess', '_TestSubclassingProcess', '_TestPollEintr', '_TestAtExit')
MODULE_TESTS = (
    'TestStartMethod',
    'TestNoForkBomb',
    'TestCloseFds',
    'TestFlags',
    'TestStdinBadfiledescriptor',
    'TestTimeouts',
    'TestIgnoreEINTR',
    'TestWait',
    'TestNamedResource',
    'MiscTestCase',
)
ABSENT = tuple(name for name in MIXIN_TESTS + MODULE_TESTS if not hasattr(cpython_tests, name))

SUMMARY_TITLE = 'CPython test._test_multiprocessing'
SUMMARY_LABEL = 'compat'
SUMMARY_NOTES = [f'compat: not in CPython {sys.version.split()[0]}, not run: {", ".join(ABSENT)}'] if ABSENT else []

# ProcessesMixin attributes procstart provides; the mixin's other factories come from the stdlib context.
MIXIN_FROM_PROCSTART = ('Process', 'current_process', 'parent_process', 'active_children', 'set_executable')
# ProcessesMixin.set_executable is new in 3.11.
MIXIN_REQUIRED = MIXIN_FROM_PROCSTART if sys.version_info >= (3, 11) else MIXIN_FROM_PROCSTART[:-1]


# Per test (class, test) or class: a context manager factory taking the start method, active during the test.
ADAPTERS = {
    'TestNoForkBomb': lambda method: binding.scripts_on_procstart(),
    'TestNamedResource': lambda method: binding.scripts_on_procstart(),
    'TestFlags': binding.subprocess_on_procstart,
    ('MiscTestCase', 'test__all__'): lambda method: binding.module_is_target(),
    ('_TestProcess', 'test_forkserver_sigint'): lambda method: binding.forkserver_is_target(),
    ('_TestProcess', 'test_forkserver_sigkill'): lambda method: binding.forkserver_is_target(),
    ('_TestProcess', 'test_forkserver_auth_is_enabled'): lambda method: binding.forkserver_is_target(),
    ('_TestProcess', 'test_forkserver_without_auth_fails'): lambda method: binding.forkserver_is_target(),
    ('MiscTestCase', 'test_spawn_sys_executable_none_allows_import'): lambda method: binding.scripts_on_procstart(),
}

# Tests taking 2 s or more by design (sleeps, timeouts); marked ``slow`` (deselect with -m 'not slow').
SLOW = {
    ('_TestPollEintr', 'test_poll_eintr'),
    ('TestWait', 'test_wait_timeout'),
    ('TestWait', 'test_wait_integer'),
}


class _CompatSetup:
    """First base of every generated class: the start method (CPython's setUpModule), a temporary cwd, adapters."""

    COMPAT_START_METHOD = None
    COMPAT_CPYTHON_NAME = None
    COMPAT_SLOW = frozenset()

    @classmethod
    def setUpClass(cls):
        cls._compat_saved = binding.activate(cls.COMPAT_START_METHOD)
        logger = multiprocessing.get_logger()
        cls._compat_log_level = logger.level
        logger.setLevel(cpython_tests.LOG_LEVEL)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            multiprocessing.get_logger().setLevel(cls._compat_log_level)
            binding.restore(cls._compat_saved)

    def setUp(self):
        # A fresh directory of tempfile's (name=None), not CPython's default ./tempcwd, which a run that was killed
        # leaves behind for every later run to trip over.
        self._compat_enter(os_helper.temp_cwd(name=None))
        adapter = ADAPTERS.get((self.COMPAT_CPYTHON_NAME, self._testMethodName)) or ADAPTERS.get(
            self.COMPAT_CPYTHON_NAME
        )
        if adapter is not None:
            self._compat_enter(adapter(self.COMPAT_START_METHOD))
        super().setUp()

    def _compat_enter(self, cm):
        cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)


class _HarnessChecks:
    """Checks of this harness itself: the rebinding is in force, in the parent and in children."""

    @classmethod
    def _report_binding(cls, conn):
        conn.send(
            (
                cpython_tests.multiprocessing is binding.facade,
                cpython_tests._UpperCaser is binding.ProcstartUpperCaser,
                type(target.current_process()).__module__.split('.')[0],
                target.get_start_method(),
            )
        )
        conn.close()

    def test_binding(self):
        method = self.COMPAT_START_METHOD
        self.assertIs(cpython_tests.multiprocessing, binding.facade)
        self.assertIs(cpython_tests.multiprocessing.Process, target.Process)
        self.assertEqual(target.get_start_method(), method)
        self.assertEqual(multiprocessing.get_start_method(), method)
        r, w = multiprocessing.Pipe(duplex=False)
        p = target.Process(target=self._report_binding, args=(w,))
        p.start()
        w.close()
        self.assertTrue(r.poll(30), 'no report from the child')
        report = r.recv()
        r.close()
        self.assertEqual(p._popen.method, method)
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(report, (True, True, target.__name__, method))

    def test_mixin_binding(self):
        mixin = _processes_mixin(self.COMPAT_START_METHOD)
        self.assertIs(mixin.Process, target.Process)
        self.assertIs(mixin.current_process, target.current_process)
        q = mixin.Queue(1)
        self.assertIs(type(q), multiprocessing.queues.Queue)
        q.close()
        q.join_thread()


def _processes_mixin(method):
    """CPython's ProcessesMixin with procstart's process-start objects and the stdlib context's factories."""
    std_ctx = multiprocessing.get_context(method)
    namespace = {}
    cpython_mixin = vars(cpython_tests.ProcessesMixin)
    missing = [name for name in MIXIN_REQUIRED if name not in cpython_mixin]
    if missing:
        raise AssertionError(f'compat harness: ProcessesMixin of this CPython lacks {missing}')
    for name, value in cpython_mixin.items():
        if name.startswith('__'):
            continue
        if name == 'Process':
            namespace[name] = target.Process
        elif name in MIXIN_FROM_PROCSTART:
            namespace[name] = staticmethod(getattr(target, name))
        elif isinstance(value, staticmethod):
            namespace[name] = staticmethod(getattr(std_ctx, name))
        else:  # TYPE, connection
            namespace[name] = value
    return type(f'{method.capitalize()}ProcstartProcessesMixin', (cpython_tests.BaseMixin,), namespace)


def _install(method, cpython_name, new_name, bases):
    name = f'{method.capitalize()}_{new_name}'
    cls = type(
        name,
        bases,
        {
            '__module__': __name__,
            '__qualname__': name,
            'COMPAT_START_METHOD': method,
            'COMPAT_CPYTHON_NAME': cpython_name,
            'COMPAT_SLOW': frozenset(test for owner, test in SLOW if owner == cpython_name),
        },
    )
    globals()[name] = cls


def _generate():
    for method in METHODS:
        mixin = _processes_mixin(method)
        for cpython_name in MIXIN_TESTS:
            base = getattr(cpython_tests, cpython_name, None)
            if base is None:
                continue
            assert issubclass(base, cpython_tests.BaseTestCase) and 'processes' in base.ALLOWED_TYPES, base
            # CPython's name: _TestProcess -> WithProcessesTestProcess
            new_name = 'WithProcesses' + cpython_name[1:]
            _install(method, cpython_name, new_name, (_CompatSetup, base, mixin, unittest.TestCase))
        for cpython_name in MODULE_TESTS:
            base = getattr(cpython_tests, cpython_name, None)
            if base is None:
                continue
            assert issubclass(base, unittest.TestCase), base
            _install(method, cpython_name, cpython_name, (_CompatSetup, base))
        _install(method, None, 'CompatHarness', (_CompatSetup, _HarnessChecks, unittest.TestCase))


_generate()
