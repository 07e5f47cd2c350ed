"""Helpers shared by the test modules (importable because conftest puts tests/ on sys.path).

What runs in a child lives in ``_targets`` instead: picklable by reference, and importable without stdlib
``multiprocessing`` (which this module may import).
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import _targets
import pytest

TARGET = os.environ.get('PROCSTART_TEST_TARGET', 'procstart')
IS_STDLIB = TARGET == 'stdlib'
MODNAME = 'multiprocessing' if IS_STDLIB else 'procstart'
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Upper bound for anything a child must do; only reached when something is broken.
CHILD_TIMEOUT = 20.0


def skip_on_stdlib(reason):
    """Marker for a deliberate procstart improvement over CPython (the stdlib run skips it)."""
    return pytest.mark.skipif(IS_STDLIB, reason=f'procstart improvement, CPython differs: {reason}')


def skip_if_stdlib(reason, condition=True):
    """Skip at run time (for improvements that depend on the start method or the Python version)."""
    if IS_STDLIB and condition:
        pytest.skip(f'procstart improvement, CPython {sys.version_info[0]}.{sys.version_info[1]} differs: {reason}')


# -- waiting -------------------------------------------------------------------------------------------------------


def wait_until(condition, timeout=5.0):
    """Poll ``condition()`` until it is true or ``timeout`` seconds have passed; its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def _ended(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: reaped between the open and the read
        return True


def wait_gone(pid, timeout=5.0):
    """Wait until process ``pid`` has ended (gone, or a zombie); whether it did within ``timeout`` seconds."""
    return wait_until(lambda: _ended(pid), timeout)


def path_gone(path, timeout=5.0):
    """Wait until ``path`` no longer exists; whether it went within ``timeout`` seconds."""
    return wait_until(lambda: not os.path.exists(path), timeout)


def shm_path(name, rtype='semaphore'):
    """Where the named semaphore (or shared memory) ``name`` lives in /dev/shm."""
    return '/dev/shm/' + ('sem.' if rtype == 'semaphore' else '') + name.lstrip('/')


# -- descriptors ---------------------------------------------------------------------------------------------------


def fd_count(pid='self'):
    """How many descriptors process ``pid`` holds."""
    return len(os.listdir(f'/proc/{pid}/fd'))


def fd_target(fd):
    """What this process's descriptor ``fd`` refers to (``pipe:[…]``, ``anon_inode:[pidfd]``, a path …)."""
    return os.readlink(f'/proc/self/fd/{fd}')


# -- processes of the module under test ----------------------------------------------------------------------------


def recv(conn, timeout=CHILD_TIMEOUT):
    """``conn.recv()`` that fails instead of hanging."""
    assert conn.poll(timeout), f'nothing received within {timeout} s'
    return conn.recv()


def finish(p, timeout=CHILD_TIMEOUT):
    """Join ``p``; kill it if it does not end in time (then fail)."""
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f'{p!r} did not exit within {timeout} s')


def start_process(ctx, target, *args, **process_kwargs):
    """A started ``ctx.Process(target=target, args=args, **process_kwargs)``."""
    p = ctx.Process(target=target, args=args, **process_kwargs)
    p.start()
    return p


def run_process(ctx, target, *args, **process_kwargs):
    """:func:`start_process`, then :func:`finish`: the ended process."""
    p = start_process(ctx, target, *args, **process_kwargs)
    finish(p)
    return p


def start_reporting(ctx, make_pipe, target, *args, **process_kwargs):
    """Start ``target(w, *args)`` in a ``ctx.Process``, ``w`` the write end of a new pipe; ``(process, read end)``.

    The parent's copy of ``w`` is closed right after ``start()`` (as CPython's own tests do), so that a child that
    dies without reporting gives EOFError instead of a hang.
    """
    r, w = make_pipe()
    p = start_process(ctx, target, w, *args, **process_kwargs)
    w.close()
    return p, r


def run_in_child(ctx, make_pipe, func, *args, **process_kwargs):
    """Run ``func(*args)`` in a ``ctx.Process`` child; return ``(outcome, process)`` after joining it.

    ``outcome`` is ``['ok', result]`` or ``[exception type name, message]`` (see ``_targets.outcome``).
    """
    p, r = start_reporting(ctx, make_pipe, _targets.call_and_send, func, *args, **process_kwargs)
    try:
        res = recv(r)
    finally:
        finish(p)
    assert p.exitcode == 0, p
    return res, p


def run_threads(target, arguments):
    """Run ``target(*args)`` in a thread of its own for every ``args`` in ``arguments``, all at once; return once
    all have ended."""
    threads = [threading.Thread(target=target, args=args) for args in arguments]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- fresh interpreters --------------------------------------------------------------------------------------------

# The imports every run_py script needs, so that a script holds only what it tests.
SCRIPT_HEADER = f'import json, os, sys, time\nimport _targets\nimport {MODNAME} as mp\n'


