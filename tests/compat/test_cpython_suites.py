"""CPython's complete multiprocessing suites, run by regrtest under ``python -m procstart run`` (issue 13).

The promise of ``procstart.install()`` / ``python -m procstart run``: a program using stdlib ``multiprocessing`` runs
unchanged, with procstart starting its processes. The bar is CPython's own suites, whole, for every start method:

* ``test_multiprocessing_fork``, ``test_multiprocessing_spawn``, ``test_multiprocessing_forkserver`` (every test
  type: processes, threads, manager, and the module-level tests);
* ``test_multiprocessing_main_handling``, per start method (its ``<Method>CmdLineTest`` class);
* ``test_concurrent_futures``'s process-pool part, per start method (every ``ProcessPool<Method>*`` class).

Each is a test ``(suite, method, target)``: target ``procstart`` runs ``python -m procstart run -m test ...``, target
``stdlib`` the same ``python -m test ...`` (the reference). A run fails for any failure or error, any test file
regrtest reports as "env changed", a crash or a hang; a procstart run also for every test its stdlib reference ran
(passed or failed) that it skipped or did not run. As in CPython's own CI (regrtest's ``--rerun``), the tests that
failed in a run that finished, a few of them (``cpython_suites.MAX_RERUN``), are run once more, under both targets
alike: one that passes then is flaky, not failed, and is named in the session summary (``FLAKY`` lines, ``N flaky``
in the version's line); these runs share 2 cores four at a time, and CPython's timing tests (its 3.14 forkserver
suite, say) sometimes fail under stdlib itself there. The failure message names each test with its exception, then
the full tracebacks, and the command and the log to look further.

How the suites are found (the interpreter's ``test`` package, generated thin modules, Debian's
``libpython3.X-testsuite``), how regrtest is run and how its outcome is read: cpython_suites.py. Every run's
``-v`` log and ``--junit-xml`` stay in ``.venv-suites/<python version>/runs/`` after the session (replaced by the
next one).

test_multiprocessing_main_handling's tests run each script in a fresh interpreter: for the procstart target the
script is run as ``python -m procstart run SCRIPT`` (``cpython_suites.MAIN_HANDLING_VIA_RUN``); ``procstart run -m
test`` alone would leave those scripts to plain ``python``. Other fresh interpreters that CPython's tests start
(``assert_python_ok`` programs, ``TestFlags``, the resource tracker tests' ``-c`` programs) are plain ``python`` under
both targets, as for any program that ``python -m procstart run`` runs.

Time: these runs are long (minutes each, mostly the tests' own sleeps and timeouts): they are marked ``slow`` and
``suites`` (``-m 'not suites'`` leaves them out; ``-m suites`` runs only them). The runs of one session start at
its first suites test, :data:`JOBS` at a time, longest first, each regrtest run with :data:`REGRTEST_JOBS` workers;
a procstart test also waits for its stdlib reference (run even when that test is deselected).
``PROCSTART_SUITES_JOBS`` and ``PROCSTART_SUITES_REGRTEST_JOBS`` override them. On CPython 3.11, about every other
session one of the six test_multiprocessing runs (either target) spends 300 s in ``WithThreadsTestPool.test_terminate``:
a race of that test (a thread pool's worker that takes a ``time.sleep(LONG_TIMEOUT)`` task before ``terminate()``
cannot be stopped; later CPythons sleep 1 s there), which then sets the session's wall time (about 5 minutes).
"""

import concurrent.futures
import os
import sys
import threading

import _sem_open
import cpython_suites as suites
import pytest

# Runs at once, and regrtest's -j per run (0: the tests in regrtest's own process). The tests mostly sleep and wait
# (a run keeps about a third of a core busy): on 2 cores (CPython 3.11.7), 4 runs of -j 2 took 171 s for the 18 runs,
# 4 serial runs 205 s, 2 serial runs 327 s, one at a time 631 s (the README has the table).
JOBS = int(os.environ.get('PROCSTART_SUITES_JOBS', str(2 * (os.cpu_count() or 1))))
REGRTEST_JOBS = int(os.environ.get('PROCSTART_SUITES_REGRTEST_JOBS', '2'))
# regrtest's --timeout, for one test file (then faulthandler dumps every thread's stack and the file fails): as
# CPython's CI (--fast-ci); the longest file takes 1-2 minutes here.
FILE_TIMEOUT = int(os.environ.get('PROCSTART_SUITES_FILE_TIMEOUT', '600'))

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.join(REPO, '.venv-suites', sys.version.split()[0])

# Durations of a run alone (seconds, regrtest -j 2, CPython 3.11.7, 2 cores), to start the longest runs first.
WEIGHT = {
    'test_multiprocessing_spawn': 53,
    'test_multiprocessing_forkserver': 50,
    'test_multiprocessing_fork': 36,
    suites.FUTURES: 33,
    suites.MAIN_HANDLING: 3,
}

PARAMS = [
    pytest.param(suite, method, target, id=f'{suite}-{method}-{target}')
    for suite in suites.SUITES
    for method in suites.suite_methods(suite)
    for target in suites.TARGETS
]

pytestmark = [pytest.mark.slow, pytest.mark.suites, pytest.mark.timeout(0)]

