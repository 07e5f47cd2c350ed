"""Helpers shared by the test modules (importable because conftest puts tests/ on sys.path)."""

import os
import sys
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


def wait_gone(pid, timeout=5.0):
    """Wait until process ``pid`` has ended (gone, or a zombie); whether it did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f'/proc/{pid}/stat') as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


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


def run_in_child(ctx, make_pipe, func, *args, **process_kwargs):
    """Run ``func(*args)`` in a ``ctx.Process`` child; return ``(outcome, process)`` after joining it.

    ``outcome`` is ``['ok', result]`` or ``[exception type name, message]`` (see ``_targets.outcome``).
    The parent's copy of the write end is closed right after ``start()`` (as CPython's own tests do), so a child
    that dies without reporting gives EOFError instead of a hang.
    """
    r, w = make_pipe()
    p = ctx.Process(target=_targets.call_and_send, args=(w, func, *args), **process_kwargs)
    p.start()
    w.close()
    try:
        res = recv(r)
    finally:
        finish(p)
    assert p.exitcode == 0, p
    return res, p


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
