"""procstart's pytest plugin (``procstart.pytest_plugin``), run as a user's test suite gets it: in pytest sessions
of their own (pytester, each in a fresh interpreter).

Those sessions load the plugin through the ``pytest11`` entry point where procstart is installed, and with
``-p procstart.pytest_plugin`` when it is run from the source tree.
"""

import os
import subprocess
import sys

import pytest
from _support import CHILD_TIMEOUT, IS_STDLIB
from procstart import get_all_start_methods, pytest_plugin

pytest_plugins = ['pytester']

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension: its pytest plugin')


@pytest.fixture
def run_session(pytester, pytestconfig):
    """``run_session(*args)``: pytest on the files made in ``pytester.path``, in a fresh interpreter."""
    by_entry_point = any(plugin is pytest_plugin for plugin, _ in pytestconfig.pluginmanager.list_plugin_distinfo())
    load = [] if by_entry_point else ['-p', 'procstart.pytest_plugin']

    def run(*args):
        return pytester.runpytest_subprocess(*load, *args, timeout=120)

    return run


def test_start_method_runs_the_test_once_per_method(pytester, run_session):
    # Listed by a conftest as well: the plugin must be registered once, and the fixture parametrised once.
    pytester.makeconftest("pytest_plugins = ['procstart.pytest_plugin']")
    pytester.makepyfile(
        """
        import procstart
        import pytest

        def test_method(start_method):
            assert start_method in procstart.get_all_start_methods()

        @pytest.mark.parametrize('start_method', ['spawn'])
        def test_spawn_only(start_method):
            assert start_method == 'spawn'
        """
    )
    result = run_session('-v')
    methods = pytest_plugin.START_METHODS
    assert sorted(methods) == sorted(get_all_start_methods())
    passed = [line.split('::')[1].split()[0] for line in result.stdout.lines if ' PASSED ' in line]
    assert passed == [f'test_method[{method}]' for method in methods] + ['test_spawn_only[spawn]']
    result.assert_outcomes(passed=len(passed))


def test_clean_tests_pass_and_helpers_are_not_leaks(pytester, run_session):
    # A fresh interpreter: the fork servers, resource trackers, heap arena and procstart's devnull reader are all
    # made during these tests, and outlive them.
    pytester.makepyfile(
        """
        import multiprocessing
        import procstart
        import pytest

        def put(q, value):
            q.put(value)

        @pytest.mark.parametrize('mp', [procstart, multiprocessing], ids=['procstart', 'stdlib'])
        def test_start_and_join(no_process_leaks, start_method, mp):
            ctx = mp.get_context(start_method)
            q = ctx.Queue()
            value = ctx.Value('i', 7)
            p = ctx.Process(target=put, args=(q, value.value))
            p.start()
            assert q.get(timeout=60) == 7
            p.join()
            q.close()
            q.join_thread()
        """
    )
    result = run_session()
    result.assert_outcomes(passed=2 * len(get_all_start_methods()))


def test_leaks_fail_the_test_and_are_named(pytester, run_session):
    pytester.makeini('[pytest]\nprocstart_leak_timeout = 0.2\n')
    pytester.makepyfile(
        """
        import multiprocessing
        import os
        import time
        import procstart

        KEPT = []

        def record(name, value):
            with open(name, 'w') as f:
                f.write(str(value))

        def test_live_child(no_process_leaks):
            p = procstart.get_context('fork').Process(target=time.sleep, args=(60,))
            p.start()
            record('child', p.pid)

        def test_zombie(no_process_leaks):
            p = multiprocessing.get_context('fork').Process(target=int)
            p.start()
            KEPT.append(p)
            record('zombie', p.pid)
            while open(f'/proc/{p.pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z':
                time.sleep(0.01)

        def test_fd(no_process_leaks):
            record('fd', os.pipe()[0])

        def test_semaphore(no_process_leaks):
            lock = procstart.get_context('spawn').Lock()
            KEPT.append(lock)
            record('semaphore', lock._semlock.name)
        """
    )
    result = run_session()
    result.assert_outcomes(passed=4, errors=4)

    def recorded(name):
        return (pytester.path / name).read_text()

    result.stdout.fnmatch_lines(
        [
            '*no_process_leaks: test_live_child left behind:',
            f'*child process still running: {recorded("child")} (*python*)',
            '*no_process_leaks: test_zombie left behind:',
            f'*zombie child (not reaped): {recorded("zombie")} (*)',
            '*no_process_leaks: test_fd left behind:',
            f'*file descriptor {recorded("fd")} -> pipe:*',
            '*no_process_leaks: test_semaphore left behind:',
            f'*named semaphore /dev/shm/sem.{recorded("semaphore").lstrip("/")}',
        ]
    )
    # Stopped and reaped once reported: the later tests are not blamed for them. (Counted in the error reports
    # only: the short summary repeats each report's lines where pytest does not truncate them, as under CI=true.)
    reports = result.stdout.str().split('short test summary info')[0]
    assert reports.count('child process still running') == 1
    assert reports.count('zombie child') == 1


# Holds a new named semaphore from when the file argv[2] appears (then makes argv[3]) until its stdin closes.
SEMAPHORE_HOLDER = """
import _multiprocessing, os, select, sys
name, trigger, ready = sys.argv[1:]
while not os.path.exists(trigger):
    if select.select([sys.stdin], [], [], 0.01)[0]:  # closed before: nothing to hold
        sys.exit()
semaphore = _multiprocessing.SemLock(1, 1, 1, name, False)
open(ready, 'w').close()
sys.stdin.read()
_multiprocessing.sem_unlink(name)
"""


def test_semaphores_of_others_are_not_blamed(pytester, run_session):
    # /dev/shm is the machine's: what another process tree or another user makes meanwhile is not the test's.
    held = f'/procstart-plugin-test-held-{os.getpid()}'
    other_users = f'/dev/shm/sem.procstart-plugin-test-other-user-{os.getpid()}'
    trigger, ready = pytester.path / 'trigger', pytester.path / 'ready'
    pytester.makepyfile(
        f"""
        import os
        import time
        import pytest

        def test_held_by_another_tree(no_process_leaks):
            open({str(trigger)!r}, 'w').close()
            while not os.path.exists({str(ready)!r}):
                time.sleep(0.01)

        @pytest.mark.skipif(os.getuid() != 0, reason='only root can give a file away')
        def test_another_users(no_process_leaks):
            with open({other_users!r}, 'w') as f:
                os.fchown(f.fileno(), 65534, 65534)
        """
    )
    holder = subprocess.Popen([sys.executable, '-c', SEMAPHORE_HOLDER, held, trigger, ready], stdin=subprocess.PIPE)
    try:
        result = run_session()
    finally:
        holder.communicate(timeout=CHILD_TIMEOUT)
        if os.path.exists(other_users):
            os.unlink(other_users)
    root = os.getuid() == 0
    result.assert_outcomes(passed=1 + root, skipped=1 - root)


def test_a_session_without_its_fixtures_is_unaffected(pytester, run_session):
    pytester.makepyfile(
        """
        import os
        import subprocess
        import sys
        import pytest

        def test_loaded_and_inert(request):
            assert request.config.pluginmanager.has_plugin('procstart.pytest_plugin')
            assert 'multiprocessing' not in sys.modules
            with pytest.raises(ChildProcessError):  # no child processes at all
                os.waitpid(-1, os.WNOHANG)

        def test_leaks_unchecked():
            os.pipe()
            subprocess.Popen([sys.executable, '-c', 'pass'])
        """
    )
    result = run_session('-v')
    result.assert_outcomes(passed=2)