# (suite, method, target) -> RunResult, as the runs end; the session summary (tests/_summary.py) reads it.
SUITE_RESULTS = {}
SUITE_SOURCES = {}
SUITE_NOTES = []


class _Runs:
    """The session's regrtest runs: started together, awaited by each test."""

    def __init__(self, keys):
        self.interpreter = suites.SuiteInterpreter(ROOT)
        SUITE_SOURCES.update(self.interpreter.sources)
        jobs = REGRTEST_JOBS if suites.regrtest_has_python_option() else 0
        keys = [k for k in keys if k[0] not in self.interpreter.missing]
        keys += [(s, m, 'stdlib') for s, m, t in keys if t == 'procstart' and (s, m, 'stdlib') not in keys]
        keys.sort(key=lambda k: -WEIGHT[k[0]])
        self._semaphores = _semaphores()
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, JOBS), thread_name_prefix='suite-run')
        self._lock = threading.Lock()
        self._futures = {k: self._pool.submit(self._run, k, jobs) for k in keys}

    def _run(self, key, jobs):
        result = self.interpreter.run(*key, jobs=jobs, file_timeout=FILE_TIMEOUT)
        with self._lock:
            SUITE_RESULTS[key] = result
        return result

    def result(self, key):
        return self._futures[key].result()

    def close(self):
        if not all(f.done() for f in self._futures.values()):  # interrupted, or -x: no one waits for the rest
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.interpreter.stop()
        self._pool.shutdown(wait=True)
        # CPython's suites leave named semaphores in /dev/shm, under stdlib too (3.11: test_many_processes of
        # test_multiprocessing_forkserver, its processes terminated as they start). Those that appeared during the
        # runs and that no process has open are removed, and named in the summary: the session's leak check is about
        # procstart's own tests.
        for name in _sem_open.remove_unheld(_semaphores() - self._semaphores):
            SUITE_NOTES.append(f'left in /dev/shm by the runs (no process has it open), removed: {name}')


def _semaphores():
    try:
        return {name for name in os.listdir('/dev/shm') if name.startswith('sem.')}
    except FileNotFoundError:
        return set()


@pytest.fixture(scope='module')
def runs(request):
    keys = [
        (item.callspec.params['suite'], item.callspec.params['method'], item.callspec.params['target'])
        for item in request.session.items
        if item.module is request.module and hasattr(item, 'callspec')
    ]
    runs = _Runs(keys)
    yield runs
    runs.close()


@pytest.fixture
def _leak_check():
    """Not the per-test leak check (tests/conftest.py): the runs of later tests are this process's children while
    earlier tests end. The session-level check still holds, once every run has ended."""
    yield


@pytest.mark.parametrize(('suite', 'method', 'target'), PARAMS)
def test_suite(suite, method, target, runs):
    why = runs.interpreter.missing.get(suite)
    if why:
        pytest.skip(why)
    result = runs.result((suite, method, target))
    reference = runs.result((suite, method, 'stdlib')) if target == 'procstart' else None
    ok, text = suites.report(result, reference)
    if not ok:
        pytest.fail(text, pytrace=False)


# -- the session summary (tests/_summary.py) -------------------------------------------------------------------------


def summary_lines():
    """One line per suite and method: procstart's counts beside stdlib's."""
    lines = []
    for suite in suites.SUITES:
        for method in suites.suite_methods(suite):
            parts = []
            for target in suites.TARGETS:
                result = SUITE_RESULTS.get((suite, method, target))
                if result is not None:
                    parts.append(f'{target} {result.describe()} ({result.duration:.0f} s)')
            if parts:
                lines.append(f'suite {suites.label(suite, method)}: ' + ' | '.join(parts))
            for target in suites.TARGETS:
                result = SUITE_RESULTS.get((suite, method, target))
                for test_id, detail in (result.flaky if result is not None else {}).items():
                    lines.append(
                        f'suite {suites.label(suite, method)}: {target}: FLAKY (failed, passed when re-run): {test_id}: '
                        f'{suites.short_error(detail)}'
                    )
    ran = {key[0] for key in SUITE_RESULTS}
    lines += [f'suite {name}: from {source}' for name, source in SUITE_SOURCES.items() if name in ran]
    return lines + SUITE_NOTES


def summary_short():
    """The per-version line's part: clean runs per target, and procstart's failures (``suites procstart 6/9 clean, 3
    failed, 1 env changed; stdlib 9/9 clean``)."""
    parts = []
    for target in suites.TARGETS:
        results = [r for k, r in SUITE_RESULTS.items() if k[2] == target]
        if not results:
            continue
        clean = sum(
            suites.report(r, SUITE_RESULTS.get((r.suite, r.method, 'stdlib')) if r.target == 'procstart' else None)[0]
            for r in results
        )
        text = f'{target} {clean}/{len(results)} clean'
        failed = sum(len(r.failed) for r in results)
        env = sum(len(r.env_changed) for r in results)
        unfinished = sum(not r.finished for r in results)
        flaky = sum(len(r.flaky) for r in results)
        text += ''.join(
            f', {n} {what}'
            for n, what in ((failed, 'failed'), (env, 'env changed'), (unfinished, 'unfinished'), (flaky, 'flaky'))
            if n
        )
        parts.append(text)
    return 'suites ' + '; '.join(parts) if parts else ''
