"""tests/compat: CPython's own multiprocessing and concurrent.futures tests run against procstart (see
test_cpython_processes.py, test_cpython_futures.py).

* puts tests/compat on ``sys.path`` (spawned children import the generated test classes, ``_compat_binding`` and
  ``_cpython_futures`` by name; they receive the parent's ``sys.path``);
* turns the per-class ``COMPAT_SLOW`` table into pytest marks;
* prints, at the end of the session, per test module (its ``SUMMARY_TITLE``) a per-start-method count under the
  module's ``SUMMARY_LABEL`` (``compat fork: 45 passed, 3 skipped, ...``, ``compat futures fork: ...``), and, loudly,
  every compat test module that skipped as a whole, with its reason (CPython's tests not installed ...).

``PROCSTART_TEST_TARGET=stdlib`` runs the same harness against stdlib ``multiprocessing`` (reference run).

The leak checks of tests/conftest.py apply here too.
"""

import os
import sys

import pytest

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))
if COMPAT_DIR not in sys.path:
    sys.path.insert(0, COMPAT_DIR)

_OUTCOMES = ('passed', 'skipped', 'xfailed', 'xpassed', 'failed')
_RANK = {outcome: i for i, outcome in enumerate(_OUTCOMES)}
_suite_of = {}  # nodeid -> (test module, start method)
_outcome_of = {}  # nodeid -> worst outcome over its phases
_errors = set()  # nodeids that failed outside the call phase (setup/teardown, e.g. a leak check)
_not_run = {}  # nodeid of a compat test module skipped as a whole -> reason


def pytest_collectreport(report):
    path = report.nodeid.split('::')[0]
    if report.skipped and path.endswith('.py') and os.path.dirname(os.path.abspath(path)) == COMPAT_DIR:
        _not_run[report.nodeid] = report.longrepr[2].removeprefix('Skipped: ')


def pytest_collection_modifyitems(config, items):
    for item in items:
        cls = getattr(item, 'cls', None)
        method = getattr(cls, 'COMPAT_START_METHOD', None)
        if method is None:
            continue
        _suite_of[item.nodeid] = (item.module, method)
        if item.name in cls.COMPAT_SLOW:
            item.add_marker(pytest.mark.slow)


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
    parts = [f'{counts["passed"]} passed', f'{counts["skipped"]} skipped', f'{counts["xfailed"]} xfailed']
    if counts['xpassed']:
        parts.append(f'{counts["xpassed"]} xpassed')
    errors = sum(1 for n in nodeids if n in _errors)
    parts.append(f'{counts["failed"]} failed' + (f' ({errors} in setup/teardown)' if errors else ''))
    return ', '.join(parts)


def pytest_terminal_summary(terminalreporter):
    binding = sys.modules.get('_compat_binding')
    target = getattr(getattr(binding, 'target', None), '__name__', '?')
    for module in dict.fromkeys(module for module, _ in _suite_of.values()):
        ran = {n: m for n, (mod, m) in _suite_of.items() if mod is module and n in _outcome_of}
        if not ran:
            continue
        terminalreporter.write_sep('-', f'{module.SUMMARY_TITLE} against {target}')
        for method in sorted(set(ran.values()), key=('fork', 'spawn', 'forkserver').index):
            nodeids = [n for n, m in ran.items() if m == method]
            terminalreporter.write_line(f'{module.SUMMARY_LABEL} {method}: {_counts(nodeids)}')
        for line in module.SUMMARY_NOTES:
            terminalreporter.write_line(line)
    for nodeid, reason in _not_run.items():
        terminalreporter.write_sep('!', f'compat: {nodeid} NOT RUN', red=True, bold=True)
        terminalreporter.write_line(reason, red=True, bold=True)
