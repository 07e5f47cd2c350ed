"""CPython's complete multiprocessing suites, run by regrtest under ``python -m procstart run`` and as stdlib.

The machinery behind test_cpython_suites.py (which says what is run, and why so); nothing of CPython's is copied
here. One run is ``(suite, start method, target)``:

* target ``stdlib``: ``python -m test [options] NAMES`` -- CPython's regrtest, the reference;
* target ``procstart``: ``python -m procstart run -m test [options] NAMES`` -- the same, with ``procstart.install()``
  in effect: every process the tests start through stdlib ``multiprocessing`` (and ``concurrent.futures``) is
  started by procstart. With regrtest's ``-j``, its workers are run the same way (``--python`` names
  ``procstart-worker``, which runs ``python -m procstart run -m test.libregrtest.worker ...``).

**The suite interpreter.** Both targets run in a throw-away virtual environment of the interpreter under test
(:class:`SuiteInterpreter`), whose start-up hook (a ``.pth`` file) adds the test environment's site-packages (and so
procstart) and appends the *overlay* directory to ``test.__path__``. The overlay holds what this interpreter's
``test`` package lacks, under CPython's names, so that regrtest, spawned children and the fresh interpreters that
CPython's tests start (``assert_python_ok``, even with ``-I``: the hook is the environment's, not ``PYTHONPATH``)
all import it as ``test.<name>``:

* ``test_multiprocessing_{fork,spawn,forkserver}``, generated: CPython's thin modules, which only call
  ``test._test_multiprocessing.install_tests_in_module_dict`` (and skip under PGO, or where the method does not
  exist). A package of ``test_processes``/``test_threads``/``test_manager``/``test_misc`` where
  ``install_tests_in_module_dict`` takes ``only_type`` (CPython 3.11.6+, 3.12+), a single module before (3.10);
* ``test_concurrent_futures``: Debian's ``libpython3.X-testsuite`` copy (a link to it), as tests/compat loads it;
* ``test_multiprocessing_main_handling_via_procstart_run`` (procstart target only, see :data:`MAIN_HANDLING_VIA_RUN`).

regrtest is given the test modules of an overlay package by name (``test_multiprocessing_spawn.test_processes`` ...),
which is what it runs for a package named on its command line (3.11.7's regrtest looks for the package in its own
directory only).

**Outcomes.** Per test, from regrtest's ``--junit-xml``; what the XML lacks from its ``-v`` output: the full
tracebacks of failures and errors (subtests and ``setUpClass`` errors have no XML entry), skips of whole classes,
per file the "env changed" state and the ``Warning --`` lines saying why, and, for a run that did not finish
(crash, regrtest's ``--timeout``, the harness's own timeout), the test that was running.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import cpython_testsuite

METHODS = ('fork', 'spawn', 'forkserver')
TARGETS = ('procstart', 'stdlib')
MAIN_HANDLING = 'test_multiprocessing_main_handling'
FUTURES = 'test_concurrent_futures'
SUITES = (*(f'test_multiprocessing_{m}' for m in METHODS), MAIN_HANDLING, FUTURES)

# test_multiprocessing_main_handling's tests run every script in a fresh interpreter (``python SCRIPT METHOD``);
# under ``procstart run -m test`` those would be plain ``python``, and the suite would test stdlib alone. For the
# procstart target regrtest runs this module instead: CPython's, with its scripts run as
# ``python -m procstart run SCRIPT METHOD`` (how a program is run under procstart), test ids unchanged.
MAIN_HANDLING_VIA_RUN = 'test_multiprocessing_main_handling_via_procstart_run'

# The test modules of a test_multiprocessing_<method> package (CPython 3.11.6+, 3.12+), and the only_type argument
# each passes to install_tests_in_module_dict (None: exclude_types=True, the module-level TestCase classes).
MP_PACKAGE_MODULES = {
    'test_processes': 'processes',
    'test_threads': 'threads',
    'test_manager': 'manager',
    'test_misc': None,
}

# The test classes of one start method: main_handling's, and test_concurrent_futures's process-pool classes
# (``ProcessPool<Method><Tests>``, created per method by create_executor_tests; 'Fork[A-Z]' keeps Forkserver out).
MAIN_HANDLING_CLASSES = {'fork': 'ForkCmdLineTest', 'spawn': 'SpawnCmdLineTest', 'forkserver': 'ForkServerCmdLineTest'}
FUTURES_PATTERNS = {
    'fork': 'ProcessPoolFork[A-Z]*',
    'spawn': 'ProcessPoolSpawn*',
    'forkserver': 'ProcessPoolForkserver*',
}

# regrtest options common to every run: all resources (the suites complete: 'cpu' and 'walltime' tests included),
# verbose (the outcome of each test and every traceback in the log).
REGRTEST_OPTIONS = ('-u', 'all', '-v')

_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def suite_methods(suite):
    """The start methods a suite is run for: its own (test_multiprocessing_<method>), or each."""
    for method in METHODS:
        if suite == f'test_multiprocessing_{method}':
            return (method,)
    return METHODS


def label(suite, method):
    """``test_multiprocessing_spawn``, ``test_concurrent_futures spawn``: the suite, and the method if not implied."""
    return suite if suite_methods(suite) == (method,) else f'{suite} {method}'


# -- what this interpreter has ---------------------------------------------------------------------------------------


def _has_test_module(name):
    try:
        return importlib.util.find_spec(f'test.{name}') is not None
    except ImportError:
        return False


def _debian_path(name):
    """Debian's copy of CPython's test module ``name`` (a file or a package directory), or None."""
    base = f'/usr/lib/python{cpython_testsuite.VERSION}/test/{name}'
    for path in (base, base + '.py'):
        if os.path.exists(path):
            return path
    return None


def _mp_layout():
    """'package' or 'module': the form of the thin test_multiprocessing_<method> modules for this interpreter's
    test._test_multiprocessing (its install_tests_in_module_dict takes only_type from 3.11.6 and 3.12 on)."""
    spec = importlib.util.find_spec('test._test_multiprocessing')
    with open(spec.origin, encoding='utf-8') as f:
        source = f.read()
    match = re.search(r'^def install_tests_in_module_dict\(([^)]*)\)', source, re.MULTILINE)
    if match is None:
        raise AssertionError(f'suites harness: no install_tests_in_module_dict in {spec.origin}')
    return 'package' if 'only_type' in match.group(1) else 'module'


def missing():
    """{suite: why it cannot run here} for the suites this interpreter cannot run."""
    why = {}
    if not _has_test_module('_test_multiprocessing'):
        for method in METHODS:
            why[f'test_multiprocessing_{method}'] = (
                f'CPython {cpython_testsuite.VERSION} at {sys.executable} lacks test._test_multiprocessing: install '
                f'it, e.g. on Debian/Ubuntu: apt-get install {cpython_testsuite.DEBIAN_PACKAGE}'
            )
    for suite in (MAIN_HANDLING, FUTURES):
        if not (_has_test_module(suite) or _debian_path(suite)):
            why[suite] = (
                f"CPython {cpython_testsuite.VERSION} at {sys.executable} lacks test.{suite}, and Debian's "
                f'{cpython_testsuite.DEBIAN_PACKAGE} is not installed (python tests/compat/cpython_testsuite.py '
                'installs it where it can)'
            )
    return why


def regrtest_has_python_option():
    """Whether this regrtest has ``--python`` (3.11.7+; without it, ``-j`` workers could not run under procstart)."""
    try:
        from test.libregrtest import cmdline
    except ImportError:
        return False
    return '--python' in inspect.getsource(cmdline)


# -- the overlay and the suite interpreter ---------------------------------------------------------------------------

_GENERATED = '# Generated by procstart tests/compat/cpython_suites.py: {what}, which CPython {version} here lacks.\n'

_PLATFORM_SKIPS = {
    'fork': (
        'if sys.platform == "win32":\n    raise unittest.SkipTest("fork is not available on Windows")\n'
        'if sys.platform == \'darwin\':\n    raise unittest.SkipTest("test may crash on macOS (bpo-33725)")\n'
    ),
    'spawn': '',
    'forkserver': 'if sys.platform == "win32":\n    raise unittest.SkipTest("forkserver is not available on Windows")\n',
}


def _thin_module_header(what, method):
    return (
        _GENERATED.format(what=what, version=cpython_testsuite.VERSION)
        + 'import sys\nimport unittest\n\nfrom test import support\n\n'
        + 'if support.PGO:\n    raise unittest.SkipTest("test is not helpful for PGO")\n'
        + _PLATFORM_SKIPS[method]
    )


def _write(path, text):
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def _generate_mp_suite(overlay, method, layout):
    """CPython's test_multiprocessing_<method> (thin module or package) in ``overlay``."""
    name = f'test_multiprocessing_{method}'
    if layout == 'module':
        _write(
            os.path.join(overlay, name + '.py'),
            _thin_module_header(f'test.{name}', method)
            + '\nimport test._test_multiprocessing\n\n'
            + f'test._test_multiprocessing.install_tests_in_module_dict(globals(), {method!r})\n',
        )
        return
    package = os.path.join(overlay, name)
    os.mkdir(package)
    modules = ', '.join(repr(m) for m in MP_PACKAGE_MODULES)
    _write(
        os.path.join(package, '__init__.py'),
        _thin_module_header(f'the package test.{name}', method)
        + '\nimport importlib\n\n\ndef load_tests(loader, tests, pattern):\n'
        + f'    for module in ({modules}):\n'
        + "        tests.addTests(loader.loadTestsFromModule(importlib.import_module(f'{__name__}.{module}')))\n"
        + '    return tests\n',
    )
    for module, only_type in MP_PACKAGE_MODULES.items():
        selection = f'only_type={only_type!r}' if only_type else 'exclude_types=True'
        _write(
            os.path.join(package, module + '.py'),
            _GENERATED.format(what=f'test.{name}.{module}', version=cpython_testsuite.VERSION)
            + 'from test._test_multiprocessing import install_tests_in_module_dict\n\n'
            + f'install_tests_in_module_dict(globals(), {method!r}, {selection})\n',
        )


