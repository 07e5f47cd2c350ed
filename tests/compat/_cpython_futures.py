"""CPython's ``concurrent.futures`` tests from Debian's ``libpython3.X-testsuite``, importable by one name everywhere.

For an interpreter whose own ``test`` package lacks ``test_concurrent_futures`` (while it has ``test.support``, which
serves the file's imports): importing this module *becomes* importing Debian's file (3.11) or package (3.12 and
later) of the same Python version, executed under this module's name. Everything CPython's tests define (``mul``,
``_crash``, ``sleep_and_print`` ...) is then pickled by reference as ``_cpython_futures...``, a name that resolves in
the pytest process, in spawn and forkserver children (tests/compat is on the ``sys.path`` they receive) and in the fresh
interpreters of ``assert_python_ok`` (whose programs are given tests/compat on ``sys.path`` and this name, see
test_cpython_futures.py). The name ``test.test_concurrent_futures`` could not do that: ``test`` is the interpreter's
package, and a child does not receive a ``test.__path__`` extended in the parent.

Nothing of CPython's is copied here.
"""

import importlib.util
import os
import sys

from cpython_testsuite import DEBIAN_FUTURES


def _spec():
    init = os.path.join(DEBIAN_FUTURES, '__init__.py')
    if os.path.isfile(init):
        return importlib.util.spec_from_file_location(__name__, init, submodule_search_locations=[DEBIAN_FUTURES])
    if os.path.isfile(DEBIAN_FUTURES + '.py'):
        return importlib.util.spec_from_file_location(__name__, DEBIAN_FUTURES + '.py')
    raise ModuleNotFoundError(f'neither {DEBIAN_FUTURES}.py nor {DEBIAN_FUTURES}/ exists', name=__name__)


_module = importlib.util.module_from_spec(_spec())
# The import system returns what sys.modules holds under this name once the module body has run.
sys.modules[__name__] = _module
_module.__spec__.loader.exec_module(_module)
