"""Installs the CPython regression tests that tests/compat runs, where this interpreter lacks them.

``python tests/compat/cpython_testsuite.py`` (the README's test command runs it first, with the interpreter the tests
run on): tests/compat needs ``test._test_multiprocessing`` from the interpreter's ``test`` package and
``test_concurrent_futures`` from it or from Debian's ``libpython3.X-testsuite`` (see _cpython_futures.py). When one is
missing and that Debian package is not installed, it is installed with ``apt-get``, non-interactively -- as root, or
through passwordless ``sudo`` -- if apt knows it. Otherwise, or if the tests are still missing after that, a loud
warning says so and what to install; the compat tests then skip with the same message. The exit status is always 0:
a machine without the tests still runs the rest of the suite.

Also imported by name (tests/compat is on ``sys.path``) for the Debian package's name and file locations.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

VERSION = f'{sys.version_info[0]}.{sys.version_info[1]}'
DEBIAN_PACKAGE = f'libpython{VERSION}-testsuite'
# Debian's test_concurrent_futures: a file up to 3.11, a package from 3.12 (the path without '.py' then).
DEBIAN_FUTURES = f'/usr/lib/python{VERSION}/test/test_concurrent_futures'


def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # no `test` package at all
        return False


def missing():
    """The CPython test modules tests/compat needs that this interpreter cannot load."""
    lacking = []
    if not importable('test._test_multiprocessing'):
        lacking.append('test._test_multiprocessing')
    if not (
        importable('test.test_concurrent_futures')
        or os.path.isfile(DEBIAN_FUTURES + '.py')
        or os.path.isdir(DEBIAN_FUTURES)
    ):
        lacking.append('test.test_concurrent_futures')
    return lacking


def _warn(lines):
    bar = '!' * 100
    print('\n'.join([bar, *(f'!!! {line}' for line in lines), bar]), file=sys.stderr, flush=True)


def _as_root():
    """The command prefix that runs a command as root without asking for a password, or None."""
    if os.geteuid() == 0:
        return []
    if (
        shutil.which('sudo')
        and subprocess.run(['sudo', '-n', 'true'], check=False, capture_output=True).returncode == 0
    ):
        return ['sudo', '-n']
    return None


def _apt_knows(package):
    policy = subprocess.run(['apt-cache', 'policy', package], check=False, capture_output=True, text=True).stdout
    return 'Candidate:' in policy and 'Candidate: (none)' not in policy


def _package_installed():
    status = subprocess.run(
        ['dpkg-query', '-W', '-f=${Status}', DEBIAN_PACKAGE], check=False, capture_output=True, text=True
    )
    return status.stdout.endswith(' installed')


def _install():
    """Try to install the Debian package; why not, or None when apt-get ran."""
    if not shutil.which('apt-get'):
        return 'no apt-get on this machine'
    if _package_installed():
        return f'{DEBIAN_PACKAGE} is installed already, but does not provide them for {sys.executable}'
    root = _as_root()
    if root is None:
        return 'not root and no passwordless sudo'
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    if not _apt_knows(DEBIAN_PACKAGE):
        # A fresh image has no package lists yet.
        subprocess.run([*root, 'apt-get', 'update', '-qq'], check=False, env=env)
        if not _apt_knows(DEBIAN_PACKAGE):
            return f'apt knows no package {DEBIAN_PACKAGE}'
    print(f'cpython_testsuite: installing {DEBIAN_PACKAGE} for {", ".join(missing())}', flush=True)
    subprocess.run(
        [*root, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', DEBIAN_PACKAGE], check=False, env=env
    )
    return None


def main():
    if not missing():
        return
    why = _install()
    lacking = missing()
    if not lacking:
        return
    _warn(
        [
            f'CPython {VERSION} at {sys.executable} lacks {", ".join(lacking)}:',
            'the CPython compat tests (tests/compat) that need them will SKIP.',
            f'Install them, e.g. on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGE}'
            + (f' (not done here: {why})' if why else ' (apt-get ran, yet they are still missing)'),
        ]
    )


if __name__ == '__main__':
    main()
