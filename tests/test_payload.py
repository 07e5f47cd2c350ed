"""A spawn or fork-server child's arguments on their way through its payload (issue 14): big ones travel in a
pickle stream written from the objects themselves (`procstart/reduction.py`'s `_Segments`, `src/launch/transport.rs`),
small plain ones marshalled. Whatever the way, the child receives what stdlib's child receives (types, values,
writability, shared references), what cannot be pickled fails at start() as under stdlib, and nothing is left behind
in the parent, even when the child dies while its payload is being written or loaded."""

import array
import json
import multiprocessing
import os
import signal
import threading
import time
from functools import partial

import _targets
import pytest
from _support import IS_STDLIB, finish, fork_server_info, run_process, start_process, wait_until

METHODS = pytest.mark.parametrize('method', ['spawn', 'forkserver'])
MIB = 1 << 20


def _received(ctx, tmp_path, *args):
    path = tmp_path / f'{ctx.get_start_method()}-{id(ctx)}.json'
    assert run_process(ctx, _targets.describe_buffers_to_file, str(path), *args).exitcode == 0
    return json.loads(path.read_text())


def _pattern(size):
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def _cases():
    big_bytes, big_bytearray = b'b' * (MIB + 1), bytearray(b'a' * MIB)
    return {
        'small': (b'ab', bytearray(b'cd'), array.array('i', [1, 2, 3]), 'str'),
        'big': (big_bytes, big_bytearray, array.array('d', range(300_000)), 'é' * 300_000),
        'shared-big': (big_bytes, big_bytes, big_bytearray, big_bytearray),
        'shared-small': (b'xy' * 10, b'xy' * 10, bytearray(3)) * 2,
        'plain-bytearrays': (bytearray(b'cd'), bytearray(), bytearray(range(256)) * 4),
        'many-small': ([bytes([i % 256]) * 1000 for i in range(1000)], b''),
        'empty': (b'', bytearray(), array.array('b')),
    }


@METHODS
@pytest.mark.parametrize('case', list(_cases()))
def test_buffers_arrive_as_under_stdlib(mp, method, case, tmp_path):
    args = _cases()[case]
    ours = _received(mp.get_context(method), tmp_path, *args)
    theirs = _received(multiprocessing.get_context(method), tmp_path, *args)
    assert ours == theirs
    if case.startswith('shared'):
        assert ours['same']


@METHODS
def test_arguments_are_not_changed_or_held_by_start(mp, method, tmp_path):
    ba = bytearray(b'x' * (2 * MIB))
    p = start_process(mp.get_context(method), _targets.describe_buffers_to_file, str(tmp_path / 'j'), ba)
    # No export of the bytearray outlives start(): it can be resized at once.
    ba.extend(b'yz')
    finish(p)
    assert p.exitcode == 0
    assert len(ba) == 2 * MIB + 2
    assert json.loads((tmp_path / 'j').read_text())['args'][0]['len'] == 2 * MIB


NUMPY_SCRIPT = """
import multiprocessing
import numpy as np

method, path = sys.argv[1], sys.argv[2]
big = np.arange(MIB // 8, dtype=np.float64)
readonly = np.arange(MIB // 8, dtype=np.int64)
readonly.flags.writeable = False
small_readonly = np.arange(10, dtype=np.int8)
small_readonly.flags.writeable = False
args = (
    big,
    big,
    readonly,
    small_readonly,
    np.asfortranarray(np.arange(MIB // 8, dtype=np.float32).reshape(512, -1)),
    big[::3],
    np.array(7.5),
    np.zeros((0, 3)),
    np.frombuffer(bytearray(b'q' * MIB), dtype=np.uint8),
)
results = []
for library in (mp, multiprocessing):
    ctx = library.get_context(method)
    p = ctx.Process(target=_targets.describe_buffers_to_file, args=(path, *args))
    p.start()
    p.join()
    assert p.exitcode == 0, p.exitcode
    with open(path) as f:
        results.append(json.load(f))
print(json.dumps(results))
""".replace('MIB', str(MIB))


@METHODS
def test_numpy_arrays_arrive_as_under_stdlib(run_py, method, tmp_path):
    # In a fresh interpreter: numpy's import may start threads, which the fork tests after this one would warn of.
    pytest.importorskip('numpy')
    ours, theirs = json.loads(run_py(NUMPY_SCRIPT, method, tmp_path / 'j').stdout)
    assert ours == theirs
    assert ours['same'] == [[0, 1]]
    # Writable arrays stay writable (and writing to them works in the child).
    assert ours['args'][0]['writeable'] and ours['args'][8]['writeable']


@METHODS
@pytest.mark.parametrize('size', [10, 2 * MIB])
def test_unpicklable_argument_fails_at_start_as_under_stdlib(mp, method, size):
    ba = bytearray(size)
    errors = []
    for library in (mp, multiprocessing):
        p = library.get_context(method).Process(target=_targets.describe_buffers_to_file, args=('x', ba, lambda: 0))
        with pytest.raises(Exception) as info:
            p.start()
        errors.append((type(info.value), str(info.value)))
        del info, p
        ba.extend(b'1')  # not held by the failed start
        ba[-1:] = b''
    assert errors[0] == errors[1]


def _children_of(pid):
    with open(f'/proc/{pid}/task/{pid}/children') as f:
        return {int(child) for child in f.read().split()}


def _kill_first_new_child(parent, before, stop):
    while not stop.is_set():
        new = _children_of(parent) - before
        if new:
            for pid in new:
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.0005)


