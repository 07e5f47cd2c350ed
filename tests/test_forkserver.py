"""The forkserver start method: the server's life, its authentication, what children hold, concurrency, exit
statuses that survive the server, and one server per process tree.

The generic Process tests (test_process.py, test_bad_input.py, tests/compat) already run under forkserver; these
are about the server itself, which is procstart's own (CPython's differs where noted), so the stdlib reference run
skips them.
"""

import glob
import hmac
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import textwrap
import time

import _targets
import pytest
from _support import (
    CHILD_TIMEOUT,
    SCRIPT_HEADER,
    answer_challenge,
    authenticated_socket,
    fd_count,
    finish,
    fork_server_client,
    fork_server_info,
    last_json,
    path_gone,
    recv,
    run_process,
    run_python,
    skip_on_stdlib,
    start_reporting,
    wait_gone,
    wait_until,
)

pytestmark = skip_on_stdlib("these tests drive procstart's fork server directly")

KEY_LEN = 32


@pytest.fixture
def fs(mp):
    ctx = mp.get_context('forkserver')
    _targets.start_helpers(ctx)
    return ctx


# -- lifecycle -------------------------------------------------------------------------------------------------


def test_server_starts_lazily_once(run_py):
    out = run_py("""
        ctx = mp.get_context('forkserver')
        before = mp._procstart._forkserver_pid()
        procs = [ctx.Process(target=_targets.noop) for _ in range(3)]
        for p in procs:
            p.start()
            p.join()
        after = mp._procstart._forkserver_pid()
        print(json.dumps([before, after, mp._procstart._forkserver_pid() == after, [p.exitcode for p in procs]]))
    """).stdout
    before, after, same, codes = json.loads(out)
    assert before is None
    assert after is not None and same
    assert codes == [0, 0, 0]


def test_main_module_is_preloaded_once(tmp_path, run_py):
    """The server imports ``__main__`` (as ``__mp_main__``, with the parent's sys.path and argv) so the children
    find it imported; CPython 3.11's server never receives the main path and every child re-runs it."""
    log = tmp_path / 'imports.log'
    script = tmp_path / 'main_script.py'
    script.write_text(
        'import os, sys\n'
        f'with open({str(log)!r}, "a") as f:\n'
        '    f.write(f"{__name__} {os.getpid()} {sys.argv[1:]}\\n")\n'
        'import procstart as mp\n'
        'def work():\n'
        '    assert sys.modules["__main__"].__name__ == "__mp_main__"\n'
        'if __name__ == "__main__":\n'
        '    ctx = mp.get_context("forkserver")\n'
        '    for _ in range(3):\n'
        '        p = ctx.Process(target=work)\n'
        '        p.start()\n'
        '        p.join()\n'
        '        assert p.exitcode == 0, p.exitcode\n'
        '    print(mp._procstart._forkserver_pid())\n'
    )
    out = run_py(f'import runpy; sys.argv = [{str(script)!r}, "arg"]; runpy.run_path(sys.argv[0], run_name="__main__")')
    server = int(out.stdout.split()[-1])
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ['__main__', '__mp_main__']
    assert lines[1] == f"__mp_main__ {server} ['arg']"


def test_preload_modules_imported_once_in_server(tmp_path, run_py):
    module = tmp_path / 'preloaded_mod.py'
    module.write_text('import os\nLOADED_IN = os.getpid()\n')
    out = run_py(
        f"""
        sys.path.insert(0, {str(tmp_path)!r})
        mp.set_forkserver_preload(['preloaded_mod', 'no_such_module_at_all'])
        ctx = mp.get_context('forkserver')
        r, w = mp.Pipe(duplex=False)
        p = ctx.Process(target=_targets.call_and_send, args=(w, _targets.loaded_in, 'preloaded_mod'))
        p.start(); w.close()
        print(json.dumps([r.recv(), mp._procstart._forkserver_pid()]))
        p.join()
    """
    ).stdout
    (status, loaded_in), server = json.loads(out)
    assert status == 'ok'
    assert loaded_in == server


def test_relaunch_after_sigkill_reaps_and_cleans_up(mp, fs):
    address, _, _, old = fork_server_info(mp)
    os.kill(old, signal.SIGKILL)
    assert wait_gone(old)
    assert run_process(fs, _targets.exit_with, 3).exitcode == 3
    new = mp._procstart._forkserver_pid()
    assert new != old
    assert not os.path.exists(address)
    assert not os.path.exists(os.path.dirname(address))
    # The dead server was this process's child: reaped, not left a zombie.
    assert not os.path.exists(f'/proc/{old}')


def test_sigterm_removes_the_socket_directory(mp, fs):
    """A server stopped with SIGTERM (a supervisor stopping the process group) removes its socket and directory,
    dies of the signal, and the next start() starts a new one; its children still die of SIGTERM themselves."""
    address, _, _, old = fork_server_info(mp)
    os.kill(old, signal.SIGTERM)
    assert wait_gone(old)
    assert not os.path.exists(os.path.dirname(address))
    p = fs.Process(target=_targets.sleep, args=(CHILD_TIMEOUT,))
    p.start()
    assert mp._procstart._forkserver_pid() != old
    p.terminate()
    finish(p)
    assert p.exitcode == -signal.SIGTERM
    # The old server was this process's child: reaped with its true status.
    assert not os.path.exists(f'/proc/{old}')


