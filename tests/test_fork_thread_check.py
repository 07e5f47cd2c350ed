"""procstart extension: starting a fork child while other threads run warns once, naming the threads
(``procstart.set_fork_thread_check('warn' | 'error' | 'ignore')``)."""

import threading
import warnings

import _targets
import pytest
from _support import IS_STDLIB, finish, run_process

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension')


@pytest.fixture
def other_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name='busy-worker')
    thread.start()
    yield thread
    stop.set()
    thread.join()


def test_warns_once_naming_the_threads(mp, fork_thread_check, other_thread):
    fork_thread_check('warn')
    ctx = mp.get_context('fork')
    p = ctx.Process(target=_targets.noop)
    with pytest.warns(RuntimeWarning) as record:
        p.start()
    finish(p)
    (warning,) = record
    message = str(warning.message)
    assert "'busy-worker'" in message and "'forkserver'" in message and "'spawn'" in message
    assert "set_fork_thread_check('ignore')" in message
    assert warning.filename == __file__  # points at the caller of start()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        run_process(ctx, _targets.noop)  # once per process


def test_error_refuses_before_starting_anything(mp, fork_thread_check, other_thread):
    fork_thread_check('error')
    p = mp.get_context('fork').Process(target=_targets.noop)
    with pytest.raises(RuntimeError, match="other threads run \\('busy-worker'\\)"):
        p.start()
    assert p.pid is None and mp.active_children() == []


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
def test_other_methods_are_not_checked(mp, fork_thread_check, other_thread, method):
    fork_thread_check('error')
    assert run_process(mp.get_context(method), _targets.noop).exitcode == 0


def test_ignore_and_single_thread_are_silent(mp, fork_thread_check, other_thread):
    ctx = mp.get_context('fork')
    fork_thread_check('ignore')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        run_process(ctx, _targets.noop)


def test_no_other_thread_no_warning(mp, fork_thread_check):
    fork_thread_check('error')
    assert run_process(mp.get_context('fork'), _targets.noop).exitcode == 0


def test_get_and_bad_mode(mp, fork_thread_check):
    assert mp.get_fork_thread_check() == 'warn'
    fork_thread_check('ignore')
    assert mp.get_fork_thread_check() == 'ignore'
    for bad in ('loud', None, 1):
        with pytest.raises(ValueError, match="fork thread check must be 'warn', 'error' or 'ignore', not "):
            mp.set_fork_thread_check(bad)
    assert mp.get_fork_thread_check() == 'ignore'
