"""glibc's sem_open() creates a semaphore as a temporary file, /dev/shm/sem. and six random characters, links it to
its name and unlinks it: a process killed in between leaves the temporary file, a semaphore no one can name. CPython's
tests kill processes as they start (test_many_processes, under stdlib too), and each of those children creates a Lock
while importing the test module (test.support.skip_if_broken_multiprocessing_synchronize). Those files are CPython's
tests' and glibc's, not procstart's: conftest.py removes them after each test and names them in the summary, as
cpython_suites.py does for the suites. Named semaphores (procstart's and stdlib's /mp-*) are still the leak checks'."""

import os
import re

TEMPORARY = re.compile(r'sem\.[A-Za-z0-9]{6}')
# The files removed, as 'test id: path'.
REMOVED = []


def temporaries():
    try:
        return {name for name in os.listdir('/dev/shm') if TEMPORARY.fullmatch(name)}
    except FileNotFoundError:
        return set()


def remove_unheld(names):
    """Removes those of the /dev/shm ``names`` that no process of this tree has open (nor another user's); the names
    removed, in order."""
    from procstart.pytest_plugin import _not_this_trees, _processes

    removed = []
    for name in sorted(names - _not_this_trees(names, _processes())):
        try:
            os.unlink(f'/dev/shm/{name}')
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed


def remove_new(before, test_id):
    """Removes the temporary files that appeared since ``before`` and that no process of this tree has open."""
    REMOVED.extend(f'{test_id}: /dev/shm/{name}' for name in remove_unheld(temporaries() - before))
