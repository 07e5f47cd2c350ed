"""The spawn start method, Python side: the payload a spawned child receives, and the child's
entry point. The launcher (`src/spawn.rs`) starts the interpreter and writes the payload.

Wire layout, shared with `src/spawn.rs`: the child starts as

    <executable> <interpreter flags> -c '<CHILD_CODE>'

with descriptor 3 the read end of the payload pipe, 4 the parent sentinel (a pidfd of the
parent, or the read end of a pipe the parent holds), 5 and up the descriptors of stdlib objects
in the payload (`duplicate_for_child`), and nothing else besides 0, 1, 2. The parent closes
its end after writing the payload, which is one of:

- `M` + a marshal-encoded pair (preparation data, process) of plain values and by-name
  references (see `_encode`), when everything in it is that simple and small (`MARSHAL_BUDGET`
  bytes of strings at most): a module-level target and plain arguments, the common case. The
  child then needs no `_pickle`, whose import (it pulls in functools and collections) is a fifth
  of a spawn child's start-up.
- `S` + the pickled preparation data (CPython's keys), then the pickled `Process`: everything
  else, as CPython sends it but with protocol 5 (see `_readonly_arrays_as_stdlib` for what stays
  as protocol 4 gives it). No copy of the payload is made on its way: `payload` returns the
  pickler's writes (`_Segments`), big strings, bytearrays and buffers as the objects themselves,
  the launcher writes them to the pipe, and the child's unpickler reads each big one straight
  into the object it makes.

The child imports as little as it can: no stdlib `multiprocessing` unless the payload holds
stdlib objects, `runpy` only for the unusual main modules (`-m`, zip files, directories,
compiled files); it ends with `os._exit` after flushing and running atexit handlers instead of a
full interpreter shutdown.
"""

from __future__ import annotations

import _thread
import os
import sys

from . import _procstart, process
from ._on_import import on_import

PAYLOAD_FD = 3
PARENT_SENTINEL_FD = 4
FIRST_INHERITED_FD = 5
# The child must import procstart before it reads the parent's sys.path from the payload, and
# the parent may have found procstart only through a path set at run time (`-S`, `-I`,
# `sys.path.insert`): the child looks where the parent found it, after its own entries (so that
# nothing there shadows the standard library); prepare() then installs the parent's sys.path.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_code(module, function):
    """`-c` code that imports procstart where the parent found it and calls `function`."""
    return f'import sys; sys.path.append({_PACKAGE_PARENT!r}); from {module} import {function}; {function}()'


CHILD_CODE = entry_code('procstart.spawn', 'spawn_main')

_MARSHALLED, _STREAMED = b'M', b'S'
# The child's read buffer: at least a pipe's default capacity. Big strings, buffers and
# bytearrays bypass it: the unpickler reads them straight into the new objects.
_READ_BUFFER = 1 << 16

# The main modules a child replaced, kept alive (CPython's spawn.old_main_modules).
old_main_modules = []


def is_spawning():
    """True while a child's payload is being pickled (authkeys and locks may then be pickled)."""
    if getattr(_spawning, 'popen', None) is not None:
        return True
    mp_context = sys.modules.get('multiprocessing.context')
    return mp_context is not None and mp_context.get_spawning_popen() is not None


_spawning = _thread._local()


# -- parent side ---------------------------------------------------------------------------------


class _DupFd:
    """What `reduction.DupFd` pickles for a descriptor passed to the child."""

    def __init__(self, fd):
        self.fd = fd

    def detach(self):
        return inherited_fd(self.fd)


class _SpawningPopen:
    """Stands for the child while its payload is pickled: stdlib objects (Queue, Pipe,
    Lock, Manager proxies) ask it, through `multiprocessing.context.get_spawning_popen()`,
    to pass their descriptors to the child."""

    DupFd = _DupFd

    def __init__(self, method):
        self.method = method
        self.fds = []

    def duplicate_for_child(self, fd):
        if fd in self.fds:
            return FIRST_INHERITED_FD + self.fds.index(fd)
        self.fds.append(fd)
        return FIRST_INHERITED_FD + len(self.fds) - 1