def test_server_exits_with_its_last_holder(run_py):
    """The process that started the server waits at its exit for the server to follow, so that its socket directory
    is gone when that process is (regrtest -j checks a worker's temporary directory right then)."""
    out = run_py("""
        _targets.start_helpers(mp.get_context('forkserver'))
        address = os.fsdecode(mp._procstart._forkserver_info()[0])
        print(json.dumps([mp._procstart._forkserver_pid(), address]))
    """).stdout
    server, address = json.loads(out)
    assert not os.path.exists(os.path.dirname(address))
    assert wait_gone(server, timeout=2.0), 'the server outlived the process that started it'


# -- nothing of a dead server is left -------------------------------------------------------------------------------

# Starts the server, then with argv[1] == 'no tracker' kills the resource tracker first, so that only the processes
# that used the server are left to remove its directory.
_SERVER_AND_TRACKER = """
    import signal
    import _support
    ctx = mp.get_context('forkserver')
    _targets.start_helpers(ctx)
    address = os.fsdecode(mp._procstart._forkserver_info()[0])
    server, tracker = mp._procstart._forkserver_pid(), mp._procstart._tracker_pid()
    if sys.argv[1] == 'no tracker':
        os.kill(tracker, signal.SIGKILL)
        os.waitpid(tracker, 0)
"""


@pytest.mark.parametrize('tracker', ['tracker', 'no tracker'])
def test_a_killed_servers_directory_goes_at_the_clients_exit(run_py, tracker):
    """A SIGKILLed server leaves its socket directory; the process that started it removes it at its exit, when it
    has not started another server since (and the resource tracker, when there is one, as soon as the server died)."""
    out = run_py(
        _SERVER_AND_TRACKER
        + """
    os.kill(server, signal.SIGKILL)
    assert _support.wait_gone(server)
    print(json.dumps([address, os.path.exists(address)]))
    """,
        tracker,
    ).stdout
    address, left_before_exit = json.loads(out)
    assert not os.path.exists(os.path.dirname(address))
    if tracker == 'no tracker':
        assert left_before_exit  # so it was the exit that removed it


def test_an_adopters_exit_removes_a_dead_servers_directory(run_py):
    """A process that uses a server it did not start (here a fork child) removes the directory of the server at its
    exit if the server died."""
    out = run_py(
        _SERVER_AND_TRACKER
        + """
    def kill_server():
        os.kill(server, signal.SIGKILL)
        assert _support.wait_gone(server)
    child = mp.get_context('fork').Process(target=kill_server)
    child.start(); child.join()
    print(json.dumps([child.exitcode, os.path.exists(os.path.dirname(address))]))
    """,
        'no tracker',
    ).stdout
    assert json.loads(out) == [0, False]


@pytest.mark.parametrize('pause', [0, 0.2])
def test_server_and_client_sigkilled(run_py, pause):
    """The server SIGKILLed, then the process that started it too (at once, or after a moment): the resource tracker,
    which outlives both, removes the server's socket directory."""
    proc = run_py(
        _SERVER_AND_TRACKER
        + """
    print(json.dumps([address, tracker]), flush=True)
    os.kill(server, signal.SIGKILL)
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGKILL)
    """,
        'tracker',
        pause,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    address, tracker = json.loads(proc.stdout)
    assert wait_gone(tracker), 'the tracker outlived the last process holding it'
    assert not os.path.exists(os.path.dirname(address))


def test_the_tracker_removes_a_dead_servers_directory_at_once(mp, fs):
    """While the process that started the server runs and does not look at it, the resource tracker removes the
    directory as soon as the server has died."""
    import procstart.forkserver

    # A server registered with the tracker this process has now (another test may have replaced the tracker).
    procstart.forkserver._forkserver._stop()
    assert run_process(fs, _targets.noop).exitcode == 0
    address, _, _, server = fork_server_info(mp)
    os.kill(server, signal.SIGKILL)
    assert path_gone(os.path.dirname(address))
    assert mp._procstart._forkserver_pid() == server  # not looked at yet
    assert run_process(fs, _targets.exit_with, 3).exitcode == 3  # a new server; the dead one reaped
    assert not os.path.exists(f'/proc/{server}')


def test_stop_in_another_process_keeps_a_live_servers_socket(mp, fs, pipe):
    """`_stop()` in a process that did not start the server stops its use there only: the server still serves the
    others, at the same address."""
    address, _, _, server = fork_server_info(mp)
    assert run_process(mp.get_context('fork'), _stop_server_here).exitcode == 0
    assert os.path.exists(address)
    assert run_process(fs, _targets.exit_with, 5).exitcode == 5
    assert mp._procstart._forkserver_pid() == server


def _stop_server_here():
    import procstart.forkserver

    procstart.forkserver._forkserver._stop()


def test_a_new_server_removes_directories_nobody_was_left_to_remove(run_py, tmp_path):
    """A server killed with every process that used it and their tracker leaves its directory; the next server
    started in the same temporary directory removes it, once it has been unchanged for a minute and nothing listens
    there. Directories that are newer, where a server listens, or not named as a server's are left alone."""

    def server_dir(name, listening=False, age=120):
        path = tmp_path / name
        path.mkdir(mode=0o700)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path / 'socket'))
        listener.listen()
        (path / 'children').write_text('')
        os.utime(path, (time.time() - age, time.time() - age))
        if listening:
            return listener
        listener.close()

    server_dir('procstart-0123456789ab')
    server_dir('procstart-0123456789ac', age=0)
    live = server_dir('procstart-0123456789ad', listening=True)
    server_dir('procstart-0123456789')
    try:
        run_py(
            """
            p = mp.get_context('forkserver').Process(target=_targets.noop); p.start(); p.join()
            assert p.exitcode == 0
            """,
            env={'TMPDIR': str(tmp_path)},
        )
    finally:
        live.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'procstart-0123456789',
        'procstart-0123456789ac',
        'procstart-0123456789ad',
    ]


