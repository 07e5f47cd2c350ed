"""The session summary, a pytest plugin of the suite (tests/conftest.py registers it).

* Per CPython test module of tests/compat (its ``SUMMARY_TITLE``), a count per start method under the module's
  ``SUMMARY_LABEL`` (``compat fork: 45 passed, 3 skipped, ...``, ``compat futures fork: ...``), and, loudly, every
  compat test module that skipped as a whole, with its reason (CPython's tests not installed ...).
* CPython's complete suites run by regrtest (tests/compat/test_cpython_suites.py, marker ``suites``): one line per
  suite and start method, procstart's counts beside stdlib's (``suite test_multiprocessing_spawn: procstart 343
  passed 36 skipped 1 failed 0 env changed (120 s) | stdlib 344 passed ...``).
* Last, one line for the whole run on this interpreter (``python 3.14.1: 1302 passed, 0 failed, 41 skipped;
  compat fork 48/55 ...; suites procstart 7/9 clean, 3 failed; stdlib 9/9 clean``), also appended to the file
  ``PROCSTART_SUMMARY_FILE`` names, where .ci/versions collects the lines of every version it runs.

A compat test is one whose class has ``COMPAT_START_METHOD``; its module's summary attributes are read from it.
"""

import os
import sys

import pytest

COMPAT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'compat')
METHODS = ('fork', 'spawn', 'forkserver')

_OUTCOMES = ('passed', 'skipped', 'xfailed', 'xpassed', 'failed')
_RANK = {outcome: i for i, outcome in enumerate(_OUTCOMES)}
_suite_of = {}  # nodeid -> (test module, start method)
_outcome_of = {}  # nodeid -> worst outcome over its phases
_errors = set()  # nodeids that failed outside the call phase (setup/teardown, e.g. a leak check)
_not_run = {}  # nodeid of a compat test module skipped as a whole -> reason
_suite_modules = {}  # test modules of CPython's complete suites (they have ``summary_lines``), in collection order


def pytest_collectreport(report):
    path = report.nodeid.split('::')[0]
    if report.skipped and path.endswith('.py') and os.path.dirname(os.path.abspath(path)) == COMPAT_DIR:
        _not_run[report.nodeid] = report.longrepr[2].removeprefix('Skipped: ')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if hasattr(getattr(item, 'module', None), 'summary_lines'):
            _suite_modules[item.module] = None
        cls = getattr(item, 'cls', None)
        method = getattr(cls, 'COMPAT_START_METHOD', None)
        if method is not None:
            _suite_of[item.nodeid] = (item.module, method)


def pytest_runtest_logreport(report):
    if report.nodeid not in _suite_of:
        return
    if report.failed:
        outcome = 'failed'
        if report.when != 'call':
            _errors.add(report.nodeid)
    elif report.skipped:
        outcome = 'xfailed' if hasattr(report, 'wasxfail') else 'skipped'
    elif report.when == 'call':
        outcome = 'xpassed' if hasattr(report, 'wasxfail') else 'passed'
    else:
        return
    previous = _outcome_of.get(report.nodeid)
    if previous is None or _RANK[outcome] > _RANK[previous]:
        _outcome_of[report.nodeid] = outcome


def _counts(nodeids):
    counts = dict.fromkeys(_OUTCOMES, 0)
    for nodeid in nodeids:
        counts[_outcome_of[nodeid]] += 1
    return counts


def _describe(nodeids):
    counts = _counts(nodeids)
    parts = [f'{counts["passed"]} passed', f'{counts["skipped"]} skipped', f'{counts["xfailed"]} xfailed']
    if counts['xpassed']:
        parts.append(f'{counts["xpassed"]} xpassed')
    errors = sum(1 for n in nodeids if n in _errors)
    parts.append(f'{counts["failed"]} failed' + (f' ({errors} in setup/teardown)' if errors else ''))
    return ', '.join(parts)


def _compat_suites():
    """(module, {method: [nodeid, ...]}) per compat test module that ran, in collection order."""
    for module in dict.fromkeys(module for module, _ in _suite_of.values()):
        ran = {n: m for n, (mod, m) in _suite_of.items() if mod is module and n in _outcome_of}
        if ran:
            by_method = {m: [n for n, nm in ran.items() if nm == m] for m in METHODS if m in ran.values()}
            yield module, by_method


def _version_line(terminalreporter):
    stats = terminalreporter.stats
    count = {key: len(stats.get(key, ())) for key in ('passed', 'failed', 'error', 'skipped')}
    line = f'python {sys.version.split()[0]}: {count["passed"]} passed, {count["failed"] + count["error"]} failed, '
    line += f'{count["skipped"]} skipped'
    for module, by_method in _compat_suites():
        per_method = []
        for method, nodeids in by_method.items():
            counts = _counts(nodeids)
            ran = len(nodeids) - counts['skipped']
            per_method.append(f'{method} {counts["passed"]}/{ran}')
        line += f'; {module.SUMMARY_LABEL} ' + ' '.join(per_method)
    for module in _suite_modules:
        short = module.summary_short()
        if short:
            line += f'; {short}'
    for nodeid in _not_run:
        line += f'; NOT RUN {nodeid}'
    return line


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    binding = sys.modules.get('_compat_binding')
    target = getattr(getattr(binding, 'target', None), '__name__', '?')
    for module, by_method in _compat_suites():
        terminalreporter.write_sep('-', f'{module.SUMMARY_TITLE} against {target}')
        for method, nodeids in by_method.items():
            terminalreporter.write_line(f'{module.SUMMARY_LABEL} {method}: {_describe(nodeids)}')
        for line in module.SUMMARY_NOTES:
            terminalreporter.write_line(line)
    for module in _suite_modules:
        lines = module.summary_lines()
        if lines:
            terminalreporter.write_sep('-', "CPython's complete multiprocessing suites (regrtest): procstart | stdlib")
            for line in lines:
                terminalreporter.write_line(line)
    for nodeid, reason in _not_run.items():
        terminalreporter.write_sep('!', f'compat: {nodeid} NOT RUN', red=True, bold=True)
        terminalreporter.write_line(reason, red=True, bold=True)
    line = _version_line(terminalreporter)
    terminalreporter.write_sep('=', line, bold=True)
    summary_file = os.environ.get('PROCSTART_SUMMARY_FILE')
    if summary_file:
        with open(summary_file, 'a') as f:
            f.write(line + '\n')
