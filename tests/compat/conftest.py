"""tests/compat: CPython's own multiprocessing and concurrent.futures tests run against procstart (see
test_cpython_processes.py, test_cpython_futures.py).

* puts tests/compat on ``sys.path`` (spawned children import the generated test classes, ``_compat_binding`` and
  ``_cpython_futures`` by name; they receive the parent's ``sys.path``);
* marks every test here ``compat``, and those in the per-class ``COMPAT_SLOW`` tables ``slow``.

The summary of their outcomes per start method is tests/_summary.py's.

``PROCSTART_TEST_TARGET=stdlib`` runs the same harness against stdlib ``multiprocessing`` (reference run).

The leak checks of tests/conftest.py apply here too.
"""

import os
import sys

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