_MAIN_HANDLING_VIA_RUN_SOURCE = '''\
"""CPython's test.test_multiprocessing_main_handling, each script run as `python -m procstart run SCRIPT METHOD`.

Generated by procstart tests/compat/cpython_suites.py for the procstart target: CPython's tests run their scripts
in fresh interpreters, which `python -m procstart run -m test` does not reach. The test classes are CPython's own
(same test ids); only the assert_python_ok their module calls is wrapped.
"""

import test.test_multiprocessing_main_handling as _cpython
from test.test_multiprocessing_main_handling import *  # noqa: F403 -- CPython's test classes, loaded from here

_assert_python_ok = _cpython.assert_python_ok


def _via_procstart_run(*args, **kwargs):
    # Python's own options (-O) stay before `-m procstart run`; the script and its arguments follow it.
    i = 0
    while i < len(args) and str(args[i]).startswith('-'):
        i += 1
    return _assert_python_ok(*args[:i], '-m', 'procstart', 'run', *args[i:], **kwargs)


_cpython.assert_python_ok = _via_procstart_run
'''


def _test_site_dirs():
    """The site-packages of the test environment (procstart and the test extras), and procstart's own parent
    directory (a source tree or an editable install)."""
    import sysconfig

    import procstart

    dirs = [sysconfig.get_path('purelib'), sysconfig.get_path('platlib')]
    return list(dict.fromkeys(dirs)), os.path.dirname(os.path.dirname(os.path.abspath(procstart.__file__)))


