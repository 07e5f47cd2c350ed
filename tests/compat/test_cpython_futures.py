"""CPython's ``concurrent.futures`` process-pool tests, run with procstart contexts for fork, spawn and forkserver.

The tests are loaded at run time, never copied here: from the interpreter's ``test.test_concurrent_futures`` (a module
up to 3.11, a package from 3.12), or, where the interpreter's ``test`` package lacks it, from Debian's
``libpython3.X-testsuite`` of the same Python version, imported as ``_cpython_futures`` (see there why under that
name). ``python tests/compat/cpython_testsuite.py`` installs the Debian package where it can; without the tests
this module skips, saying what to install, and the session summary repeats it.

CPython generates its process-pool test classes with ``create_executor_tests``: ``ProcessPool<Method><Tests>`` from a
tests mixin (``InitializerMixin``, ``FailingInitializerMixin``, ``ProcessPoolShutdownTest``, ``WaitTests``,
``AsCompletedTests``, ``ProcessPoolExecutorTest``, ``ExecutorDeadlockTest`` ...) and ``ProcessPoolForkMixin``,
``ProcessPoolSpawnMixin`` or ``ProcessPoolForkserverMixin``. Every such class found in CPython's tests gets a twin
here, under the same name, that subclasses it with :class:`_TargetContext` placed between the method mixin and
``ExecutorMixin``: the method mixin's ``get_context()`` still runs CPython's skip checks, and its ``super()`` call then
returns ``procstart.get_context(ctx)`` instead of stdlib's context, so that every executor the tests build, in
``setUp`` or in a test body, has a procstart context as ``mp_context``. Thread-pool and pure-``Future`` tests are not
run (they start no processes).

A test running a program in a fresh interpreter (``assert_python_ok``, e.g. ``test_interpreter_shutdown``) gets it
with a first line that puts procstart (the copy under test) and tests/compat on ``sys.path``, CPython's test module
named as it is imported here, and ``from multiprocessing import get_context`` importing procstart's
(``_compat_binding.rebind_source``, which refuses a program it cannot rebind).

``PROCSTART_TEST_TARGET=stdlib`` runs the same classes with stdlib contexts, through the same harness (the reference
run). The leak checks of tests/conftest.py apply as everywhere.
"""

import importlib
import pkgutil
import re
import sys
import unittest

import cpython_testsuite
import pytest

CPYTHON_NAME = 'test.test_concurrent_futures'

_LACKING = cpython_testsuite.missing()
if _LACKING:
    pytest.skip(
        f'CPython {cpython_testsuite.VERSION} at {sys.executable} lacks {", ".join(_LACKING)}: the futures compat '
        f"tests need {CPYTHON_NAME} (from the interpreter's test package, or Debian's "
        f'{cpython_testsuite.DEBIAN_FUTURES}[.py]) and, for the harness, test._test_multiprocessing. Install '
        f'them, e.g. on Debian/Ubuntu: apt-get install {cpython_testsuite.DEBIAN_PACKAGE} '
        '(python tests/compat/cpython_testsuite.py does so where it can).',
        allow_module_level=True,
    )

try:
    import _compat_binding as binding
except unittest.SkipTest as exc:  # CPython's module skips itself (no _multiprocessing, broken sem_open, ASAN)
    pytest.skip(
        f'test._test_multiprocessing, which the harness uses, refuses to run here: {exc}', allow_module_level=True
    )
try:
    if cpython_testsuite.importable(CPYTHON_NAME):
        cpython_futures = importlib.import_module(CPYTHON_NAME)
    else:
        import _cpython_futures as cpython_futures
except unittest.SkipTest as exc:  # as above, or an ASAN/MSAN build
    pytest.skip(f"CPython's futures tests refuse to run here: {exc}", allow_module_level=True)

from test.support import os_helper

target = binding.target  # procstart; stdlib multiprocessing for the reference run (PROCSTART_TEST_TARGET=stdlib)

# Where CPython's tests live: one module (up to 3.11), or the test_* modules of a package with the mixins in util.
if hasattr(cpython_futures, '__path__'):
    test_modules = [
        importlib.import_module(f'{cpython_futures.__name__}.{info.name}')
        for info in pkgutil.iter_modules(cpython_futures.__path__)
        if info.name.startswith('test_')
    ]
    mixins = importlib.import_module(f'{cpython_futures.__name__}.util')
else:
    test_modules = [cpython_futures]
    mixins = cpython_futures

METHOD_MIXINS = (mixins.ProcessPoolForkMixin, mixins.ProcessPoolSpawnMixin, mixins.ProcessPoolForkserverMixin)

SUMMARY_TITLE = f'CPython test_concurrent_futures ({cpython_futures.__file__})'
SUMMARY_LABEL = 'compat futures'

# (tests mixin, test) taking 2 s or more by design (sleeps, timeouts); marked ``slow`` (deselect with -m 'not slow').
SLOW = {
    ('WaitTests', 'test_timeout'),
    ('WaitTests', 'test_first_exception'),
    ('WaitTests', 'test_first_exception_one_already_failed'),
    ('AsCompletedTests', 'test_zero_timeout'),
    ('AsCompletedTests', 'test_duplicate_futures'),
    ('ProcessPoolExecutorTest', 'test_map_timeout'),
    ('ExecutorDeadlockTest', 'test_gh105829_should_not_deadlock_if_wakeup_pipe_full'),  # CPython >= 3.12
}