_REGRTEST_MODULE = """
import unittest
import procstart as mp
import _targets

class Test(unittest.TestCase):
    def test_forkserver(self):
        ctx = mp.get_context('forkserver')
        for _ in range(3):
            p = ctx.Process(target=_targets.noop)
            p.start()
            p.join()
            self.assertEqual(p.exitcode, 0)
"""


def test_regrtest_workers_leave_no_directory(tmp_path):
    """CPython's regrtest -j lists a worker's temporary directory as soon as the worker has exited, and reports what
    is there as leaked: the server's directory is gone by then."""
    pytest.importorskip('test.libregrtest')
    for name in ('test_ps_fs_one', 'test_ps_fs_two'):
        (tmp_path / f'{name}.py').write_text(_REGRTEST_MODULE)
    proc = run_python(
        '-m',
        'test',
        '-j2',
        '--testdir',
        tmp_path,
        'test_ps_fs_one',
        'test_ps_fs_two',
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert 'leaked temporary files' not in proc.stdout, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_socket_is_private(mp, fs):
    address, *_ = fork_server_info(mp)
    directory = os.path.dirname(address)
    assert not address.startswith('\0')
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(address).st_mode & 0o777 == 0o600
    assert os.stat(directory).st_uid == os.getuid()


def test_stop_waits_for_the_server(mp, fs):
    address, _, _, pid = fork_server_info(mp)
    import procstart.forkserver

    procstart.forkserver._forkserver._stop()
    assert mp._procstart._forkserver_pid() is None
    assert not os.path.exists(f'/proc/{pid}')
    assert not os.path.exists(address)
    assert run_process(fs, _targets.exit_with, 4).exitcode == 4


# -- authentication --------------------------------------------------------------------------------------------


# The server's challenge as it goes on the wire (multiprocessing.connection's framing: a 4-byte big-endian length):
# b'#CHALLENGE#', b'{sha256}' and 40 random bytes.
CHALLENGE_LEN = 4 + 11 + 8 + 40
FAILURE = (9).to_bytes(4, 'big') + b'#FAILURE#'


def _recv_exact(s, n):
    data = b''
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def test_connection_client_handshakes_with_the_server(mp, fs):
    """The server authenticates as CPython 3.14's does, with multiprocessing.connection's handshake: a Client holding
    the key completes it (CPython's test_forkserver_auth_is_enabled); the server drops it when it hangs up, and serves
    on."""
    address, key, _, pid = fork_server_info(mp)
    assert len(key) == KEY_LEN
    for _ in range(3):
        fork_server_client(address, key).close()
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 5).exitcode == 5


def test_a_client_that_only_authenticates_is_dropped_quietly(run_py):
    out = run_py("""
        import _support
        from procstart import forkserver
        server = forkserver._forkserver
        server.ensure_running()
        _support.fork_server_client(server._forkserver_address, server._forkserver_authkey).close()
        p = mp.get_context('forkserver').Process(target=_targets.exit_with, args=(4,))
        p.start()
        p.join()
        print(p.exitcode)
    """)
    assert (out.stdout, out.stderr) == ('4\n', '')


def test_connection_client_with_a_wrong_key_is_refused(mp, fs):
    address, key, _, pid = fork_server_info(mp)
    with pytest.raises(multiprocessing.AuthenticationError, match='^digest sent was rejected$'):
        fork_server_client(address, bytes(len(key)))
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 6).exitcode == 6


