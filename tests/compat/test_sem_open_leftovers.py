"""tests/compat's removal of glibc's sem_open() temporary files (``_sem_open``): one a
test leaves is removed after it and named; a named semaphore never matches."""

import os

import _sem_open

LEFTOVER = 'sem.Zq3xY9'


def test_a_leftover_is_left():
    # As a process killed inside sem_open() leaves it: a file no process has open.
    with open(f'/dev/shm/{LEFTOVER}', 'w'):
        pass


def test_the_leftover_was_removed_and_named():
    assert not os.path.exists(f'/dev/shm/{LEFTOVER}')
    assert any(entry.endswith(f'test_a_leftover_is_left: /dev/shm/{LEFTOVER}') for entry in _sem_open.REMOVED)


def test_named_semaphores_are_not_temporaries():
    for name in ('sem.mp-1a2b3c4d', 'sem.mp-ab', 'sem.Zq3xY9x', 'sem.Zq3x-9'):
        assert _sem_open.TEMPORARY.fullmatch(name) is None, name
