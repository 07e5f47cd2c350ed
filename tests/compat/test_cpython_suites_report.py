"""How cpython_suites.py reads a regrtest run and words its verdict (quick: made-up logs, no regrtest run).

The logs below imitate regrtest's ``-v`` output (CPython 3.11.7) in the forms the harness must read: a failure
block, a class skipped in ``setUpClass``, "env changed" with its ``Warning --`` lines, a ``-j`` worker that was killed,
a run that never printed its result.
"""

import textwrap

import cpython_suites as suites

_RULE = '=' * 70
_DASH = '-' * 70

LOG = textwrap.dedent(
    f"""\
    0:00:00 load avg: 1.00 Run 3 tests in parallel using 2 worker processes
    0:00:05 load avg: 1.00 [1/3] test_mp.test_misc failed (1 failure)
    test_ok (test.test_mp.test_misc.TestA.test_ok) ... ok
    test_bad (test.test_mp.test_misc.TestA.test_bad)
    A docstring. ... FAIL
    setUpClass (test.test_mp.test_misc.TestB) ... skipped 'no way'

    {_RULE}
    FAIL: test_bad (test.test_mp.test_misc.TestA.test_bad)
    A docstring.
    {_DASH}
    Traceback (most recent call last):
      File "/x/test/_test_multiprocessing.py", line 10, in test_bad
        self.assertEqual(len(w), 1)
    AssertionError: 0 != 1

    {_DASH}
    Ran 2 tests in 0.1s

    FAILED (failures=1)
    0:00:09 load avg: 1.00 [2/3/2] test_mp.test_manager failed (env changed)
    test_q (test.test_mp.test_manager.TestQ.test_q) ... ok
    Warning -- Shared objects which still exist at manager shutdown:
    Warning --   7f00:       refcount=1
    Warning --     <queue.Queue object at 0x7f00>
    0:00:20 load avg: 1.00 [3/3/3] test_mp.test_threads worker non-zero exit code (Exit code -9 (SIGKILL))
    test_t1 (test.test_mp.test_threads.TestT.test_t1) ... ok
    test_t2 (test.test_mp.test_threads.TestT.test_t2) ... /x/resource_tracker.py:254: UserWarning: leaked

    == Tests result: FAILURE ==

    2 tests failed:
        test_mp.test_misc test_mp.test_threads

    1 test altered the execution environment (env changed):
        test_mp.test_manager

    Total tests: run=4 failures=1
    Result: FAILURE
    """
)


def _parse(output, returncode=2, **kwargs):
    return suites.parse_run(
        suite='test_mp',
        method='spawn',
        target='procstart',
        command=['python', '-m', 'procstart', 'run', '-m', 'test'],
        returncode=returncode,
        duration=1.0,
        output=output,
        junit=None,
        log='run.log',
        harness_timeout=kwargs.get('harness_timeout'),
    )


def test_reads_outcomes_env_changed_and_a_killed_worker():
    result = _parse(LOG)
    assert result.finished
    assert result.tests['test_mp.test_misc.TestA.test_ok'].outcome == 'passed'
    assert result.tests['test_mp.test_misc.TestA.test_bad'].outcome == 'failed'
    assert 'AssertionError: 0 != 1' in result.tests['test_mp.test_misc.TestA.test_bad'].detail
    assert result.tests['test_mp.test_misc.TestB.setUpClass'].detail == 'no way'
    assert result.failed == ['test_mp.test_misc.TestA.test_bad']
    (warning,) = result.env_changed['test_mp.test_manager']
    assert warning.startswith('Shared objects which still exist at manager shutdown:')
    assert '<queue.Queue object at 0x7f00>' in warning
    assert 'last test started: test_mp.test_manager.TestQ.test_q' in warning
    assert result.unfinished_files == {
        'test_mp.test_threads': 'worker non-zero exit code (Exit code -9 (SIGKILL)); running: '
        'test_mp.test_threads.TestT.test_t2'
    }
    assert result.describe() == '3 passed 1 skipped 1 failed 1 env changed CRASHED'

    ok, text = suites.report(result)
    assert not ok
    lines = text.splitlines()
    assert (
        'FAIL test_mp.test_misc.TestA.test_bad: AssertionError: 0 != 1 (_test_multiprocessing.py:10 in test_bad)'
        in lines
    )
    assert 'ENV CHANGED test_mp.test_manager:' in lines
    assert any(line.startswith('DID NOT FINISH test_mp.test_threads: worker non-zero exit code') for line in lines)