@pytest.mark.parametrize('digest', ['wrong-key', 'md5', 'sha512', 'unprefixed', 'too-long'])
def test_only_a_sha256_digest_with_the_key_is_welcome(mp, fs, digest):
    """Anything but `{sha256}` and the HMAC with the key is told #FAILURE#, as CPython tells it, and dropped: among
    them CPython's legacy HMAC-MD5, all that Python 3.11 and older speak, and another digest even with the key. A
    message longer than 256 bytes is dropped unread (CPython's recv_bytes(256))."""
    address, key, _, pid = fork_server_info(mp)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CHILD_TIMEOUT)
        s.connect(address)
        challenge = _recv_exact(s, CHALLENGE_LEN)
        assert challenge[:4] == (CHALLENGE_LEN - 4).to_bytes(4, 'big')
        assert challenge[4:23] == b'#CHALLENGE#{sha256}'
        message = challenge[15:]
        answer = {
            'wrong-key': b'{sha256}' + hmac.new(bytes(KEY_LEN), message, 'sha256').digest(),
            'md5': hmac.new(key, message, 'md5').digest(),
            'sha512': b'{sha512}' + hmac.new(key, message, 'sha512').digest(),
            'unprefixed': hmac.new(key, message, 'sha256').digest(),
            'too-long': b'{sha256}' + hmac.new(key, message, 'sha256').digest() + bytes(217),
        }[digest]
        s.sendall(len(answer).to_bytes(4, 'big') + answer)
        try:
            received = _recv_exact(s, len(FAILURE) + 1)  # then the end of the stream
        except ConnectionResetError:  # dropped with our message unread
            received = b''
    assert received == (b'' if digest == 'too-long' else FAILURE)
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 6).exitcode == 6


@pytest.mark.parametrize(
    'challenge',
    [b'{md5}' + os.urandom(40), os.urandom(20), b'{sha256}' + os.urandom(12), b'{sha256}', b'#WELCOME#'],
    ids=['md5', 'legacy', 'legacy-length', 'short', 'not-a-challenge'],
)
def test_server_answers_only_sha256_challenges(mp, fs, challenge):
    """Once the client is welcome, the server answers its challenge only for `{sha256}` (and not CPython's legacy
    lengths, 20 bytes, which mean HMAC-MD5); otherwise it drops the client without an answer."""
    address, key, _, pid = fork_server_info(mp)
    with multiprocessing.connection.Client(address) as conn:
        answer_challenge(conn, key)
        conn.send_bytes(b'#CHALLENGE#' + challenge)
        with pytest.raises((EOFError, ConnectionResetError)):
            conn.recv_bytes()
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 6).exitcode == 6


@pytest.mark.parametrize(
    'garbage',
    [b'', b'\0', os.urandom(7), os.urandom(64), os.urandom(4096), b'GET / HTTP/1.0\r\n\r\n' * 10],
    ids=['nothing', 'nul', 'short', 'answer-sized', 'long', 'http'],
)
def test_garbage_is_dropped_and_server_survives(mp, fs, garbage):
    address, _, _, pid = fork_server_info(mp)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CHILD_TIMEOUT)
        s.connect(address)
        if garbage:
            s.sendall(garbage)
        s.shutdown(socket.SHUT_WR)
        received = b''
        try:
            while chunk := s.recv(4096):
                received += chunk
        except ConnectionResetError:  # the server hung up with our garbage unread
            pass
    # The challenge; at most #FAILURE# after it (random bytes that happen to frame a short message): no child.
    assert received[:CHALLENGE_LEN].startswith((CHALLENGE_LEN - 4).to_bytes(4, 'big') + b'#CHALLENGE#')
    assert received[CHALLENGE_LEN:] in (b'', FAILURE)
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 7).exitcode == 7


def test_stalled_peer_does_not_hold_up_others(mp, fs):
    """Connections are authenticated side by side: a silent peer waits alone until it is dropped."""
    address, _, _, _ = fork_server_info(mp)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(address)
        s.settimeout(CHILD_TIMEOUT)
        assert len(_recv_exact(s, CHALLENGE_LEN)) == CHALLENGE_LEN  # the server has taken the connection
        assert run_process(fs, _targets.exit_with, 8).exitcode == 8
        # Served while the silent peer is still connected and waiting (its deadline is 2 s).
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)
        s.settimeout(CHILD_TIMEOUT)
        assert s.recv(1) == b''  # then dropped
    assert run_process(fs, _targets.exit_with, 11).exitcode == 11


def test_client_with_wrong_key_gets_authentication_error(mp, fs, run_py):
    address, _, _, pid = fork_server_info(mp)
    out = run_py(f"""
        import multiprocessing
        alive = os.open(os.devnull, os.O_RDONLY)  # stands for the alive pipe this client would hold
        mp._procstart._forkserver_adopt(os.fsencode({address!r}), bytes(32), alive, {pid})
        p = mp.get_context('forkserver').Process(target=_targets.noop)
        try:
            p.start()
        except multiprocessing.AuthenticationError as e:
            print('AuthenticationError', e)
        print(mp._procstart._forkserver_pid())
    """).stdout.splitlines()
    assert out == ['AuthenticationError digest sent was rejected', str(pid)]
    assert mp._procstart._forkserver_pid() == pid
    assert run_process(fs, _targets.exit_with, 10).exitcode == 10


