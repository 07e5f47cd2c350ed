"""Random bytes at procstart's two wire formats, live: the fork server's handshake and request frames, and the
resource tracker's lines. Neither may crash, hang or leak, and the next legitimate request must still work. Seeded,
so that a failure can be replayed (``PROCSTART_FUZZ_SEED``)."""

import multiprocessing.connection
import os
import random
import socket
import uuid

import _targets
import pytest
from _support import (
    CHILD_TIMEOUT,
    answer_challenge,
    authenticated_socket,
    fd_count,
    fork_server_info,
    last_json,
    run_process,
    shm_path,
    skip_on_stdlib,
    wait_until,
)

pytestmark = skip_on_stdlib("procstart's own wire formats")

SEED = int(os.environ.get('PROCSTART_FUZZ_SEED', '20261124'))
ROUNDS = 300


def _random_bytes(rng, limit):
    return rng.randbytes(rng.randrange(limit))


def _one_connection(rng, address, key, pipe_fd):
    """Connect and send something random: instead of the digest of the server's challenge, instead of the client's
    own challenge, or as the request after the handshake (multiprocessing.connection's, see _support)."""
    stage = rng.choice(['digest', 'challenge', 'request', 'request-with-fds'])
    if stage == 'digest':
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CHILD_TIMEOUT)
        s.connect(address)
        s.recv(4 + 11 + 8 + 40)  # the server's challenge
        frame = _random_bytes(rng, 200)
    elif stage == 'challenge':
        conn = multiprocessing.connection.Client(address)
        answer_challenge(conn, key)
        s = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        frame = _random_bytes(rng, 200)
    else:
        s = authenticated_socket(address, key)
        frame = _random_bytes(rng, 24)
    with s:
        s.settimeout(CHILD_TIMEOUT)
        try:
            if stage == 'request-with-fds' and frame:
                socket.send_fds(s, [frame], [pipe_fd] * rng.randrange(1, 8))
            elif frame:
                s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass  # a reply only if the frame happened to be a valid request: then the child reads no payload
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_random_frames_at_the_fork_server(mp):
    ctx = mp.get_context('forkserver')
    run_process(ctx, _targets.noop)
    address, key, _, server = fork_server_info(mp)
    fds_before = fd_count(server)
    rng = random.Random(SEED)
    r, w = os.pipe()
    try:
        for _ in range(ROUNDS):
            _one_connection(rng, address, key, r)
    finally:
        os.close(r)
        os.close(w)
    assert mp._procstart._forkserver_pid() == server  # not crashed, not replaced
    # Back to where it was or below (earlier tests' children may still be reaped meanwhile, which only lowers it).
    assert wait_until(lambda: fd_count(server) <= fds_before)
    assert run_process(ctx, _targets.exit_with, 5).exitcode == 5


def test_random_lines_at_the_tracker(run_py):
    name = '/mp-fuzz-' + uuid.uuid4().hex[:10]
    out = run_py(f"""
        import _multiprocessing, random
        from procstart import resource_tracker
        rt = resource_tracker._resource_tracker
        sem = _multiprocessing.SemLock(1, 1, 1, {name!r}, False)
        resource_tracker.register({name!r}, 'semaphore')
        fd = rt.getfd()
        pid = rt._pid
        rng = random.Random({SEED})
        for _ in range({ROUNDS}):
            os.write(fd, rng.randbytes(rng.randrange(512)))
        os.write(fd, b'\\n')
        alive = rt._check_alive()
        rt._stop()
        print(json.dumps([alive, rt._exitcode, os.path.exists({shm_path(name)!r})]))
    """)
    alive, exitcode, still_there = last_json(out)
    assert alive
    # Garbage reported (3), or, when the leak was the last thing to happen, the registered semaphore cleaned up (1).
    assert exitcode in (1, 3)
    assert not still_there
    assert 'procstart resource_tracker: UserWarning' in out.stderr


@pytest.mark.parametrize('size', [1, 511, 512, 4095, 4096, 4097, 100_000])
def test_tracker_line_lengths(run_py, size):
    out = run_py(f"""
        from procstart import resource_tracker
        rt = resource_tracker._resource_tracker
        fd = rt.getfd()
        data = b'x' * {size} + b'\\n'
        while data:
            data = data[os.write(fd, data[:512]):]
        ok = rt._check_alive()
        rt._stop()
        print(json.dumps([ok, rt._exitcode]))
    """)
    assert last_json(out) == [True, 3]
