"""tests/compat: CPython's own multiprocessing and concurrent.futures tests run against procstart (see
test_cpython_processes.py, test_cpython_futures.py).

* puts tests/compat on ``sys.path`` (spawned children import the generated test classes, ``_compat_binding`` and
  ``_cpython_futures`` by name; they receive the parent's ``sys.path``);
* marks every test here ``compat``, and those in the per-class ``COMPAT_SLOW`` tables ``slow``.

The summary of their outcomes per start method is tests/_summary.py's.

``PROCSTART_TEST_TARGET=stdlib`` runs the same harness against stdlib ``multiprocessing`` (reference run).

The leak checks of tests/conftest.py apply here too, but for glibc's sem_open() temporary files left by processes
CPython's tests kill as they start (``_sem_open.py``).
"""

import os
import sys

import _sem_open
import pytest

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))
if COMPAT_DIR not in sys.path:
    sys.path.insert(0, COMPAT_DIR)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.dirname(str(item.path)) != COMPAT_DIR:
            continue
        item.add_marker(pytest.mark.compat)
        if item.name in getattr(item.cls, 'COMPAT_SLOW', ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _sem_open_leftovers_removed(request, _leak_check):
    # After _leak_check: torn down before it, so that its check runs once these are gone.
    before = _sem_open.temporaries()
    yield
    _sem_open.remove_new(before, request.node.nodeid)


def pytest_terminal_summary(terminalreporter):
    for leftover in _sem_open.REMOVED:
        terminalreporter.write_line(f'sem_open() temporary file left by a killed process, removed: {leftover}')