_SERVER_CHALLENGE = b'#CHALLENGE#{sha256}' + b'c' * 40


@pytest.mark.parametrize(
    ('says', 'error', 'heard'),
    [
        ([b'#CHALLENG'], f'Protocol error, expected challenge: message={b"#CHALLENG"!r}', [None]),
        ([b'#CHALLENGE#{sha256}12345'], 'challenge too short: 13 bytes', [None]),
        (
            [b'#CHALLENGE#{sha0}' + b'x' * 40],
            (
                'unsupported message length, missing digest prefix, or unsupported digest: '
                f'message={b"{sha0}" + b"x" * 40!r}'
            ),
            [None],
        ),
        ([_SERVER_CHALLENGE, b'#FAILURE#'], 'digest sent was rejected', ['right digest', None]),
        (
            [_SERVER_CHALLENGE, b'#WELCOME#', b'{sha256}' + bytes(32)],
            'digest received was wrong',
            ['right digest', 'challenge', '#FAILURE#'],
        ),
    ],
    ids=['not-a-challenge', 'short-challenge', 'unsupported-digest', 'rejected', 'unproved-server'],
)
def test_client_refuses_a_server_as_cpythons_client_does(run_py, tmp_path, says, error, heard):
    """Against a server that does not hold the key, start() raises the AuthenticationError CPython 3.14's
    answer_challenge/deliver_challenge raise, and says what they say before giving up; from Python 3.12 on, checked
    against multiprocessing.connection.Client itself, facing the same server."""
    out = run_py(f"""
        import hmac, multiprocessing, multiprocessing.connection, threading
        address = {str(tmp_path / 'socket')!r}
        says = {says!r}
        listener = multiprocessing.connection.Listener(address, 'AF_UNIX')
        heard = []

        def kind(received, said):
            if said.startswith(b'#CHALLENGE#'):
                digest = b'{{sha256}}' + hmac.new(b'k' * 32, said[11:], 'sha256').digest()
                if received == digest:
                    return 'right digest'
            if received.startswith(b'#CHALLENGE#{{sha256}}') and len(received) == 59:
                return 'challenge'
            return received.decode('latin-1')

        def serve(count):
            for _ in range(count):
                heard.append([])
                with listener.accept() as conn:
                    for message in says:
                        conn.send_bytes(message)
                        try:
                            received = conn.recv_bytes()
                        except EOFError:
                            heard[-1].append(None)
                            break
                        heard[-1].append(kind(received, message))

        def procstart_client():
            alive = os.open(os.devnull, os.O_RDONLY)  # stands for the alive pipe of a real server
            mp._procstart._forkserver_adopt(os.fsencode(address), b'k' * 32, alive, os.getpid())
            mp.get_context('forkserver').Process(target=_targets.noop).start()

        clients = [procstart_client]
        if sys.version_info >= (3, 12):
            clients.append(lambda: multiprocessing.connection.Client(address, authkey=b'k' * 32).close())
        server = threading.Thread(target=serve, args=(len(clients),))
        server.start()
        errors = []
        for client in clients:
            try:
                client()
            except multiprocessing.AuthenticationError as e:
                errors.append(str(e))
            else:
                errors.append(None)
        server.join()
        print(json.dumps([errors, heard]))
    """)
    errors, heard_by_server = json.loads(out.stdout)
    procstart_error, *cpython_error = errors
    assert procstart_error == error
    # Some 3.12 releases (3.12.1) forgot the f of this one f-string; procstart says what 3.14 says.
    unformatted = 'challenge too short: {len(message)} bytes'
    assert cpython_error in ([], [error]) or (cpython_error == [unformatted] and error.startswith('challenge too'))
    assert heard_by_server == [heard] * len(errors)


def test_a_wrong_forkserver_authkey_fails_start(mp, fs):
    """`_forkserver_authkey` is the key this process presents, as CPython 3.14's attribute: a wrong one, of any length,
    makes start() fail as CPython's does and leaves nothing behind; deleting it or assigning None brings back the
    server's own, and so does a new server."""
    from procstart import forkserver

    server = forkserver._forkserver
    _, key, _, pid = fork_server_info(mp)
    assert server._forkserver_authkey == key
    for wrong in (b'T' * len(key), b'x', b'k' * 300):
        server._forkserver_authkey = wrong
        assert server._forkserver_authkey == wrong
        p = fs.Process(target=_targets.noop)
        with pytest.raises(multiprocessing.AuthenticationError, match='^digest sent was rejected$'):
            p.start()
        assert mp.active_children() == []
        assert mp._procstart._forkserver_pid() == pid
    del server._forkserver_authkey
    assert server._forkserver_authkey == key
    assert run_process(fs, _targets.exit_with, 9).exitcode == 9
    server._forkserver_authkey = b'T'
    server._forkserver_authkey = None
    assert server._forkserver_authkey == key
    assert run_process(fs, _targets.exit_with, 10).exitcode == 10
    server._forkserver_authkey = b'T'
    server._stop()
    assert server._forkserver_authkey is None
    assert run_process(fs, _targets.exit_with, 11).exitcode == 11
    assert server._forkserver_authkey == fork_server_info(mp)[1] != key