_BOOTSTRAP_ERROR = """
        An attempt has been made to start a new process before the
        current process has finished its bootstrapping phase.

        This probably means that you are not using fork to start your
        child processes and you have forgotten to use the proper idiom
        in the main module:

            if __name__ == '__main__':
                freeze_support()
                ...

        The "freeze_support()" line can be omitted if the program
        is not going to be frozen to produce an executable.

        To fix this issue, refer to the "Safe importing of main module"
        section in https://docs.python.org/3/library/multiprocessing.html
        """


def _check_not_importing_main():
    if getattr(_procstart.current_process(), '_inheriting', False):
        raise RuntimeError(_BOOTSTRAP_ERROR)


# gh-109263 (3.13.12, 3.14.3): preparing a spawn or fork-server child reads the start method with
# allow_none=True, so that starting one through a concrete context does not lock the default in.
_PREPARE_ALLOW_NONE = sys.version_info >= (3, 14, 3) or (3, 13, 12) <= sys.version_info < (3, 14)


def get_preparation_data(name):
    """What a spawned child needs to look like its parent: CPython's `spawn.get_preparation_data`,
    and `install` while `procstart.install()` is in effect (`payload` adds `stdlib_tracker_fd` when
    there is one to share)."""
    _check_not_importing_main()
    current = _procstart.current_process()
    d = {'authkey': process.AuthenticationString(bytes(current.authkey))}
    util = sys.modules.get('multiprocessing.util')
    if util is not None:
        d['log_to_stderr'] = util._log_to_stderr
        if util._logger is not None:
            d['log_level'] = util._logger.getEffectiveLevel()
    sys_path = sys.path.copy()
    if '' in sys_path:
        sys_path[sys_path.index('')] = process.ORIGINAL_DIR
    from . import _default_context

    d.update(
        name=name,
        sys_path=sys_path,
        sys_argv=sys.argv,
        orig_dir=process.ORIGINAL_DIR,
        dir=os.getcwd(),
        start_method=_default_context.get_start_method(allow_none=_PREPARE_ALLOW_NONE),
    )
    install = sys.modules.get('procstart._install')
    if install is not None and install.installed():
        # Processes the child starts through stdlib are procstart's too.
        d['install'] = True
    main_module = sys.modules['__main__']
    main_mod_name = getattr(getattr(main_module, '__spec__', None), 'name', None)
    if main_mod_name is not None:
        d['init_main_from_name'] = main_mod_name
    else:
        main_path = getattr(main_module, '__file__', None)
        if main_path is not None:
            if not os.path.isabs(main_path) and process.ORIGINAL_DIR is not None:
                main_path = os.path.join(process.ORIGINAL_DIR, main_path)
            d['init_main_from_path'] = os.path.normpath(main_path)
    return d


def _main_is_importable():
    main_module = sys.modules['__main__']
    spec = getattr(main_module, '__spec__', None)
    return getattr(spec, 'name', None) is not None or getattr(main_module, '__file__', None) is not None


def _pickler_class():
    """stdlib's ForkingPickler when stdlib is loaded (its Connection and socket reducers live in
    its dispatch table), else the C pickler."""
    reduction = sys.modules.get('multiprocessing.reduction')
    if reduction is not None:
        return reduction.ForkingPickler
    import pickle

    return pickle.Pickler


def _refusing_main_pickler(base):
    """A pickler that refuses functions and classes of a `__main__` the child cannot import,
    with a message saying so, instead of a child dying on "Can't get attribute"."""
    import pickle
    import types

    class Pickler(base):
        def reducer_override(self, obj):
            if isinstance(obj, (types.FunctionType, type)) and getattr(obj, '__module__', None) == '__main__':
                raise pickle.PicklingError(
                    f"Can't pickle {obj!r} for the spawn start method: it is defined in __main__, which a "
                    'spawned child cannot import (the parent runs a REPL, python -c or a notebook). Define it '
                    'in a module, or use the fork start method.'
                )
            return NotImplemented

    return Pickler


