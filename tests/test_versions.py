"""Defects of particular CPython releases that procstart's own code paths must not reach.

Each test runs on every supported version; the version named is the one where the defect showed (a crash or noise
that stdlib's start methods never cause there).
"""

import pytest


@pytest.mark.parametrize('method', ['spawn', 'forkserver'])
def test_failed_pickle_leaves_nothing_for_the_collector(run_py, method):
    # A pickling failure keeps the pickler's output alive in the traceback cycle; had that been an export of a
    # BytesIO buffer, collecting the cycle crashes 3.12.0-3.12.1 (gh-111049) and prints "Exception ignored ...
    # BufferError" on 3.13 and 3.14 (gh-111331).
    proc = run_py(
        """
        import gc
        ctx = mp.get_context(sys.argv[1])
        for _ in range(3):
            p = ctx.Process(target=_targets.noop, args=(lambda: None,))
            try:
                p.start()
            except Exception as error:
                failure = error
            else:
                raise SystemExit('a lambda was pickled')
        del failure
        gc.collect()
        print('collected')
        """,
        method,
    )
    assert proc.stdout.split() == ['collected']
    assert 'Exception ignored' not in proc.stderr, proc.stderr


def test_forkserver_child_of_a_server_whose_directory_is_gone(run_py):
    # The fork server keeps the directory it started in; a child forked from it must change to its parent's
    # directory before it imports anything: on 3.13.0-3.13.2 an import under a failing getcwd() raises SystemError
    # (gh-130932). The logger's level makes the child import multiprocessing.util while it prepares.
    proc = run_py(
        """
        import multiprocessing.util, tempfile
        multiprocessing.util.get_logger().setLevel(5)
        ctx = mp.get_context('forkserver')
        home = os.getcwd()
        doomed = tempfile.mkdtemp()
        os.chdir(doomed)
        first = ctx.Process(target=_targets.noop)
        first.start()
        first.join()
        os.chdir(home)
        os.rmdir(doomed)
        second = ctx.Process(target=_targets.noop)
        second.start()
        second.join()
        print(first.exitcode, second.exitcode)
        """
    )
    assert proc.stdout.split() == ['0', '0'], proc.stderr
