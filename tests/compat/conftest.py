"""tests/compat: CPython's own multiprocessing tests run against procstart (see test_cpython_processes.py).

* puts tests/compat on ``sys.path`` (spawned children import the generated test classes and ``_compat_binding`` by
  name; they receive the parent's ``sys.path``);
* turns the per-class ``COMPAT_SLOW`` table into pytest marks;
* prints, at the end of the session, a per-start-method count (``compat fork: 45 passed, 3 skipped, ...``).

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
_method_of = {}  # nodeid -> start method
_outcome_of = {}  # nodeid -> worst outcome over its phases
_errors = set()  # nodeids that failed outside the call phase (setup/teardown, e.g. a leak check)


def pytest_collection_modifyitems(config, items):
    for item in items:
        cls = getattr(item, 'cls', None)
        method = getattr(cls, 'COMPAT_START_METHOD', None)
        if method is None:
            continue
        _method_of[item.nodeid] = method
        if item.name in cls.COMPAT_SLOW:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report):
    if report.nodeid not in _method_of:
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


def pytest_terminal_summary(terminalreporter):
    if not _outcome_of:
        return
    binding = sys.modules.get('_compat_binding')
    target = getattr(getattr(binding, 'target', None), '__name__', '?')
    terminalreporter.write_sep('-', f'CPython test._test_multiprocessing against {target}')
    for method in sorted(set(_method_of.values()), key=('fork', 'spawn', 'forkserver').index):
        nodeids = [n for n, m in _method_of.items() if m == method and n in _outcome_of]
        counts = dict.fromkeys(_OUTCOMES, 0)
        for nodeid in nodeids:
            counts[_outcome_of[nodeid]] += 1
        parts = [f'{counts["passed"]} passed', f'{counts["skipped"]} skipped', f'{counts["xfailed"]} xfailed']
        if counts['xpassed']:
            parts.append(f'{counts["xpassed"]} xpassed')
        errors = sum(1 for n in nodeids if n in _errors)
        parts.append(f'{counts["failed"]} failed' + (f' ({errors} in setup/teardown)' if errors else ''))
        terminalreporter.write_line(f'compat {method}: ' + ', '.join(parts))
    module = sys.modules.get('test_cpython_processes')
    absent = getattr(module, 'ABSENT', ())
    if absent:
        version = '.'.join(map(str, sys.version_info[:3]))
        terminalreporter.write_line(f'compat: not in CPython {version}, not run: {", ".join(absent)}')