# The `S` payload's pickles: protocol 5 writes a bytearray and a buffer (a NumPy array's data) in
# band from their own memory, where protocol 4 copies them into a new bytes first.
_STREAM_PROTOCOL = 5


class _Segments(list):
    """The file a streamed payload is pickled into: what the pickler writes, kept as the pickler
    wrote it, for the launcher to write to the child's pipe once the child exists. The C pickler
    writes its frames (up to 64 KiB, new bytes each) and every big bytes, bytearray or buffer as
    the object itself (not a copy): those are kept as a byte view, whose export keeps a bytearray
    from being resized until the launcher has written it."""

    def write(self, data):
        if type(data) is not bytes:
            raw = getattr(data, 'raw', None)
            data = raw() if raw is not None else memoryview(data).cast('B')
        self.append(data)

    def release(self):
        for data in self:
            if type(data) is memoryview:
                data.release()
        self.clear()


def _readonly_arrays_as_stdlib(base):
    """Before 3.14, stdlib pickles with protocol 4, which makes a read-only NumPy array writable
    in the child; protocol 5 keeps it read-only. Such arrays are pickled as protocol 4 does."""
    import pickle

    numpy = sys.modules.get('numpy')
    if numpy is None or pickle.DEFAULT_PROTOCOL >= _STREAM_PROTOCOL:
        return base
    ndarray = numpy.ndarray

    class Pickler(base):
        def reducer_override(self, obj):
            if isinstance(obj, ndarray) and not obj.flags.writeable:
                return obj.__reduce_ex__(4)
            parent = getattr(super(), 'reducer_override', None)
            return NotImplemented if parent is None else parent(obj)

    return Pickler


def _dumps(pickler_class, obj):
    import io

    buf = io.BytesIO()
    pickler_class(buf).dump(obj)
    # getvalue(), not getbuffer(): an export of the buffer caught in a traceback cycle (a failed
    # pickle) is collected after its BytesIO, which crashes 3.12.0-3.12.1 (gh-111049) and prints
    # an ignored BufferError on 3.13 and 3.14 (gh-111331). getvalue() hands over the buffer
    # itself when it is full, without a copy.
    return buf.getvalue()


def _culprit(pickler_class, obj, path, depth=0):
    """The innermost part of `obj` that fails to pickle, as a path such as `args[1]`."""
    if depth > 4:
        return path
    if isinstance(obj, (tuple, list)):
        parts = ((f'{path}[{i}]', item) for i, item in enumerate(obj))
    elif isinstance(obj, dict):
        parts = ((f'{path}[{key!r}]', value) for key, value in obj.items())
    elif hasattr(obj, '__dict__') and not isinstance(obj, type) and not callable(obj):
        parts = ((f'{path}.{name}', value) for name, value in vars(obj).items())
    else:
        return path
    for part_path, part in parts:
        try:
            _dumps(pickler_class, part)
        except Exception:
            return _culprit(pickler_class, part, part_path, depth + 1)
    return path


def _explanation(pickler_class, process_obj, method):
    """Where in `process_obj` the part that cannot be pickled sits, as a note for the error."""
    state = dict(vars(process_obj))
    where = None
    for name in ('_target', '_args', '_kwargs'):
        if name in state:
            try:
                _dumps(pickler_class, state[name])
            except Exception:
                label = {'_target': 'target', '_args': 'args', '_kwargs': 'kwargs'}[name]
                where = _culprit(pickler_class, state[name], label)
                break
    if where is None:
        where = _culprit(pickler_class, {k: v for k, v in state.items() if k != '_config'}, 'process')
    return f'procstart: {where} of {process_obj!r} cannot be pickled for the {method} start method'


def _explain(pickler_class, process_obj, error, method):
    """Add to `error`, pickle's own (type, message and notes as CPython's), a note naming the part of
    `process_obj` that cannot be pickled. Python 3.10 has no notes: the error stays as it is."""
    if not hasattr(error, 'add_note'):
        return
    try:
        note = _explanation(pickler_class, process_obj, method)
    except Exception:
        return
    error.add_note(note)