def test_forkserver_authkey_under_mock_patch(mp, fs):
    """CPython 3.14's test_forkserver_without_auth_fails, step by step: patched to None, a wrong key assigned inside
    the patch, start() refused; the server's key back once the patch is undone (mock deletes the attribute and, as the
    property still answers, sets nothing back)."""
    import unittest.mock

    from procstart import forkserver

    server = forkserver._forkserver
    server.ensure_running()
    assert server._forkserver_pid
    key = server._forkserver_authkey
    authkey_len = len(key)
    with unittest.mock.patch.object(server, '_forkserver_authkey', None):
        server._forkserver_authkey = b'T' * authkey_len
        p = fs.Process(target=_targets.noop)
        with pytest.raises(multiprocessing.AuthenticationError):
            p.start()
        del p
    assert server._forkserver_authkey == key
    assert run_process(fs, _targets.exit_with, 0).exitcode == 0


@pytest.mark.skipif(os.getuid() != 0, reason='needs root to connect as another user')
def test_other_users_are_refused(mp, fs):
    """SO_PEERCRED: even with the directory opened up, another user's connection gets nothing."""
    address, _, _, pid = fork_server_info(mp)
    directory = os.path.dirname(address)
    # The server's directory, and the run's own temporary directory above it (conftest.py), opened up.
    opened = [(path, os.stat(path).st_mode & 0o7777) for path in (os.path.dirname(directory), directory, address)]
    os.chmod(os.path.dirname(directory), 0o711)
    os.chmod(directory, 0o711)
    os.chmod(address, 0o777)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(address)
                os.write(w, s.recv(100) or b'EOF')
        finally:
            os._exit(0)
    os.close(w)
    try:
        answer = os.read(r, 100)
    finally:
        os.close(r)
        os.waitpid(child, 0)
        for path, mode in opened:
            os.chmod(path, mode)
    assert answer == b'EOF'
    assert mp._procstart._forkserver_pid() == pid


# -- children ----------------------------------------------------------------------------------------------------


def test_child_holds_no_server_descriptors(mp, fs, pipe):
    _, _, _, server = fork_server_info(mp)
    # While this child is forked, the server holds the connections of another client's children (a fork child's:
    # the server reaps those and reports their status on their connections).
    busy, busy_r = start_reporting(mp.get_context('fork'), pipe, _targets.start_forkserver_children, [0, 0], 1.0)
    time.sleep(0.3)
    p, r = start_reporting(fs, pipe, _targets.forkserver_view)
    pid, ppid, seen_server, fds = recv(r)
    finish(p)
    assert recv(busy_r) == ([0, 0], server)
    finish(busy)
    assert pid == p.pid and ppid == server  # the server forks and reaps it, as CPython's
    assert seen_server == server
    kinds = sorted(t.split(':')[0] for fd, t in fds.items() if fd > 2)
    # No socket (the listener, other clients' connections) and nothing else of the server's: the parent sentinel and
    # the child's own pidfd on the server, the alive pipe, procstart's resource tracker, the pipe it writes to, its
    # devnull stdin (and stdlib's resource tracker when this process runs one, shared as stdlib shares it).
    from multiprocessing import resource_tracker

    tracker = ['pipe'] if resource_tracker._resource_tracker._fd is not None else []
    assert kinds == sorted(['/dev/null', 'anon_inode', 'anon_inode', 'pipe', 'pipe', 'pipe', *tracker]), fds


def test_sentinel_works_with_connection_wait(mp, fs):
    from multiprocessing.connection import wait

    for code in range(20):
        p = fs.Process(target=_targets.os_exit, args=(code,))
        p.start()
        assert wait([p.sentinel], timeout=CHILD_TIMEOUT) == [p.sentinel]
        # Ready means ended, with the status known (the server's report is waited for).
        assert not p.is_alive()
        assert p.exitcode == code
        finish(p)


def test_terminate_kill_interrupt(mp, fs):
    for method, code in (('terminate', -signal.SIGTERM), ('kill', -signal.SIGKILL)):
        p = fs.Process(target=_targets.sleep, args=(30,))
        p.start()
        getattr(p, method)()
        finish(p)
        assert p.exitcode == code


def test_200_back_to_back_starts(mp, fs):
    codes = []
    for i in range(200):
        p = fs.Process(target=_targets.os_exit, args=(i % 256,))
        p.start()
        p.join(CHILD_TIMEOUT)
        codes.append(p.exitcode)
    assert codes == [i % 256 for i in range(200)]


# -- server death ----------------------------------------------------------------------------------------------