class SuiteInterpreter:
    """A throw-away virtual environment of this interpreter, in ``root``, that runs the suites (see the module's
    docstring), with the overlay of the test modules this interpreter lacks. ``root`` is emptied first."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        self.overlay = os.path.join(self.root, 'overlay')
        os.mkdir(self.overlay)
        self.venv = os.path.join(self.root, 'python')
        self.runs_dir = os.path.join(self.root, 'runs')
        os.mkdir(self.runs_dir)
        # Where each suite's test modules come from, for the session summary.
        self.sources = {}
        self.missing = missing()
        # The process groups of the runs under way (for stop()).
        self._live = set()
        self._stopped = False
        self._make_overlay()
        self._make_venv()

    def _make_overlay(self):
        layout = _mp_layout() if _has_test_module('_test_multiprocessing') else None
        self.mp_layout = layout
        for method in METHODS:
            name = f'test_multiprocessing_{method}'
            if name in self.missing:
                continue
            if _has_test_module(name):
                self.sources[name] = f'test.{name} of {sys.executable}'
            else:
                _generate_mp_suite(self.overlay, method, layout)
                self.sources[name] = f'generated ({layout} layout; this interpreter lacks test.{name})'
        for name in (MAIN_HANDLING, FUTURES):
            if name in self.missing:
                continue
            if _has_test_module(name):
                self.sources[name] = f'test.{name} of {sys.executable}'
            else:
                debian = _debian_path(name)
                os.symlink(debian, os.path.join(self.overlay, os.path.basename(debian)))
                self.sources[name] = f"Debian's {debian} (this interpreter lacks test.{name})"
        if MAIN_HANDLING not in self.missing:
            _write(os.path.join(self.overlay, MAIN_HANDLING_VIA_RUN + '.py'), _MAIN_HANDLING_VIA_RUN_SOURCE)

    def _make_venv(self):
        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', self.venv], check=True)
        self.python = os.path.join(self.venv, 'bin', 'python')
        purelib = subprocess.run(
            [self.python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        site_dirs, procstart_parent = _test_site_dirs()
        _write(
            os.path.join(purelib, '_procstart_suites_site.py'),
            '"""Start-up hook of the interpreter that runs CPython\'s suites (procstart tests/compat/cpython_suites.py)."""\n'
            'import site\nimport sys\n\n'
            f'for _dir in {site_dirs!r}:\n    site.addsitedir(_dir)\n'
            f'if {procstart_parent!r} not in sys.path:\n    sys.path.append({procstart_parent!r})\n\n'
            'import test  # noqa: E402\n\n'
            f'test.__path__.append({self.overlay!r})\n',
        )
        _write(os.path.join(purelib, '_procstart_suites.pth'), 'import _procstart_suites_site\n')
        # regrtest's --python for the procstart target's -j workers: the worker command it builds
        # ([options...] -m test.libregrtest.worker JSON) run as `python [options...] -m procstart run -m ...`.
        self.worker = os.path.join(self.root, 'procstart-worker')
        _write(
            self.worker,
            f'#!{self.python}\n'
            '"""regrtest\'s --python for the procstart target: its worker run under `python -m procstart run`."""\n'
            'import os\nimport sys\n\n'
            'args = sys.argv[1:]\n'
            "i = next(i for i, a in enumerate(args) if a == '-m' and (i == 0 or args[i - 1] not in ('-W', '-X')))\n"
            f"os.execv({self.python!r}, [{self.python!r}, *args[:i], '-m', 'procstart', 'run', *args[i:]])\n",
        )
        os.chmod(self.worker, 0o755)

    # -- one run ---------------------------------------------------------------------------------------------------

    def regrtest_args(self, suite, method, target, match=None):
        """The test names and the filter options for ``suite`` and ``method``; ``match``: regrtest ``-m`` patterns
        that replace the suite's own filter (a re-run of some of its tests)."""
        if suite == MAIN_HANDLING:
            name = MAIN_HANDLING_VIA_RUN if target == 'procstart' else MAIN_HANDLING
            return [*_match_options(match or [MAIN_HANDLING_CLASSES[method]]), name]
        names = [suite]
        overlay_package = os.path.join(self.overlay, suite)
        if os.path.isdir(overlay_package):
            names = sorted(
                f'{suite}.{entry[:-3]}'
                for entry in os.listdir(overlay_package)
                if entry.startswith('test') and entry.endswith('.py')
            )
        elif os.path.exists(overlay_package + '.py'):
            # Named in full: regrtest would look for the package of a name it splits (test_concurrent_futures, a
            # package from 3.12) in its own directory.
            names = [f'test.{suite}']
        if suite == FUTURES:
            return [*_match_options(match or [FUTURES_PATTERNS[method]]), *names]
        return [*_match_options(match or []), *names]

    def command(self, suite, method, target, jobs, file_timeout, junit, match=None):
        args = [*REGRTEST_OPTIONS, '--timeout', str(file_timeout), '--junit-xml', junit]
        if jobs:
            args += ['-j', str(jobs)]
            if target == 'procstart':
                args += ['--python', f'{self.python} {self.worker}']
        args += self.regrtest_args(suite, method, target, match)
        if target == 'procstart':
            return [self.python, '-m', 'procstart', 'run', '-m', 'test', *args]
        return [self.python, '-m', 'test', *args]

    def run(self, suite, method, target, *, jobs=0, file_timeout=600, timeout=None):
        """Run regrtest for ``(suite, method, target)``, and once more for the tests that failed (see
        :func:`with_rerun`); its :class:`RunResult`. ``jobs``: regrtest's ``-j`` (0: the tests run in regrtest's own
        process). ``timeout``: the harness's bound on each run (killed after it)."""
        result = self._run(suite, method, target, jobs, file_timeout, timeout)
        if rerun_wanted(result):
            again = self._run(suite, method, target, jobs, file_timeout, timeout, match=rerun_patterns(result.failed))
            result = with_rerun(result, again)
        return result

    def _run(self, suite, method, target, jobs, file_timeout, timeout, match=None):
        stem = os.path.join(self.runs_dir, f'{suite}-{method}-{target}' + ('-rerun' if match else ''))
        junit, log = stem + '.xml', stem + '.log'
        cmd = self.command(suite, method, target, jobs, file_timeout, junit, match)
        env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTEST_', 'PROCSTART_TEST'))}
        env['NO_COLOR'] = '1'
        if timeout is None:  # regrtest's own bound, one file after the other, and a margin
            timeout = file_timeout * len(self.regrtest_args(suite, method, target, match)) + 120
        started = time.monotonic()
        hung = False
        with open(log, 'w', encoding='utf-8') as out:
            out.write(f'$ {subprocess.list2cmdline(cmd)}\n')
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
            self._live.add(proc.pid)
            if self._stopped:
                _kill_group(proc.pid, signal.SIGKILL)
            try:
                returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                _kill_group(proc.pid, signal.SIGABRT)  # faulthandler (regrtest enables it) dumps every thread
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
                _kill_group(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
        # Whatever the run left behind in its process group (stray children) is ended too.
        _kill_group(proc.pid, signal.SIGKILL)
        self._live.discard(proc.pid)
        duration = time.monotonic() - started
        with open(log, encoding='utf-8', errors='replace') as f:
            output = _ANSI.sub('', f.read())
        return parse_run(
            suite=suite,
            method=method,
            target=target,
            command=cmd,
            returncode=returncode,
            duration=duration,
            output=output,
            junit=junit if os.path.exists(junit) else None,
            log=log,
            harness_timeout=timeout if hung else None,
        )

    def stop(self):
        """Kill the runs under way (the session is ending early: interrupted, or -x)."""
        self._stopped = True
        for pgid in list(self._live):
            _kill_group(pgid, signal.SIGKILL)


def _match_options(patterns):
    return [option for pattern in patterns for option in ('-m', pattern)]


# -- re-running what failed ------------------------------------------------------------------------------------------

# A run with more failures than this is broken, not unlucky: nothing is re-run.
MAX_RERUN = 5


def rerun_wanted(result):
    """Whether the tests that failed in ``result`` are re-run: CPython's own CI re-runs a failed test once
    (regrtest's ``--rerun``, ``-w`` before 3.13) and calls one that passes then flaky, not failed. The same policy here,
    for both targets alike: a run that finished, with a few failures (:data:`MAX_RERUN`), each a test or a fixture
    (not a crash, a hang or "env changed", which stay failures)."""
    return (
        result.finished and not result.files_failed.keys() - _files_of(result) and 0 < len(result.failed) <= MAX_RERUN
    )


def _of_file(test_id, name):
    """Whether ``test_id`` is a test of the regrtest test file ``name``."""
    return test_id.startswith(normalize(_FILE_ALIASES.get(name, name)) + '.')


def _files_of(result):
    """The regrtest test files whose failure is that of a failed test (not a crash, not an import error)."""
    return {
        name
        for name in result.files_failed
        if name not in result.unfinished_files and any(_of_file(t, name) for t in result.failed)
    }


def rerun_patterns(test_ids):
    """regrtest ``-m`` patterns selecting ``test_ids`` again (a subtest's test whole; a fixture's class whole)."""
    patterns = []
    for test_id in test_ids:
        *_, owner, name = test_id.split(' ')[0].split('.')
        pattern = f'*.{owner}.*' if name in ('setUpClass', 'setUpModule') else f'*.{owner}.{name}'
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


def with_rerun(result, again):
    """``result`` with the tests that passed when re-run (``again``) moved from its failures to
    :attr:`RunResult.flaky` (with their first failure). A fixture passed again when no test of its class failed
    again and one passed."""
    result.rerun = again
    if not again.finished or again.env_changed:
        return result
    files = _files_of(result)
    failed_again = {t.split(' ')[0] for t in again.failed}
    for test_id in result.failed:
        base = test_id.split(' ')[0]
        owner, name = base.rsplit('.', 1)
        if name in ('setUpClass', 'setUpModule'):
            passed = not any(t.startswith(owner + '.') for t in failed_again) and any(
                t.startswith(owner + '.') and o.outcome == 'passed' for t, o in again.tests.items()
            )
        else:
            passed = base not in failed_again and getattr(again.tests.get(base), 'outcome', None) == 'passed'
        if passed:
            result.flaky[test_id] = result.failure(test_id).detail
    for name in files:
        if not any(_of_file(t, name) for t in result.failed):
            del result.files_failed[name]
    return result


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- outcomes --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TestOutcome:
    id: str
    outcome: str  # passed, skipped, failed, error, xfailed, xpassed
    detail: str = ''  # skip reason, or the traceback of a failure or error


@dataclasses.dataclass
class RunResult:
    suite: str
    method: str
    target: str
    command: list
    returncode: int
    duration: float
    log: str
    tests: dict  # id -> TestOutcome, for every test in the junit XML or the -v output
    problems: list  # TestOutcome of failures/errors without an XML entry (subtests, setUpClass, setUpModule)
    env_changed: dict  # regrtest test file -> the Warning lines of its output
    files_failed: dict  # regrtest test file -> regrtest's words (failed, crashed, timed out ...)
    files_skipped: list  # regrtest test files skipped as a whole (SkipTest at import) or run no tests
    finished: bool  # regrtest printed its result (did not crash, nor was it killed)
    stopped: str  # for an unfinished run: why, and the test that was running
    harness_timeout: float | None
    # For what did not finish (a test file, or 'the run'): the output of the test that was running, and
    # faulthandler's stacks where a timeout or a fatal error printed them.
    excerpts: dict = dataclasses.field(default_factory=dict)
    # Failed, then passed when re-run (with_rerun): id -> the first failure's traceback; and that re-run.
    flaky: dict = dataclasses.field(default_factory=dict)
    rerun: RunResult | None = None

    def failure(self, test_id):
        """The :class:`TestOutcome` of ``test_id``, one of :attr:`failed` (with an XML entry or not)."""
        return self.tests.get(test_id) or next(p for p in self.problems if p.id == test_id)

    def count(self, *outcomes):
        return sum(1 for t in self.tests.values() if t.outcome in outcomes)

    @property
    def failed(self):
        """Failures and errors, with an XML entry or not."""
        ids = {t.id for t in self.tests.values() if t.outcome in ('failed', 'error', 'xpassed')}
        return sorted((ids | {p.id for p in self.problems}) - self.flaky.keys())

    def counts(self):
        return {
            'passed': self.count('passed', 'xfailed'),
            'skipped': self.count('skipped'),
            'failed': len(self.failed),
            'env changed': len(self.env_changed),
        } | ({'flaky': len(self.flaky)} if self.flaky else {})

    @property
    def unfinished_files(self):
        """{test file: regrtest's words} for the files whose worker crashed or timed out (regrtest's -j)."""
        return {name: words for name, words in self.files_failed.items() if words.startswith(_UNFINISHED)}

    def describe(self):
        """``380 passed 12 skipped 0 failed 0 env changed`` (and HUNG or CRASHED for what did not finish)."""
        c = self.counts()
        text = ' '.join(f'{n} {what}' for what, n in c.items())
        stops = [self.stopped] if not self.finished else []
        stops += self.unfinished_files.values()
        if stops:
            text += ' ' + ('HUNG' if self.harness_timeout or any('timed out' in s for s in stops) else 'CRASHED')
        return text

    @property
    def clean(self):
        return self.finished and not self.failed and not self.env_changed and not self.files_failed


_HEADER = re.compile(r'^(?:\d+:\d\d:\d\d )?(?:load avg: [\d.]+ )?\[\s*\d+/\d+(?:/\d+)?\] (\S+)(.*)$', re.MULTILINE)
_BLOCK = re.compile(
    r'^={70}\n(FAIL|ERROR|UNEXPECTED SUCCESS): (.+?)\n-{70}\n(.*?)(?=^={70}\n|^-{70}\nRan \d+ tests? in )',
    re.MULTILINE | re.DOTALL,
)
# A verbose test line: "test_x (module.Class.test_x) ... ok"; 3.10 prints "(module.Class)"; a docstring puts its
# first line between.
_VERBOSE = re.compile(r'^(\w+) \(([\w.]+)\)(?:\n[^\n]*?)? \.\.\. (.*)$', re.MULTILINE)
# The start of a verbose test line, anywhere in a text.
_STARTED_ANYWHERE = re.compile(r'^\w+ \([\w.]+\)(?: \.\.\.|$)', re.MULTILINE)
# The start of a verbose test line (or of a fixture's).
_STARTED = re.compile(r'^(\w+) \(([\w.]+)\)(?: \.\.\.|$)')
# regrtest's words for a test file's result (libregrtest/result.py), those of a file that failed first.
_FILE_RESULT = re.compile(
    r'(failed \(env changed\)|failed(?: \([^)]*\))?|worker non-zero exit code(?: \(.*\))?|worker bug'
    r'|timed out \([^)]*\)|skipped(?: \(resource denied\))?|ran no tests|interrupted)'
)
# The module whose tests a regrtest test file runs, where they differ.
_FILE_ALIASES = {MAIN_HANDLING_VIA_RUN: MAIN_HANDLING}
# Those of a file that did not finish.
_UNFINISHED = ('worker non-zero exit code', 'worker bug', 'timed out', 'interrupted')


def _test_id(name, described):
    """The unittest id from a verbose line or a failure header: "name (module.Class.name)" -> module.Class.name
    (3.11+); 3.10 prints "name (module.Class)", and so do fixtures: "setUpClass (module.Class)"."""
    return described if described.endswith('.' + name) else f'{described}.{name}'


def normalize(test_id):
    """A test id without the ``test.`` package prefix (overlay and interpreter modules compare equal)."""
    return test_id.removeprefix('test.')


def short_error(detail):
    """One line for a traceback: the exception's first line (with the last line of a failed child program's
    stderr, as script_helper shows it), and the innermost frame in a test module."""
    body = re.split(r'\n(?:Stdout|Stderr):\n', detail, maxsplit=1)[0].rstrip()
    frames = list(re.finditer(r'^  File "([^"]+)", line (\d+), in (\S+)\n(?:    .*\n)*', body + '\n', re.MULTILINE))
    rest = body[frames[-1].end() :] if frames else body
    lines = [line for line in rest.splitlines() if line.strip()]
    exc = lines[0] if lines else '(no exception line)'
    stderr = re.search(r'^stderr:\n---\n(.*?)\n---$', rest, re.MULTILINE | re.DOTALL)
    if stderr and stderr.group(1).strip():
        exc += f' [stderr: {stderr.group(1).strip().splitlines()[-1].strip()}]'
    if len(exc) > 400:
        exc = exc[:400] + ' ...'
    where = ''
    ours = [f for f in frames if not re.search(rf'/(unittest|test/support)/|{MAIN_HANDLING_VIA_RUN}', f.group(1))]
    ours = ours or frames
    if ours:
        path, line, func = ours[-1].groups()
        where = f' ({os.path.basename(path)}:{line} in {func})'
    return exc + where


def _sections(output):
    """{regrtest test file: its part of the output} (in -j mode the result line and the worker's output; serially,
    from its progress line to the next)."""
    headers = list(_HEADER.finditer(output))
    sections = {}
    for i, m in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(output)
        sections.setdefault(m.group(1), []).append(output[m.start() : end])
    return {name: ''.join(parts) for name, parts in sections.items()}


def _listed(output, title):
    """The test files regrtest lists under a summary title ("1 test failed:" ...)."""
    m = re.search(rf'^\d+ (?:test|tests) {re.escape(title)}:\n((?:    .*\n?)+)', output, re.MULTILINE)
    return m.group(1).split() if m else []


def _junit(path):
    tests = {}
    if path is None:
        return tests
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return tests
    for case in root.iter('testcase'):
        name = case.get('name')
        if not name:  # started, never finished: a test with failed subtests (its blocks are in the -v output)
            continue
        child = {c.tag: c for c in case}
        if 'error' in child or 'failure' in child:
            e = child.get('error', child.get('failure'))
            outcome, detail = ('error' if 'error' in child else 'failed'), (e.text or e.get('message') or '')
        elif 'skipped' in child:
            outcome, detail = 'skipped', child['skipped'].text or ''
        elif 'output' in child:
            outcome, detail = 'xfailed', ''
        elif 'outcome' in child:
            outcome, detail = 'xpassed', 'unexpected success'
        else:
            outcome, detail = 'passed', ''
        tests[normalize(name)] = TestOutcome(normalize(name), outcome, detail)
    return tests


def _verbose_outcomes(output):
    """Per test, from the -v lines (for a run whose XML was never written)."""
    tests = {}
    for m in _VERBOSE.finditer(output):
        name, described, result = m.groups()
        if name in ('setUpClass', 'tearDownClass', 'setUpModule', 'tearDownModule'):
            continue
        test_id = normalize(_test_id(name, described))
        result = result.strip()
        if result == 'ok':
            outcome, detail = 'passed', ''
        elif result.startswith('skipped'):
            outcome, detail = 'skipped', result[len('skipped') :].strip().strip('\'"')
        elif result == 'expected failure':
            outcome, detail = 'xfailed', ''
        elif result == 'unexpected success':
            outcome, detail = 'xpassed', 'unexpected success'
        elif result.startswith('FAIL'):
            outcome, detail = 'failed', ''
        elif result.startswith('ERROR'):
            outcome, detail = 'error', ''
        else:  # output of the test (a child's) on the same line: the result is further down
            continue
        tests[test_id] = TestOutcome(test_id, outcome, detail)
    return tests


def _last_started(output):
    """The last test whose verbose line has no result: the one running when the run stopped."""
    last = None
    for m in re.finditer(r'^(\w+) \(([\w.]+)\)(?:\n[^\n]*?)? \.\.\. ?(.*)$', output, re.MULTILINE):
        last = (normalize(_test_id(m.group(1), m.group(2))), m.group(3).strip())
    if last is None:
        return None
    return last[0]


def parse_run(*, suite, method, target, command, returncode, duration, output, junit, log, harness_timeout):
    tests = _junit(junit)
    finished = bool(re.search(r'^(?:== )?Tests result: ', output, re.MULTILINE))
    if not tests:
        tests = _verbose_outcomes(output)
    # Failure blocks: full tracebacks, also of what the XML does not list.
    problems = []
    for kind, header, body in _BLOCK.findall(output):
        # The header's first line (a docstring's first line follows it).
        m = re.match(r'(\w+) \(([\w.]+)\)(.*)', header.splitlines()[0])
        if m is None:
            continue
        name, described, extra = m.groups()
        test_id = normalize(_test_id(name, described)) + extra
        outcome = 'error' if kind == 'ERROR' else 'xpassed' if kind.startswith('UNEXPECTED') else 'failed'
        detail = body.rstrip()
        base = tests.get(test_id)
        if base is not None and base.outcome in ('failed', 'error'):
            base.detail = detail  # the XML's traceback lacks the captured output regrtest's block has
        else:
            problems.append(TestOutcome(test_id, outcome, detail))
    # Whole classes or modules skipped by their fixture: their tests are in neither the XML nor the -v lines.
    for m in re.finditer(r'^(setUpClass|setUpModule) \(([\w.]+)\) \.\.\. skipped (.*)$', output, re.MULTILINE):
        test_id = normalize(f'{m.group(2)}.{m.group(1)}')
        tests.setdefault(test_id, TestOutcome(test_id, 'skipped', m.group(3).strip('\'"')))
    sections = _sections(output)
    env_changed = {}
    for name in _listed(output, 'altered the execution environment (env changed)') or [
        n for n, text in sections.items() if re.search(rf'{re.escape(n)} failed \(env changed\)', text)
    ]:
        env_changed[name] = _warnings(sections.get(name, ''))
    files_failed = {}
    for name in _listed(output, 'failed'):
        words = re.search(rf'{re.escape(name)} ({_FILE_RESULT.pattern})', output)
        files_failed[name] = words.group(1) if words else 'failed'
    files_skipped = _listed(output, 'skipped') + _listed(output, 'run no tests')
    stopped = ''
    excerpts = {}
    if not finished:
        running = _last_started(output)
        if harness_timeout:
            stopped = f'killed by the harness after {harness_timeout:.0f} s (SIGABRT: faulthandler dump in the log)'
        elif _TIMEOUT.search(output):
            stopped = 'timed out (regrtest --timeout)'
        elif returncode < 0:
            stopped = f'crashed: killed by {signal.Signals(-returncode).name}'
        else:
            stopped = f'crashed: exit status {returncode}, no result printed'
        if running:
            stopped += f'; running: {running}'
        excerpts['the run'] = _excerpt(output)
    for name, words in files_failed.items():
        if words.startswith(_UNFINISHED):
            section = sections.get(name, '')
            if _TIMEOUT.search(section) and not words.startswith('timed out'):
                words += ', timed out (regrtest --timeout)'
            running = _last_started(section)
            if running:
                words += f'; running: {running}'
            files_failed[name] = words
            excerpts[name] = _excerpt(section)
            # Its tests are not in the XML (the worker never sent it): their -v lines say what they did.
            for test_id, outcome in _verbose_outcomes(section).items():
                if test_id not in tests:
                    if outcome.outcome in ('failed', 'error'):
                        outcome.detail = (
                            'no traceback: its test file did not finish, and unittest prints them at the end'
                        )
                    tests[test_id] = outcome
    return RunResult(
        excerpts={k: v for k, v in excerpts.items() if v},
        suite=suite,
        method=method,
        target=target,
        command=command,
        returncode=returncode,
        duration=duration,
        log=log,
        tests=tests,
        problems=problems,
        env_changed=env_changed,
        files_failed=files_failed,
        files_skipped=files_skipped,
        finished=finished,
        stopped=stopped,
        harness_timeout=harness_timeout,
    )


_TIMEOUT = re.compile(r'Timeout \(\d+:\d\d:\d\d\)!')
_FATAL = re.compile(r'Timeout \(\d+:\d\d:\d\d\)!|^Fatal Python error: ', re.MULTILINE)


def _excerpt(section, before=20, stacks=12):
    """The end of a test file's (or run's) output that did not finish: what the running test printed (a child's
    traceback, say), then faulthandler's stacks, each cut to a few lines."""
    starts = list(_STARTED_ANYWHERE.finditer(section))
    start = starts[-1].start() if starts else 0
    tail = section[start:]
    m = _FATAL.search(tail)
    printed, dump = (tail[: m.start()], tail[m.start() :]) if m else (tail, '')
    printed_lines = printed.rstrip().splitlines()
    if len(printed_lines) > before + 1:
        printed_lines = [printed_lines[0], f'  ... ({len(printed_lines) - before - 1} lines)', *printed_lines[-before:]]
    dump_lines = dump.rstrip().splitlines()
    if len(dump_lines) > stacks:
        dump_lines = [*dump_lines[:stacks], f'  ... ({len(dump_lines) - stacks} more lines)']
    # The stacks end where regrtest's own output resumes.
    dump_lines = [line for line in dump_lines if not line.startswith('== Tests result')]
    return '\n'.join(printed_lines + dump_lines).strip()


def _warnings(section, max_lines=8):
    """The warnings (``Warning --`` lines; support.print_warning prefixes every line of one) of a test file's
    output, each with the test that was the last to start before it."""
    out = []
    last = None
    for line in section.splitlines():
        m = _STARTED.match(line)
        if m:
            last = normalize(_test_id(m.group(1), m.group(2)))
            continue
        if not line.startswith('Warning -- '):
            continue
        text = line[len('Warning -- ') :]
        if out and text[:1].isspace() and out[-1][1] == last:
            out[-1][0].append(text)
        else:
            out.append(([text], last))
    lines = []
    for text, after in out:
        if len(text) > max_lines:
            text = [*text[:max_lines], f'  ... ({len(text) - max_lines} more lines in the log)']
        lines.append('\n      '.join(text) + (f'\n      [last test started: {after}]' if after else ''))
    return lines


# -- the verdict -----------------------------------------------------------------------------------------------------


def differences(result, reference):
    """Tests the reference (stdlib) run ran -- passed or failed -- that ``result`` skipped or did not run, each with
    ``result``'s reason."""
    out = []
    for test_id, ref in sorted(reference.tests.items()):
        if ref.outcome == 'skipped' or test_id.endswith(('.setUpClass', '.setUpModule')):
            continue
        mine = result.tests.get(test_id)
        if mine is None:
            if any(p.id.split(' ')[0] == test_id for p in result.problems):
                continue
            out.append(TestOutcome(test_id, 'not run', _why_absent(result, test_id)))
        elif mine.outcome == 'skipped':
            out.append(TestOutcome(test_id, 'skipped', mine.detail))
    return out


def _why_absent(result, test_id):
    for name in result.unfinished_files:
        if _of_file(test_id, name):
            return f'not reached: {name} did not finish'
    for prefix in (test_id.rsplit('.', 1)[0], test_id.rsplit('.', 2)[0]):
        for fixture in ('setUpClass', 'setUpModule'):
            t = result.tests.get(f'{prefix}.{fixture}')
            if t is not None:
                return f'{fixture} skipped: {t.detail}'
            p = next((p for p in result.problems if p.id == f'{prefix}.{fixture}'), None)
            if p is not None:
                return f'{fixture} failed: {short_error(p.detail)}'
    if not result.finished:
        return f'not reached: the run {result.stopped}'
    return 'absent from the run (its module did not load, or regrtest skipped the file)'


# Tests listed one by one under one reason, at most; warnings shown per test file, at most.
MAX_LISTED = 5
MAX_WARNINGS = 3


def report(result, reference=None):
    """The verdict of one run: (ok, text). A run fails for any failure, error, env changed, crash or hang, and a
    procstart run also for any test that its stdlib reference ran and it skipped or did not run."""
    lines = []
    diffs = differences(result, reference) if reference is not None else []
    for test_id in result.failed:
        t = result.failure(test_id)
        kind = {'failed': 'FAIL', 'error': 'ERROR', 'xpassed': 'UNEXPECTED SUCCESS'}[t.outcome]
        lines.append(f'{kind} {test_id}: {short_error(t.detail)}')
    for name, warnings in result.env_changed.items():
        shown = warnings[:MAX_WARNINGS] or ['(no Warning line)']
        if len(warnings) > MAX_WARNINGS:
            shown.append(f'({len(warnings) - MAX_WARNINGS} more warnings in the log)')
        lines.append(f'ENV CHANGED {name}:' + ''.join(f'\n    {w}' for w in shown))
    for name, words in result.files_failed.items():
        if name in result.unfinished_files:
            lines.append(f'DID NOT FINISH {name}: {words}')
        elif not any(_of_file(t, name) for t in result.failed):
            # A file that failed with no test failing: its module did not import, say (the log has the traceback).
            lines.append(f'FAILED {name}: {words}, no test failed (see the log)')
    if not result.finished:
        lines.append(f'DID NOT FINISH: {result.stopped}')
    # One line per test, or, for many with one reason (a file that did not finish), a count and a few of them.
    by_reason = {}
    for d in diffs:
        by_reason.setdefault((d.outcome, d.detail), []).append(d.id)
    for (outcome, why), ids in by_reason.items():
        if len(ids) <= MAX_LISTED:
            lines += [f'{outcome.upper()} here, RAN under stdlib: {test_id}: {why}' for test_id in ids]
        else:
            shown = ', '.join(ids[:MAX_LISTED])
            lines.append(
                f'{outcome.upper()} here, RAN under stdlib: {len(ids)} tests: {why}: {shown} ... '
                f'(and {len(ids) - MAX_LISTED} more)'
            )
    ok = not lines
    head = f'{result.target}: {label(result.suite, result.method)}: {result.describe()} ({result.duration:.0f} s)' + (
        f'; stdlib: {reference.describe()}' if reference is not None else ''
    )
    text = [head, f'$ {subprocess.list2cmdline(result.command)}', f'log: {result.log}', *lines]
    if result.rerun is not None:
        text.append(f're-run of what failed: {result.rerun.describe()}, log: {result.rerun.log}')
    text += [f'FLAKY (failed, passed when re-run) {test_id}: {short_error(d)}' for test_id, d in result.flaky.items()]
    # The full tracebacks, last: the summary lines above say what, these say where.
    for test_id in result.failed:
        t = result.failure(test_id)
        text.append(f'--- {test_id}\n{t.detail.rstrip()}')
    for name, excerpt in result.excerpts.items():
        text.append(
            f"--- {name} did not finish: the running test's output, and where it was (the log has all)\n{excerpt}"
        )
    return ok, '\n'.join(text)