class _NotPlain(Exception):
    """Raised by `_encode` for what only pickle can carry."""


_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes)

# The most bytes of str and bytes a marshalled payload carries: past it, the pickle stream costs
# less than marshal's copies (it is written from the objects themselves, and read into them).
MARSHAL_BUDGET = 256 << 10


class _Seen(set):
    """The containers `_encode` has met, and how many more bytes of strings it may take."""

    def __init__(self, budget):
        super().__init__()
        self.budget = budget


def _by_name(obj):
    """(module, qualname) of a function or class that pickle would save by reference, when the
    child can find it again by that name."""
    module, qualname = getattr(obj, '__module__', None), getattr(obj, '__qualname__', None)
    if not isinstance(module, str) or not isinstance(qualname, str) or '<' in qualname:
        raise _NotPlain
    if module == '__main__' and not _main_is_importable():
        raise _NotPlain
    found = sys.modules.get(module)
    for part in qualname.split('.'):
        found = getattr(found, part, None)
    if found is not obj:
        raise _NotPlain
    return ('r', module, qualname)


def _encode(obj, seen):
    """`obj` as a marshal-able tree: plain values as themselves, every other node a tuple
    tagged by its first item. Containers met twice (shared or recursive) are left to pickle,
    which keeps their identity."""
    import types

    kind = type(obj)
    if kind in _PLAIN_TYPES:
        if kind is bytes or kind is str:
            # Big strings go to the pickle stream, which the child reads straight into them.
            seen.budget -= len(obj)
            if seen.budget < 0:
                raise _NotPlain
        return obj
    if kind in (tuple, list, dict):
        if id(obj) in seen:
            raise _NotPlain
        seen.add(id(obj))
        if kind is dict:
            return ('d', *(node for item in obj.items() for node in (_encode(item[0], seen), _encode(item[1], seen))))
        return ('t' if kind is tuple else 'l', *(_encode(item, seen) for item in obj))
    if kind is process.AuthenticationString:
        return ('a', bytes(obj))
    if kind in (types.FunctionType, types.BuiltinFunctionType) or isinstance(obj, type):
        return _by_name(obj)
    raise _NotPlain


def _encode_process(process_obj, seen):
    import copyreg

    cls = type(process_obj)
    base = _procstart.Process
    # getattr: before 3.11, object has no __getstate__, and neither has a stdlib Process class.
    if (
        cls.__reduce_ex__ is not object.__reduce_ex__
        or cls.__reduce__ is not object.__reduce__
        or getattr(cls, '__getstate__', None) is not base.__getstate__
        or getattr(cls, '__setstate__', None) is not base.__setstate__
        or cls in copyreg.dispatch_table
    ):
        raise _NotPlain
    return ('o', _by_name(cls), _encode(process_obj.__getstate__(), seen))


def _decode(node):
    if type(node) is not tuple:
        return node
    tag = node[0]
    if tag == 't':
        return tuple(_decode(item) for item in node[1:])
    if tag == 'l':
        return [_decode(item) for item in node[1:]]
    if tag == 'd':
        items = iter(node[1:])
        return {_decode(key): _decode(value) for key, value in zip(items, items, strict=True)}
    if tag == 'r':
        # As pickle's find_class.
        __import__(node[1])
        found = sys.modules[node[1]]
        for part in node[2].split('.'):
            found = getattr(found, part)
        return found
    if tag == 'a':
        return process.AuthenticationString(node[1])
    if tag == 'o':
        cls = _decode(node[1])
        obj = cls.__new__(cls)
        obj.__setstate__(_decode(node[2]))
        return obj
    raise ValueError(f'unknown payload node {tag!r}')