_OWNER_KILLS_SERVER = """
    import ctypes, signal
    if sys.argv[1] == 'self':
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    ctx = mp.get_context('forkserver')
    procs = [ctx.Process(target=_targets.sleep_then_exit, args=(2, code)) for code in (3, 4, 0)]
    victim = ctx.Process(target=_targets.sleep, args=(30,))
    for p in (*procs, victim):
        p.start()
    server = mp._procstart._forkserver_pid()
    os.kill(server, signal.SIGKILL)
    alive = [p.is_alive() for p in procs]
    victim.terminate()
    for p in (*procs, victim):
        p.join(20)
    q = ctx.Process(target=_targets.exit_with, args=(2,))
    q.start()
    q.join(20)
    print(json.dumps([alive, [p.exitcode for p in procs], victim.exitcode, q.exitcode,
                      mp._procstart._forkserver_pid() != server]))
"""

# A process that reaps every child it gets, as an init process or a subreaper (systemd, tini, docker --init) does:
# the server's orphans come to it when the server dies.
_REAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
owner = subprocess.Popen(sys.argv[1:])
while True:
    pid, status = os.waitpid(-1, 0)
    if pid == owner.pid:
        sys.exit(os.waitstatus_to_exitcode(status))
"""


def _pidfd_exit_info():
    """Whether this kernel gives a reaped process's exit status to pidfd holders (PIDFD_INFO_EXIT, Linux 6.15)."""
    import fcntl
    import struct

    pid = os.fork()
    if pid == 0:
        os._exit(7)
    fd = os.pidfd_open(pid)
    os.waitpid(pid, 0)
    info = bytearray(64)
    struct.pack_into('Q', info, 0, 8)
    try:
        fcntl.ioctl(fd, (3 << 30) | (64 << 16) | (0xFF << 8) | 11, info)
    except OSError:
        return False
    finally:
        os.close(fd)
    return struct.unpack_from('Q', info)[0] & 8 and struct.unpack_from('i', info, 60)[0] == 7 << 8


@pytest.mark.parametrize('reaper', ['self', 'init'])
def test_children_report_true_status_after_server_death(run_py, reaper):
    """The server's children outlive it; when they end, their clients still get their true exit status (CPython
    reports 255 at once and orphans them). The orphans go to the nearest subreaper or init: the client itself when it
    is a subreaper ('self': it reaps them), or a process that reaps them ('init': the kernel then keeps each status
    for the pidfd holder, Linux >= 6.15)."""
    if reaper == 'init' and not _pidfd_exit_info():
        pytest.skip('the kernel does not report exit status to pidfd holders (PIDFD_INFO_EXIT, Linux 6.15)')
    if reaper == 'self':
        proc = run_py(_OWNER_KILLS_SERVER, 'self')
    else:
        owner = SCRIPT_HEADER + textwrap.dedent(_OWNER_KILLS_SERVER)
        proc = run_py(
            f'import subprocess; subprocess.run([sys.executable, "-c", {_REAPER!r}, sys.executable, "-c", {owner!r}, '
            '"init"], check=True)'
        )
    alive, codes, victim, after, relaunched = last_json(proc)
    assert alive == [True, True, True]
    assert codes == [3, 4, 0]
    assert victim == -signal.SIGTERM
    assert after == 2 and relaunched


def test_children_of_other_processes_get_status_from_server(mp, fs, pipe):
    """A process that did not start the server (here a fork child) gets children the server reaps; exit codes and
    signals still come through."""
    p, r = start_reporting(mp.get_context('fork'), pipe, _targets.start_forkserver_children, [0, 3, 7])
    codes, server = recv(r)
    finish(p)
    assert codes == [0, 3, 7]
    assert server == mp._procstart._forkserver_pid()


def test_join_waits_for_the_child_when_the_server_dies(mp, fs, pipe):
    """join() waits until the orphaned child of a dead server really ends -- CPython returns at once while the orphan
    keeps running."""
    p, r = start_reporting(mp.get_context('fork'), pipe, _targets.start_forkserver_children, [3], 1.0)
    time.sleep(0.3)  # the grandchild is running
    started = time.monotonic()
    os.kill(mp._procstart._forkserver_pid(), signal.SIGKILL)
    codes, _ = recv(r)
    finish(p)
    # 255 unless whoever inherited the orphan reaped it (init here may or may not), then its true status.
    assert codes in ([255], [3])
    assert time.monotonic() - started >= 0.5
    assert run_process(fs, _targets.exit_with, 2).exitcode == 2  # relaunched, the dead server reaped


# -- one server per tree -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('method', ['fork', 'spawn', 'forkserver'])
def test_descendants_share_the_server(mp, fs, pipe, method):
    """CPython starts a server per process that uses forkserver (gh-86354), and a fork child of a server's owner
    fails with ChildProcessError."""
    p, r = start_reporting(mp.get_context('fork'), pipe, _targets.nested_server_pids, method)
    top, middle, grandchild, grandchild_code, middle_code = recv(r)
    finish(p)
    server = mp._procstart._forkserver_pid()
    assert (top, middle, grandchild) == (server, server, server)
    assert (grandchild_code, middle_code, p.exitcode) == (0, 0, 0)


def test_no_stray_socket_directories(mp, fs):
    address, *_ = fork_server_info(mp)
    mine = os.path.dirname(address)
    # The run's own temporary directory (conftest.py): every directory there is this run's.
    stray = [d for d in glob.glob(os.path.join(tempfile.gettempdir(), 'procstart-*')) if d != mine]
    assert stray == []