def child_path(*first):
    """PYTHONPATH of a fresh interpreter, as a list: ``first``, tests/, the directory the module under test was
    imported from, and this process's PYTHONPATH."""
    paths = [*map(str, first), TESTS_DIR]
    if not IS_STDLIB:
        import procstart

        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(procstart.__file__))))
    if os.environ.get('PYTHONPATH'):
        paths.append(os.environ['PYTHONPATH'])
    return paths


def child_env(*first_on_path):
    """This process's environment (``PROCSTART_TEST_TARGET`` included) with :func:`child_path` as PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(child_path(*first_on_path)))


def run_python(*argv, flags=(), cwd=TESTS_DIR, path=(), env=None, stdin=None, timeout=60, check=True):
    """``python [flags] argv...`` in a fresh interpreter -> CompletedProcess (text).

    It runs in ``cwd`` with :func:`child_env` (``path`` first on PYTHONPATH, ``env`` set over it) and ``stdin`` as
    its input. With ``check``, a non-zero exit fails the test, showing the command and what it wrote.
    """
    cmd = [sys.executable, *flags, *map(str, argv)]
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env={**child_env(*path), **(env or {})},
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f'exited with {proc.returncode}: {" ".join(cmd)}\n--- stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}'
        )
    return proc


def last_json(proc):
    """The JSON on the last line a program printed (its result; anything it printed before is left alone)."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stderr_parts(stderr):
    """``{key: text}`` of a script's stderr that wrote ``@@key`` on a line of its own before each part, and
    ``@@end`` after the last, so that what each child wrote can be told apart."""
    chunks = re.split(r'^@@(\w+)\n', stderr, flags=re.MULTILINE)
    assert chunks[0] == '', stderr
    parts = dict(zip(chunks[1::2], chunks[2::2], strict=True))
    assert parts.pop('end') == '', stderr
    return parts


# -- the fork server's handshake: CPython's multiprocessing.connection authentication ------------------------------

if sys.version_info >= (3, 12):
    from multiprocessing.connection import answer_challenge, deliver_challenge
else:
    # Python 3.11 and older speak only CPython's legacy HMAC-MD5 protocol, which procstart's server refuses: the
    # 3.12 protocol's two steps for the `{sha256}` digest it uses by default, written for these tests.
    def deliver_challenge(connection, authkey):
        import hmac
        from multiprocessing import AuthenticationError

        message = b'{sha256}' + os.urandom(40)
        connection.send_bytes(b'#CHALLENGE#' + message)
        response = connection.recv_bytes(256)
        expected = b'{sha256}' + hmac.new(authkey, message, 'sha256').digest()
        if not hmac.compare_digest(response, expected):
            connection.send_bytes(b'#FAILURE#')
            raise AuthenticationError('digest received was wrong')
        connection.send_bytes(b'#WELCOME#')

    def answer_challenge(connection, authkey):
        import hmac
        from multiprocessing import AuthenticationError

        message = connection.recv_bytes(256)
        if not message.startswith(b'#CHALLENGE#'):
            raise AuthenticationError(f'Protocol error, expected challenge: {message=}')
        message = message[len(b'#CHALLENGE#') :]
        if len(message) < 20:
            raise AuthenticationError(f'challenge too short: {len(message)} bytes')
        assert message.startswith(b'{sha256}'), message
        connection.send_bytes(b'{sha256}' + hmac.new(authkey, message, 'sha256').digest())
        if connection.recv_bytes(256) != b'#WELCOME#':
            raise AuthenticationError('digest sent was rejected')


def fork_server_client(address, authkey):
    """A ``multiprocessing.connection.Connection`` to the fork server at ``address``, authenticated with ``authkey`` as
    ``multiprocessing.connection.Client(address, authkey=authkey)`` authenticates (that very call from Python 3.12
    on); the server now expects a REQUEST."""
    import multiprocessing.connection

    if sys.version_info >= (3, 12):
        return multiprocessing.connection.Client(address, authkey=authkey)
    conn = multiprocessing.connection.Client(address)
    try:
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise
    return conn


def fork_server_info(mp):
    """``(address, authkey, alive_fd, pid)`` of procstart's fork server as this process uses it (address as str)."""
    address, key, alive_fd, pid = mp._procstart._forkserver_info()
    return os.fsdecode(address), key, alive_fd, pid


def authenticated_socket(address, authkey):
    """A socket connected to the fork server that has passed the handshake (the server now expects a REQUEST)."""
    import socket

    with fork_server_client(address, authkey) as conn:
        s = socket.socket(fileno=os.dup(conn.fileno()))
    s.settimeout(CHILD_TIMEOUT)
    return s


def stdlib_owned_names(cls):
    """The names `cls` resolves through a stdlib `multiprocessing` class of its MRO rather than its own classes
    (procstart's classes take stdlib's as last bases for isinstance only, so there should be none)."""
    owners = {name: next(k for k in cls.__mro__ if name in vars(k)) for name in dir(cls)}
    return sorted(
        name
        for name, owner in owners.items()
        # __slotnames__: copyreg's cache, set on whichever class an object was pickled as.
        if owner.__module__.startswith('multiprocessing') and name not in ('__dict__', '__weakref__', '__slotnames__')
    )