def _marshalled(prep, process_obj):
    """The `M` payload's segments, or None when it cannot carry these."""
    import marshal

    # marshal's format is the running interpreter's own.
    if os.fsencode(_procstart.get_executable()) != os.fsencode(sys.executable or ''):
        return None
    try:
        prep_seen = _Seen(MARSHAL_BUDGET)
        encoded = _encode(prep, prep_seen)
        process_seen = _Seen(prep_seen.budget)
        encoded = (encoded, _encode_process(process_obj, process_seen))
    except (_NotPlain, RecursionError):
        return None
    return [_MARSHALLED, marshal.dumps(encoded)]


def _share_stdlib_tracker(prep, popen):
    """Pass stdlib's resource tracker, when this process runs one, as CPython's spawn does:
    the child's stdlib semaphores and shared memory then register with the same tracker."""
    from . import resource_tracker as ours

    tracker = getattr(sys.modules.get('multiprocessing.resource_tracker'), '_resource_tracker', None)
    if tracker is None or tracker is ours._resource_tracker:
        # Under install() stdlib's tracker is procstart's, which every child receives anyway.
        return
    fd = tracker._fd
    if fd is not None:
        prep['stdlib_tracker_fd'] = popen.duplicate_for_child(fd)


def _share_tracker(prep, popen):
    """Start procstart's resource tracker if this process has none (CPython's spawn does the
    same) and pass it: the whole tree shares one."""
    from . import resource_tracker

    try:
        resource_tracker.ensure_running()
    except OSError as error:
        # No tracker (no memfd execution, no /proc): the child still starts; only the cleanup
        # after a crash is missing, and register() itself reports the error.
        import warnings

        warnings.warn(f"procstart's resource tracker could not start: {error}", RuntimeWarning, stacklevel=2)
        return
    prep['tracker'] = (popen.duplicate_for_child(_procstart._tracker_fd()), _procstart._tracker_pid())


def _share_forkserver(prep, popen):
    """Pass this process's fork server, so that the child's forkserver processes come from the
    same server instead of one server per process (CPython gh-86354)."""
    info = _procstart._forkserver_info()
    if info is not None:
        address, key, alive_fd, pid = info
        prep['forkserver'] = (address, key, popen.duplicate_for_child(alive_fd), pid)


def payload(process_obj, method='spawn', parent_death=None):
    """The bytes a spawned or fork-server child reads, and the descriptors it must inherit for
    them. `parent_death`: how the child is to die with this process, if it is (the launcher's
    choice, see `src/launch.rs`)."""
    prep = get_preparation_data(process_obj._name)
    if parent_death is not None:
        prep['die_with_parent'] = (parent_death, os.getpid())
    env = getattr(process_obj, '_env', None)
    if method == 'forkserver' and env:
        # Set before the child imports anything of the parent's, as a spawned child has it
        # from its start (`src/spawn.rs` puts it in the new program's environment).
        prep['env'] = env
    popen = _SpawningPopen(method)
    _share_stdlib_tracker(prep, popen)
    _share_tracker(prep, popen)
    _share_forkserver(prep, popen)
    segments = _marshalled(prep, process_obj)
    if segments is not None:
        return segments, popen.fds
    pickler_class = _pickler_class()
    if not _main_is_importable():
        pickler_class = _refusing_main_pickler(pickler_class)
    pickler_class = _readonly_arrays_as_stdlib(pickler_class)
    mp_context = sys.modules.get('multiprocessing.context')
    _spawning.popen = popen
    if mp_context is not None:
        mp_context.set_spawning_popen(popen)
    segments = _Segments([_STREAMED])
    try:
        pickler_class(segments, _STREAM_PROTOCOL).dump(prep)
        try:
            pickler_class(segments, _STREAM_PROTOCOL).dump(process_obj)
        except Exception as error:
            _explain(pickler_class, process_obj, error, method)
            raise
    except BaseException:
        # No export of the arguments' buffers outlives a failed start (a traceback keeps frames).
        segments.release()
        raise
    finally:
        _spawning.popen = None
        if mp_context is not None:
            mp_context.set_spawning_popen(None)
    return segments, popen.fds


