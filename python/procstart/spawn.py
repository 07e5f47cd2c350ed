"""The spawn start method, Python side, as CPython's spawn.py: the preparation data that makes a child look like its
parent, the command line, and the child's side: its entry point, reading the payload, `prepare` and the main module.
The launcher (`src/launch/spawn.rs`) starts the interpreter and writes the payload, which the parent builds in
`popen_spawn.py`, with `reduction.py`'s pickling policy. A fork-server child enters at `run_child` too.

Wire layout, shared with `src/launch/payload.rs`: the child starts as

    <executable> <interpreter flags> -c '<CHILD_CODE>'

with descriptor 3 the read end of the payload pipe, 4 the parent sentinel (a pidfd of the
parent, or the read end of a pipe the parent holds), 5 and up the descriptors of stdlib objects
in the payload (`popen_spawn`'s `duplicate_for_child`), and nothing else besides 0, 1, 2. The parent writes the
payload (`src/launch/transport.rs`), which is one of:

- `M` + a marshal-encoded pair (preparation data, process) of plain values and by-name
  references (see `reduction._encode`), when everything in it is that simple and small
  (`reduction.MARSHAL_BUDGET` bytes of strings at most): a module-level target and plain arguments, the common
  case. The child then needs no `_pickle`, whose import (it pulls in functools and collections) is a fifth of a
  spawn child's start-up. The parent closes its end once it is written; the child reads to the end.
- `S` + the pickled preparation data (CPython's keys), then the pickled `Process`: everything
  else, as CPython sends it but with protocol 5 (see `reduction._readonly_arrays_as_stdlib` for what stays
  as protocol 4 gives it). No copy of the payload is made on its way: `popen_spawn.payload` returns the
  pickler's writes (`reduction._Segments`), big strings, bytearrays and buffers as the objects themselves,
  the launcher writes them to the pipe, and the child's unpickler reads each big one straight
  into the object it makes, exactly: nothing here reads to the end of the pipe. The parent keeps its end open
  and the target and arguments alive until the child closes its end, which it does once the payload is loaded
  (its end then reports `POLLERR`, see `src/launch/payload.rs`).

The child imports as little as it can: no stdlib `multiprocessing` unless the payload holds
stdlib objects, `runpy` only for the unusual main modules (`-m`, zip files, directories,
compiled files); it ends with `os._exit` after flushing and running atexit handlers instead of a
full interpreter shutdown.
"""

from __future__ import annotations

import io
import os
import sys

from . import _procstart, process, reduction
from ._on_import import on_import
from .context import _default_context

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
# Reads from this size on have their pages faulted in by a second thread (`_PayloadReader`).
_PREFAULT_MIN = 1 << 20


class _PayloadReader(io.BufferedReader):
    """The payload pipe as the unpickler reads it, which reads each big object straight into the new object's
    pages: those pages are fresh, and the kernel zeroes each on its first touch, which costs as much as copying
    into it. A second thread takes those faults from the end of the object while this one reads from its start
    (`src/child/prefault.rs`)."""

    def readinto(self, buffer):
        if len(buffer) < _PREFAULT_MIN:
            return super().readinto(buffer)
        with _procstart._prefault(buffer):
            return super().readinto(buffer)


# The main modules a child replaced, kept alive (CPython's spawn.old_main_modules).
old_main_modules = []


# -- parent side ---------------------------------------------------------------------------------


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
    and `install` while `procstart.install()` is in effect (`popen_spawn.payload` adds the trackers
    and the fork server it shares)."""
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
        # Processes the child starts through stdlib are procstart's too. The function travels by name, so that the
        # child imports `_install` only when it is needed, and this module does not import it (it imports us).
        d['install'] = install.install
    main_module = sys.modules['__main__']
    main_mod_name = getattr(getattr(main_module, '__spec__', None), 'name', None)
    if main_mod_name is not None:
        d['init_main_from_name'] = main_mod_name
    else:
        # CPython sends a program read from standard input as the file '<stdin>', which its child then fails to
        # open (FileNotFoundError): procstart sends no file, as for `python -c`.
        main_path = process.main_file(main_module)
        if main_path is not None:
            if not os.path.isabs(main_path) and process.ORIGINAL_DIR is not None:
                main_path = os.path.join(process.ORIGINAL_DIR, main_path)
            d['init_main_from_path'] = os.path.normpath(main_path)
    return d


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
    stream = _PayloadReader(io.FileIO(payload_fd, 'rb'), _READ_BUFFER)
    tag = stream.read(1)
    if forked and not tag:
        # The parent gave up on this child before sending it anything (Ctrl-C during start()). The tag comes
        # first in every payload, also one whose pipe the parent keeps open: nothing waits for the end here.
        os._exit(1)
    if tag == _MARSHALLED:
        import marshal

        with stream:
            prep_node, process_data = marshal.loads(stream.read())
        prep, load = reduction._decode(prep_node), reduction._decode
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
    """The process, from the rest of the pickled payload; then closes the pipe, which tells the parent that the
    payload is loaded: it lets go of the objects it kept alive for it."""
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
        _default_context.set_start_method(data['start_method'], force=True)
    if 'install' in data:
        data['install']()
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