# -- interpreter and kernel ----------------------------------------------------------------------------------------


def test_server_runs_with_the_interpreter_flags_and_executable(tmp_path, run_py):
    out_file = tmp_path / 'flags.json'
    link = tmp_path / 'python-link'
    os.symlink(os.path.realpath(sys.executable), link)
    run_py(
        f"""
        mp.set_executable({str(link)!r})
        p = mp.get_context('forkserver').Process(target=_targets.dump_flags, args=({str(out_file)!r},))
        p.start(); p.join()
        assert p.exitcode == 0, p.exitcode
        server = mp._procstart._forkserver_pid()
        assert os.readlink(f'/proc/{{server}}/exe') == os.path.realpath({str(link)!r})
        with open(f'/proc/{{server}}/cmdline', 'rb') as f:
            assert f.read().split(b'\\0')[0] == os.fsencode({str(link)!r})
        """,
        flags=('-O', '-s'),
    )
    flags = json.loads(out_file.read_text())
    assert flags['optimize'] == 1
    assert flags['no_user_site'] == 1


def test_without_pidfd(run_py):
    """Kernels without pidfd (forced here): sentinels are pipes; exit codes, signals and the server's status reports
    for other processes' children work the same."""
    out = run_py("""
        os.environ['PROCSTART_DISABLE_PIDFD'] = '1'  # read at the first start
        import multiprocessing
        ctx = mp.get_context('forkserver')
        p = ctx.Process(target=_targets.sleep, args=(30,))
        p.start()
        kind = os.readlink(f'/proc/self/fd/{p.sentinel}').split(':')[0]
        p.terminate()
        p.join()
        codes = []
        for code in (0, 3):
            q = ctx.Process(target=_targets.exit_with, args=(code,))
            q.start()
            q.join()
            codes.append(q.exitcode)
        r, w = multiprocessing.Pipe(duplex=False)
        f = mp.get_context('fork').Process(target=_targets.start_forkserver_children, args=(w, [5, 6]))
        f.start()
        w.close()
        nested = r.recv()[0]
        f.join()
        print(json.dumps([kind, p.exitcode, codes, nested, f.exitcode]))
    """).stdout
    assert json.loads(out) == ['pipe', -signal.SIGTERM, [0, 3], [5, 6], 0]


# -- robustness (review findings) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'request_',
    [
        ('RQ', 3, 5),  # more descriptors attached than declared
        ('RQ', 9, 3),  # fewer
        ('XX', 3, 3),  # not a request
        ('RQ', 3, 300),  # more than one message can carry
    ],
    ids=['more-fds', 'fewer-fds', 'bad-magic', 'too-many-fds'],
)
def test_bad_requests_leak_no_descriptors_in_the_server(mp, fs, request_):
    magic, declared, attached = request_
    address, key, _, server = fork_server_info(mp)
    before = fd_count(server)
    r, w = os.pipe()
    try:
        with authenticated_socket(address, key) as s:
            header = magic.encode() + (0).to_bytes(2, 'little') + declared.to_bytes(4, 'little')
            fds = [r] * attached
            # At most 253 descriptors go in one message; more than a REQUEST may carry are sent with each byte.
            for i, start in enumerate(range(0, max(attached, 1), 253)):
                socket.send_fds(s, [header[i : i + 1]], fds[start : start + 253])
            s.sendall(header[i + 1 :])
            try:
                assert s.recv(16) == b''  # dropped, no reply
            except ConnectionResetError:
                pass
    finally:
        os.close(r)
        os.close(w)
    # Not more than before (it can be fewer: earlier tests' children may have been reaped meanwhile).
    assert wait_until(lambda: fd_count(server) <= before)
    assert run_process(fs, _targets.exit_with, 12).exitcode == 12


def test_owner_ignoring_sigchld(run_py):
    """A parent that ignores SIGCHLD when the server starts does not pass that on to the server (whose children's
    statuses the kernel would then discard)."""
    out = run_py("""
        import signal
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        ctx = mp.get_context('forkserver')
        codes = []
        for code in (0, 7, 255):
            p = ctx.Process(target=_targets.exit_with, args=(code,))
            p.start()
            p.join()
            codes.append(p.exitcode)
        print(json.dumps(codes))
    """).stdout
    assert json.loads(out) == [0, 7, 255]


def test_ctrl_c_while_the_server_does_not_answer(run_py):
    out = run_py("""
        import signal
        ctx = mp.get_context('forkserver')
        _targets.start_helpers(ctx)
        server = mp._procstart._forkserver_pid()
        os.kill(server, signal.SIGSTOP)
        print(_targets.interrupted(ctx.Process(target=_targets.noop).start))
        os.kill(server, signal.SIGCONT)
        q = ctx.Process(target=_targets.exit_with, args=(3,)); q.start(); q.join()
        print(q.exitcode)
    """).stdout.split('\n')
    assert out[:2] == ['interrupted', '3']