def test_skips_and_absences_against_the_reference():
    done = '== Tests result: SUCCESS ==\n'
    reference = _parse(
        'test_ok (test.test_mp.A.test_ok) ... ok\n'
        'test_s (test.test_mp.A.test_s) ... ok\n'
        'test_c (test.test_mp.B.test_c) ... ok\n'
        "test_f (test.test_mp.A.test_f) ... skipped 'skipped by stdlib too'\n" + done
    )
    result = _parse(
        'test_ok (test.test_mp.A.test_ok) ... ok\n'
        "test_s (test.test_mp.A.test_s) ... skipped 'why'\n"
        "setUpClass (test.test_mp.B) ... skipped 'no way'\n"
        "test_f (test.test_mp.A.test_f) ... skipped 'skipped here too'\n" + done
    )
    diffs = {d.id: (d.outcome, d.detail) for d in suites.differences(result, reference)}
    assert diffs == {
        'test_mp.A.test_s': ('skipped', 'why'),
        'test_mp.B.test_c': ('not run', 'setUpClass skipped: no way'),
    }
    ok, text = suites.report(result, reference)
    assert not ok
    assert 'SKIPPED here, RAN under stdlib: test_mp.A.test_s: why' in text.splitlines()
    assert suites.report(reference, reference)[0]


def test_a_run_that_never_finished():
    output = 'test_a (test.test_mp.T.test_a) ... ok\ntest_b (test.test_mp.T.test_b) ... \nTimeout (0:10:00)!\nThread 0x1 (most recent call first):\n  File "/x/y.py", line 3 in f\n'
    result = _parse(output, returncode=1)
    assert not result.finished
    assert result.stopped == 'timed out (regrtest --timeout); running: test_mp.T.test_b'
    assert result.excerpts['the run'] == (
        'test_b (test.test_mp.T.test_b) ...\nTimeout (0:10:00)!\nThread 0x1 (most recent call first):\n'
        '  File "/x/y.py", line 3 in f'
    )
    assert result.describe().endswith('HUNG')
    killed = _parse('test_a (test.test_mp.T.test_a) ... ', returncode=-9, harness_timeout=100)
    assert killed.stopped.startswith('killed by the harness after 100 s')
    crashed = _parse('test_a (test.test_mp.T.test_a) ... ', returncode=-11)
    assert crashed.stopped == 'crashed: killed by SIGSEGV; running: test_mp.T.test_a'
    assert crashed.describe().endswith('CRASHED')


def test_short_error_names_the_child_programs_stderr():
    detail = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "/x/test/test_multiprocessing_main_handling.py", line 165, in _check_script
            rc, out, err = assert_python_ok(*run_args, __isolated=False)
          File "/x/test/support/script_helper.py", line 76, in fail
            raise AssertionError("Process return code is %d\\n"
        AssertionError: Process return code is 2
        command line: ['python', '-m', 'procstart', 'run', '/tmp/d', 'spawn']

        stdout:
        ---

        ---

        stderr:
        ---
        python: can't open file '/tmp/d': [Errno 21] Is a directory
        ---
        """
    )
    assert suites.short_error(detail) == (
        "AssertionError: Process return code is 2 [stderr: python: can't open file '/tmp/d': [Errno 21] Is a "
        'directory] (test_multiprocessing_main_handling.py:165 in _check_script)'
    )