@pytest.mark.skipif(IS_STDLIB, reason="procstart's payload transport")
@METHODS
def test_child_killed_while_its_payload_is_written(mp, method):
    # start() returns (the child's exit code tells), and the leak checks find nothing left behind.
    ctx = mp.get_context(method)
    if method == 'forkserver':
        run_process(ctx, _targets.describe_buffers_to_file, os.devnull)
        parent = fork_server_info(mp)[3]
    else:
        parent = os.getpid()
    p = ctx.Process(target=_targets.describe_buffers_to_file, args=(os.devnull, b'k' * (64 * MIB)))
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_new_child, args=(parent, _children_of(parent), stop))
    killer.start()
    try:
        p.start()
    finally:
        stop.set()
        killer.join()
    finish(p)
    assert p.exitcode == -signal.SIGKILL


@METHODS
def test_child_killed_while_loading_its_payload(mp, method):
    p = start_process(
        mp.get_context(method), _targets.describe_buffers_to_file, os.devnull, b'k' * (4 * MIB), _targets.SlowToLoad(60)
    )
    time.sleep(0.5)
    p.kill()
    finish(p)
    assert p.exitcode == -signal.SIGKILL


@METHODS
def test_big_bytes_dropped_and_overwritten_after_start_arrive_intact(mp, method, tmp_path):
    # The parent splices big bytes into the pipe (the child reads them from the object's own pages): start() returns
    # only once the child has read them, so the memory may be reused at once.
    import hashlib

    size = 8 * MIB
    path = tmp_path / 'j'
    box = [bytes(range(256)) * (size // 256)]
    digest = hashlib.sha256(box[0]).hexdigest()
    p = start_process(mp.get_context(method), _targets.describe_buffers_to_file, str(path), box)
    box.clear()
    reuse = [bytearray(b'\xff' * size) for _ in range(4)]
    finish(p)
    assert p.exitcode == 0
    assert json.loads(path.read_text())['args'][0]['digest'] == digest
    del reuse


@METHODS
@pytest.mark.parametrize('kind', ['bytearray', 'array'])
def test_big_mutable_arguments_changed_after_start_arrive_as_they_were(mp, method, kind, tmp_path):
    # A bytearray's pages are spliced into the pipe too: start() returns only once the child has read them, so the
    # object may change at once.
    import hashlib

    size = 8 * MIB
    make = bytearray if kind == 'bytearray' else partial(array.array, 'B')
    arg = make(_pattern(size))
    digest = hashlib.sha256(arg).hexdigest()
    path = tmp_path / 'j'
    p = start_process(mp.get_context(method), _targets.describe_buffers_to_file, str(path), arg)
    arg[:] = make(b'\xff' * size)
    finish(p)
    assert p.exitcode == 0
    assert json.loads(path.read_text())['args'][0]['digest'] == digest


# -- the child's reader: big objects' pages faulted in by a second thread (src/child/prefault.rs) ------------------


@pytest.mark.skipif(IS_STDLIB, reason="procstart's child reader")
@pytest.mark.parametrize('size', [MIB - 1, MIB, 3 * MIB + 5, 40 * MIB])
def test_child_reader_reads_big_objects_exactly(size):
    import io

    from procstart import spawn

    data = _pattern(size)
    r, w = os.pipe()

    def write():
        with open(w, 'wb') as f:
            f.write(b'head' + data + b'tail')

    writer = threading.Thread(target=write)
    writer.start()
    with spawn._PayloadReader(io.FileIO(r, 'rb'), spawn._READ_BUFFER) as reader:
        assert reader.read(4) == b'head'
        into = bytearray(size)
        assert reader.readinto(into) == size
        assert into == data
        assert reader.read() == b'tail'
    writer.join()


@pytest.mark.skipif(IS_STDLIB, reason="procstart's child reader")
def test_child_reader_unpickles_big_objects_through_it():
    import io
    import pickle

    from procstart import spawn

    value = (_pattern(5 * MIB), bytearray(_pattern(3 * MIB + 1)), 'x' * (2 * MIB), [b'y' * 1000] * 3)
    r, w = os.pipe()

    def write():
        with open(w, 'wb') as f:
            pickle.dump(value, f, protocol=5)

    writer = threading.Thread(target=write)
    writer.start()
    with spawn._PayloadReader(io.FileIO(r, 'rb'), spawn._READ_BUFFER) as reader:
        assert pickle.load(reader) == value
    writer.join()


def _prefault_threads():
    threads = []
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                if f.read().strip() != 'procstart-prefa':
                    continue
            with open(f'/proc/self/task/{tid}/status') as f:
                blocked = next(line.split()[1] for line in f if line.startswith('SigBlk:'))
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads.append(int(blocked, 16))
    return threads


def _resident_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / MIB


@pytest.mark.skipif(IS_STDLIB, reason="procstart's child reader")
def test_prefault_faults_the_pages_in_on_a_thread_deaf_to_signals():
    import mmap

    from procstart import _procstart

    with mmap.mmap(-1, 512 * MIB) as buffer:  # mapped, none of it resident yet
        before = _resident_mib()
        with memoryview(buffer) as view, _procstart._prefault(view):
            masks = wait_until(_prefault_threads)  # named once running
            assert wait_until(lambda: _resident_mib() - before > 500, timeout=20)
        # Signals are for the threads that handle them: CPython's run on the main thread.
        catchable = set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP}
        assert len(masks) == 1 and {n for n in catchable if masks[0] >> (n - 1) & 1} == catchable
        assert _prefault_threads() == []
        assert not any(buffer[:: 1 << 16])  # nothing written


@pytest.mark.skipif(IS_STDLIB, reason="procstart's child reader")
@pytest.mark.parametrize('buffer', [b'read-only', memoryview(b'read-only'), 3])
def test_prefault_wants_a_writable_buffer(buffer):
    from procstart import _procstart

    with pytest.raises(TypeError, match='^expected a writable bytes-like object$'):
        _procstart._prefault(buffer)