# Tests that hang in some CPython releases through a defect of concurrent.futures itself, not of the start half
# procstart replaces (under stdlib as under procstart): skipped where the running CPython has the defect, for both
# targets, with the reason. (tests mixin, test) -> (whether this CPython has it, why).
CPYTHON_DEFECTS = {
    ('ProcessPoolShutdownTest', 'test_processes_terminate'): (
        (3, 12) <= sys.version_info < (3, 12, 8) or (3, 13) <= sys.version_info < (3, 13, 1),
        (
            "CPython's own deadlock in ProcessPoolExecutor's shutdown, fixed in 3.12.8 and 3.13.1 (gh-125451): its "
            'manager thread holds the shutdown lock while joining the queue feeder thread, which waits for that lock; '
            'the test hangs at random, and pytest-timeout cannot end it (teardown shuts the executor down again)'
        ),
    ),
}

# CPython's hand-written process-pool test classes (not generated per start method) that read stdlib internals: skipped
# against procstart, for this reason (run as they are in the reference run).
READS_STDLIB_INTERNALS = {
    'FailingInitializerResourcesTest': (
        "stops stdlib's resource tracker (multiprocessing.resource_tracker._resource_tracker) to check its exit "
        "status, while semaphores of procstart contexts are registered with procstart's own tracker"
    ),
}


class _TargetContext(mixins.ExecutorMixin):
    """The executors' context: the target's. CPython's method mixins check whether the method can run here, then
    ask ``super()``, which is this (``ExecutorMixin.get_context`` would return stdlib's context)."""

    def get_context(self):
        return target.get_context(self.ctx)


def _program(source):
    """A program CPython's tests run in a fresh interpreter, made to use the procstart under test and to find CPython's
    test module by the name it has in this process."""
    source = re.sub(rf'\b{re.escape(CPYTHON_NAME)}\b', cpython_futures.__name__, source)
    return binding.sys_path_code() + '\n' + binding.rebind_source(source)


@pytest.fixture(scope='module', autouse=True)
def _temporary_cwd(tmp_path_factory):
    """One temporary working directory for the whole module, as regrtest gives a run: a crashing worker
    (ExecutorDeadlockTest's ``_crash``) may leave a core file there. Not one per test: a process that a test starts
    lazily (stdlib's resource tracker) may still be starting when the test ends, and CPython 3.13.0 fails to import
    ``socket`` in a deleted cwd."""
    with os_helper.change_cwd(tmp_path_factory.mktemp('cpython-futures')):
        yield


class _FuturesSetup:
    """First base of every generated class: the rebinding of fresh-interpreter programs, a check of the executor."""

    COMPAT_START_METHOD = None
    COMPAT_SLOW = frozenset()

    def setUp(self):
        # unittest's suite drops each test case once run (regrtest's runs hold none); pytest keeps it until after the
        # leak check. What CPython's setUp keeps on the instance (FailingInitializerMixin's log queue, with its pipe)
        # is let go after the last cleanup, as unittest would.
        self.addCleanup(self._compat_release, set(vars(self)))
        test_module = sys.modules[getattr(type(self), self._testMethodName).__module__]
        self._compat_enter(binding.scripts_on_procstart(_program, test_module))
        super().setUp()
        # The harness's own check: the executor CPython's setUp made runs on the target.
        self.assertIs(self.executor._mp_context, target.get_context(self.ctx))

    def _compat_release(self, kept):
        for name in set(vars(self)) - kept:
            delattr(self, name)

    def _compat_enter(self, cm):
        cm.__enter__()
        self.addCleanup(cm.__exit__, None, None, None)


def _generate():
    """The twins of CPython's process-pool test classes; returns the names of those skipped."""
    skipped = []
    for module in test_modules:
        for name, cls in vars(module).items():
            if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase) and cls.__module__ == module.__name__):
                continue
            namespace = {'__module__': __name__, '__qualname__': name}
            if issubclass(cls, METHOD_MIXINS):
                tests = cls.__bases__[0].__name__  # create_executor_tests: (tests mixin, method mixin, *bases)
                namespace.update(
                    COMPAT_START_METHOD=cls.ctx,
                    COMPAT_SLOW=frozenset(test for owner, test in SLOW if owner == tests),
                )
                for (owner, test), (affected, why) in CPYTHON_DEFECTS.items():
                    if owner == tests and affected:
                        namespace[test] = unittest.skip(f'CPython {sys.version.split()[0]} defect: {why}')(
                            getattr(cls, test)
                        )
                twin = type(name, (_FuturesSetup, cls, _TargetContext), namespace)
            elif name in READS_STDLIB_INTERNALS:
                twin = type(name, (cls,), namespace)
                if not binding.TARGET_IS_STDLIB:
                    twin = unittest.skip(f'reads stdlib internals: {READS_STDLIB_INTERNALS[name]}')(twin)
                    skipped.append(name)
            else:
                continue
            assert name not in globals(), f'compat harness: two CPython classes named {name}'
            globals()[name] = twin
    return skipped


_skipped = _generate()
SUMMARY_NOTES = [f'{SUMMARY_LABEL}: skipped, reads stdlib internals: {", ".join(_skipped)}'] if _skipped else []