def command_line(code=CHILD_CODE):
    """argv of a spawned child: the executable, the running interpreter's flags, the entry."""
    import subprocess

    exe = _procstart.get_executable()
    return [
        os.fsencode(exe),
        *map(os.fsencode, subprocess._args_from_interpreter_flags()),
        b'-c',
        os.fsencode(code),
    ]


# -- child side ----------------------------------------------------------------------------------


def read_payload(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b''.join(chunks)


# In a fork-server child, the descriptors the payload's `duplicate_for_child` numbers stand for:
# they arrive wherever the server's descriptor table has room, not at FIRST_INHERITED_FD and up.
_inherited_fds = None


def inherited_fd(number):
    """The descriptor the parent's `duplicate_for_child` gave `number` for."""
    if _inherited_fds is None:
        return number
    return _inherited_fds[number - FIRST_INHERITED_FD]


def spawn_main():
    """Entry point of a spawned child (CPython's `spawn.spawn_main`)."""
    run_child(PAYLOAD_FD, PARENT_SENTINEL_FD)


def run_child(payload_fd, parent_sentinel, forked=False):
    """Read the payload, become the parent's child, run the process and exit (CPython's
    `spawn._main`). `forked`: in a fork-server child rather than a fresh interpreter."""
    stream = open(payload_fd, 'rb', buffering=_READ_BUFFER)  # noqa: SIM115 -- closed once loaded
    tag = stream.read(1)
    if forked and not tag:
        # The parent gave up on this child before sending it anything (Ctrl-C during start()).
        os._exit(1)
    if tag == _MARSHALLED:
        import marshal

        with stream:
            prep_node, process_data = marshal.loads(stream.read())
        prep, load = _decode(prep_node), _decode
    else:
        import _pickle

        # The process's pickle follows the preparation data's in the stream; it is loaded after
        # prepare(), which makes its classes importable.
        prep, load, process_data = _pickle.load(stream), _load_and_close, stream
    if 'die_with_parent' in prep:
        # First, so that a parent dying while this child imports its modules takes it along.
        _procstart._die_with_parent(*prep['die_with_parent'], parent_sentinel)
    if 'env' in prep:
        os.environ.update(prep['env'])
    # Until the process object takes over, this child is a main process that is still
    # inheriting: starting a process now is the unguarded-main mistake.
    main = process._MainProcess(config={'authkey': prep['authkey'], 'semprefix': '/mp'})
    main._inheriting = True
    _procstart._set_current_process(main)
    prepare(prep)
    # Stdlib objects in the payload ask stdlib's current process whether they are inherited (a Manager proxy then
    # takes no reference of its own, CPython's RebuildProxy): it must be this one while they are loaded.
    hook = on_import('multiprocessing.process', _stdlib_current_process_is_procstarts)
    try:
        process_obj = load(process_data)
    finally:
        if hook is not None:
            hook.cancel()
    del main._inheriting, process_data
    _procstart._run_child(process_obj, parent_sentinel, forked)


def _load_and_close(stream):
    import _pickle

    with stream:
        return _pickle.load(stream)


def _stdlib_current_process_is_procstarts(module):
    module._current_process = _procstart.current_process()


def prepare(data):
    """Make this child look like its parent, in CPython's order (`spawn.prepare`) but for the directory."""
    current = _procstart.current_process()
    if 'dir' in data:
        # Before anything that may import (the logging steps import multiprocessing.util): a fork-server
        # child starts in the server's directory, which may be gone, and 3.13.0-3.13.2 then fail an
        # import's module attribute look-ups with SystemError (gh-130932). CPython changes directory
        # after the logging steps; its children have multiprocessing.util loaded already.
        os.chdir(data['dir'])
    if 'name' in data:
        current.name = data['name']
    if 'authkey' in data:
        current.authkey = data['authkey']
    if data.get('log_to_stderr'):
        from multiprocessing import util

        util.log_to_stderr()
    if 'log_level' in data:
        from multiprocessing import util

        util.get_logger().setLevel(data['log_level'])
    if 'sys_path' in data:
        sys.path = data['sys_path']
    if 'sys_argv' in data:
        sys.argv = data['sys_argv']
    if 'orig_dir' in data:
        process.ORIGINAL_DIR = data['orig_dir']
    if 'stdlib_tracker_fd' in data:
        _share_stdlib_tracker_fd(inherited_fd(data['stdlib_tracker_fd']))
    if 'tracker' in data:
        fd, pid = data['tracker']
        _procstart._tracker_adopt(inherited_fd(fd), pid)
    if 'forkserver' in data:
        address, key, alive_fd, pid = data['forkserver']
        _procstart._forkserver_adopt(address, key, inherited_fd(alive_fd), pid)
    if 'start_method' in data:
        from . import _default_context

        _default_context.set_start_method(data['start_method'], force=True)
    if data.get('install'):
        from . import _install

        _install.install()
    if 'init_main_from_name' in data:
        _fixup_main_from_name(data['init_main_from_name'])
    elif 'init_main_from_path' in data:
        _fixup_main_from_path(data['init_main_from_path'])


def _share_stdlib_tracker_fd(fd):
    """Hands the parent's stdlib resource tracker to `multiprocessing.resource_tracker` if this child
    ever imports it, so that a child which does not use stdlib's semaphores or shared memory never
    imports stdlib `multiprocessing` for it."""

    def share(module):
        module._resource_tracker._fd = fd

    on_import('multiprocessing.resource_tracker', share)


def _install_main(main_content):
    main_module = type(sys)('__mp_main__')
    main_module.__dict__.update(main_content)
    sys.modules['__main__'] = sys.modules['__mp_main__'] = main_module


def _fixup_main_from_name(mod_name):
    current_main = sys.modules['__main__']
    if mod_name == '__main__' or mod_name.endswith('.__main__'):
        return
    if getattr(getattr(current_main, '__spec__', None), 'name', None) == mod_name:
        return
    old_main_modules.append(current_main)
    import runpy

    _install_main(runpy.run_module(mod_name, run_name='__mp_main__', alter_sys=True))


def _fixup_main_from_path(main_path):
    current_main = sys.modules['__main__']
    main_name = os.path.splitext(os.path.basename(main_path))[0]
    if main_name == 'ipython':
        return
    if getattr(current_main, '__file__', None) == main_path:
        return
    old_main_modules.append(current_main)
    code = _source_file_code(main_path)
    if code is None:
        import runpy

        _install_main(runpy.run_path(main_path, run_name='__mp_main__'))
    else:
        _install_main(_run_main_code(code, main_path))


def _source_file_code(path):
    """The code of `path` if it is a plain source file, else None (then runpy handles it)."""
    import zipimport

    # The frozen import machinery, always loaded; importing it as importlib's submodule
    # would import the importlib package (and warnings) too.
    from _frozen_importlib_external import MAGIC_NUMBER

    if not os.path.isfile(path):
        return None
    try:
        zipimport.zipimporter(path)
    except zipimport.ZipImportError:
        pass
    else:
        return None
    import io

    with io.open_code(path) as f:
        source = f.read()
    if source.startswith(MAGIC_NUMBER):
        return None
    return compile(source, path, 'exec', dont_inherit=True)


def _run_main_code(code, path):
    """`runpy.run_path(path, run_name='__mp_main__')` for a source file, without runpy's imports:
    the same globals, `sys.modules['__mp_main__']` and `sys.argv[0]` set while it runs, and a copy
    of the globals returned."""
    module = type(sys)('__mp_main__')
    module.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__='', __spec__=None)
    saved_module = sys.modules.get('__mp_main__')
    saved_argv0 = sys.argv[0] if sys.argv else None
    sys.modules['__mp_main__'] = module
    if sys.argv:
        sys.argv[0] = path
    try:
        exec(code, module.__dict__)  # noqa: S102 -- running the main module is the point
    finally:
        if sys.argv:
            sys.argv[0] = saved_argv0
        if saved_module is None:
            del sys.modules['__mp_main__']
        else:
            sys.modules['__mp_main__'] = saved_module
    return module.__dict__.copy()
