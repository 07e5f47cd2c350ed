"""procstart extension: starting a fork child while other threads run warns once, naming the threads
(``procstart.set_fork_thread_check('warn' | 'error' | 'ignore')``)."""

import threading
import warnings

import _targets
import pytest
from _support import IS_STDLIB, finish

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension')


@pytest.fixture
def check_mode(mp):
    """Sets the mode for the test (re-arming the warning) and restores the default after it."""
    yield mp.set_fork_thread_check
    mp.set_fork_thread_check('warn')


@pytest.fixture
def other_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name='busy-worker')
    thread.start()
    yield thread
    stop.set()
    thread.join()


def _start(ctx):
    p = ctx.Process(target=_targets.noop)
    p.start()
    finish(p)
    return p


def test_warns_once_naming_the_threads(mp, check_mode, other_thread):
    check_mode('warn')
    ctx = mp.get_context('fork')
    with pytest.warns(RuntimeWarning) as record:
        _start(ctx)
    (warning,) = record
    message = str(warning.message)
    assert "'busy-worker'" in message and "'forkserver'" in message and "'spawn'" in message
    assert "set_fork_thread_check('ignore')" in message
    assert warning.filename == __file__  # points at the caller of start()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _start(ctx)  # once per process


def test_error_refuses_before_starting_anything(mp, check_mode, other_thread):
    check_mode('error')
    p = mp.get_context('fork').Process(target=_targets.noop)
    with pytest.raises(RuntimeError, match="other threads run \\('busy-worker'\\)"):
        p.start()
    assert p.pid is None and mp.active_children() == []


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
def test_other_methods_are_not_checked(mp, check_mode, other_thread, method):
    check_mode('error')
    assert _start(mp.get_context(method)).exitcode == 0


def test_ignore_and_single_thread_are_silent(mp, check_mode, other_thread):
    ctx = mp.get_context('fork')
    check_mode('ignore')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _start(ctx)


def test_no_other_thread_no_warning(mp, check_mode):
    check_mode('error')
    assert _start(mp.get_context('fork')).exitcode == 0


def test_get_and_bad_mode(mp, check_mode):
    assert mp.get_fork_thread_check() == 'warn'
    check_mode('ignore')
    assert mp.get_fork_thread_check() == 'ignore'
    for bad in ('loud', None, 1):
        with pytest.raises(ValueError, match="fork thread check must be 'warn', 'error' or 'ignore', not "):
            mp.set_fork_thread_check(bad)
    assert mp.get_fork_thread_check() == 'ignore'
