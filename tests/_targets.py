"""Child-process targets for the parity suite.

Everything a child runs lives here, at module level, so that spawn and forkserver can pickle it by reference.
The module under test is chosen by ``PROCSTART_TEST_TARGET`` (``stdlib`` -> :mod:`multiprocessing`, anything else
-> ``procstart``); children inherit the environment, so a child resolves the same module as the test process.

Importing this module must not touch the default context (the context tests import it in fresh interpreters).
"""

import atexit
import importlib
import os
import signal
import sys
import threading
import time

TARGET = os.environ.get('PROCSTART_TEST_TARGET', 'procstart')
MODNAME = 'multiprocessing' if TARGET == 'stdlib' else 'procstart'


def target_mp():
    """The module under test (``multiprocessing`` or ``procstart``)."""
    return importlib.import_module(MODNAME)


def outcome(func, *args, **kwargs):
    """``['ok', result]`` or ``[exception type name, str(exception)]``."""
    try:
        return ['ok', func(*args, **kwargs)]
    except BaseException as e:  # we report whatever the call raised, KeyboardInterrupt and SystemExit included
        return [type(e).__name__, str(e)]


def call_and_send(conn, func, *args):
    """Run ``func(*args)`` in the child and send :func:`outcome` back over ``conn``."""
    try:
        conn.send(outcome(func, *args))
    finally:
        conn.close()


# -- trivial targets ---------------------------------------------------------------------------------------------


def noop():
    pass


def return_value():
    return 42


def sleep(seconds):
    time.sleep(seconds)


def exit_with(code):
    sys.exit(code)


def exit_no_arg():
    sys.exit()


def raise_error():
    raise RuntimeError('kaboom')


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def os_exit(code):
    os._exit(code)


def start_helpers(ctx):
    """Start and join one child of ``ctx``, so that the long-lived helpers it needs (a fork server, a resource
    tracker) run from here on and what a script counts afterwards is not theirs."""
    p = ctx.Process(target=noop)
    p.start()
    p.join()


def square(x):
    return x * x


def send_args(conn, *args, **kwargs):
    conn.send([list(args), kwargs])
    conn.close()


def write_marker(path):
    with open(path, 'w') as f:
        f.write('marker')


class CallableTarget:
    """A picklable callable target (CPython test_lose_target_ref)."""

    def __call__(self, *args):
        pass


# -- introspection inside the child ------------------------------------------------------------------------------


def child_info():
    """What the child sees of itself and of its parent."""
    mp = target_mp()
    cur = mp.current_process()
    par = mp.parent_process()
    return {
        'getpid': os.getpid(),
        'getppid': os.getppid(),
        'name': cur.name,
        'pid': cur.pid,
        'ident': cur.ident,
        'identity': tuple(cur._identity),
        'daemon': cur.daemon,
        'authkey': bytes(cur.authkey),
        'stdlib_authkey': bytes(importlib.import_module('multiprocessing').current_process().authkey),
        'exitcode': cur.exitcode,
        'is_alive': cur.is_alive(),
        'repr': repr(cur),
        'type': type(cur).__name__,
        'parent_name': par.name,
        'parent_pid': par.pid,
        'parent_ident': par.ident,
        'parent_alive': par.is_alive(),
        'parent_repr': repr(par),
        'parent_type': type(par).__name__,
        'start_method': mp.get_start_method(),
        'start_method_allow_none': mp.get_start_method(allow_none=True),
        'stdin': sys.stdin.read(),
        'stdin_closed': sys.stdin.closed,
        'active_children': len(mp.active_children()),
        'native_id': threading.main_thread().native_id,
        'get_native_id': threading.get_native_id(),
    }


def repr_of(obj):
    return repr(obj)


def join_current():
    target_mp().current_process().join()


def misuse_foreign_process(other):
    """Call lifecycle methods on a Process object that this (child) process did not create."""
    results = {
        'join': outcome(other.join),
        'join_timeout': outcome(other.join, 0.01),
        'is_alive': outcome(other.is_alive),
        'start': outcome(other.start),
        'repr': outcome(repr, other),
    }
    return results


def start_grandchild():
    """Try to start a grandchild; used from daemonic children."""
    p = target_mp().Process(target=noop)
    p.start()
    p.join()
    return p.exitcode


def grandchild_report(conn):
    """Start a grandchild (default context) which reports :func:`child_info`; then report our view of it."""
    mp = target_mp()
    g = mp.Process(target=call_and_send, args=(conn, child_info))
    before = {'name': g.name, 'identity': tuple(g._identity)}
    g.start()
    g.join()
    conn.send(
        {
            'before': before,
            'exitcode': g.exitcode,
            'child_name': mp.current_process().name,
            'child_identity': tuple(mp.current_process()._identity),
            'second_name': mp.Process().name,
        }
    )
    conn.close()


def grandchild_sleeps(conn):
    """Start a grandchild that reports parent liveness before/after this child dies; then sleep until killed."""
    p = target_mp().Process(target=report_parent_status, args=(conn,))
    p.start()
    time.sleep(60)


def report_parent_status(conn):
    parent = target_mp().parent_process()
    conn.send('alive' if parent.is_alive() else 'not alive')
    parent.join(timeout=30)
    conn.send('alive' if parent.is_alive() else 'not alive')
    conn.close()


def fork_grandchild(conn, seconds):
    """Raw ``os.fork()`` a grandchild that inherits every fd (including the sentinel's write end) and sleeps."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(seconds)
        finally:
            os._exit(0)
    conn.send(pid)
    conn.close()


def sleep_then_write(path, seconds):
    time.sleep(seconds)
    with open(path, 'w') as f:
        f.write('done')


def register_atexit_writer(path):
    def write():
        with open(path, 'w') as f:
            f.write('atexit ran')

    atexit.register(write)


def wait_for_interrupt(conn, default_handler):
    if default_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    conn.send('ready')
    conn.close()
    time.sleep(30)


def interrupted(func, *args):
    """Call ``func(*args)`` with a SIGINT for this process 0.3 s in: ``'interrupted'`` if that raised
    KeyboardInterrupt at once (within 10 s), else what happened instead."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        func(*args)
    except KeyboardInterrupt:
        return 'interrupted' if time.monotonic() - t0 < 10 else 'interrupted late'
    return 'not interrupted'


# -- bootstrap details (CPython test_wait_for_threads / test_error_on_stdio_flush) -------------------------------


def start_threads(evt):
    def slow_setter():
        time.sleep(0.3)
        evt.set()

    def daemon_clearer():
        time.sleep(20)
        evt.clear()

    threading.Thread(target=slow_setter).start()
    threading.Thread(target=daemon_clearer, daemon=True).start()


def set_event(evt):
    evt.set()


def broken_stream(closed):
    """A stand-in for ``sys.stdout``/``sys.stderr`` that cannot be flushed: a closed stream, or None."""
    if not closed:
        return None
    import io

    stream = io.StringIO()
    stream.close()
    return stream


def break_stdio_then_set(evt, stream_name, action):
    setattr(sys, stream_name, broken_stream(action == 'close'))
    evt.set()


# -- interop ------------------------------------------------------------------------------------------------------


def queue_put(q, obj):
    q.put(obj)


def pipe_echo(conn):
    conn.send(('echo', conn.recv()))
    conn.close()


def value_add(value, n):
    for _ in range(n):
        with value.get_lock():
            value.value += 1


def lock_try(lock):
    got = lock.acquire(block=False)
    if got:
        lock.release()
    return got


def dict_set(d, key, value):
    d[key] = value


class ArrayElement:
    """``value``/``get_lock()`` over element 0 of a shared Array, so that :func:`value_add` works on it."""

    def __init__(self, arr):
        self.arr = arr

    def get_lock(self):
        return self.arr.get_lock()

    @property
    def value(self):
        return self.arr[0]

    @value.setter
    def value(self, v):
        self.arr[0] = v


class ListAppender:
    """Gives a ListProxy a ``put`` (so that :func:`queue_put` appends to it)."""

    def __init__(self, lst):
        self.lst = lst

    def put(self, obj):
        self.lst.append(obj)


# -- subclassing --------------------------------------------------------------------------------------------------


class _SubclassMixin:
    """Own ``__init__(x)`` + ``super().__init__()`` + ``run()`` override; the result travels over ``self.conn``."""

    def __init__(self, x):
        super().__init__()
        self.x = x
        self.extra = {'x': x, 'list': [1, 2, 3]}
        self.conn = None

    def run(self):
        mp = target_mp()
        self.conn.send(
            {
                'x': self.x,
                'extra': self.extra,
                'name': self.name,
                'type': type(self).__name__,
                'is_current': mp.current_process() is self,
            }
        )
        self.conn.close()
        sys.exit(self.x)


def __getattr__(name):
    # Subclasses of ``ctx.Process`` for each start method, created on first use (here or when a spawn/forkserver
    # child unpickles ``_targets.Sub_<method>``) so that importing this module never calls get_context().
    if name.startswith('Sub_'):
        method = name[len('Sub_') :]
        mp = target_mp()
        base = mp.Process if method == 'default' else mp.get_context(method).Process
        cls = type(name, (_SubclassMixin, base), {'__module__': __name__, '__qualname__': name})
        globals()[name] = cls
        return cls
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# -- spawn (test_spawn.py) ----------------------------------------------------------------------------------------


def open_fds():
    """{fd: readlink target} of this process (the directory fd used for the listing is left out)."""
    fds = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            fds[int(name)] = os.readlink(f'/proc/self/fd/{name}')
        except OSError:
            continue
    return fds


def dump_json(path, obj):
    import json

    with open(path, 'w') as f:
        json.dump(obj, f)


def spawn_state():
    """What a spawn child sees of its interpreter: argv, path, cwd, __main__, parent, stdin (JSON-able)."""
    mp = target_mp()
    parent = mp.parent_process()
    main = sys.modules.get('__main__')
    return {
        'pid': os.getpid(),
        'argv': sys.argv,
        'path': sys.path,
        'cwd': os.getcwd(),
        'main_name': getattr(main, '__name__', None),
        'main_is_mp_main': main is sys.modules.get('__mp_main__'),
        'name': mp.current_process().name,
        'parent_name': parent.name,
        'parent_pid': parent.pid,
        'parent_alive': parent.is_alive(),
        'stdin': sys.stdin.read(),
    }


def dump_spawn_state(path, **extra):
    """Write :func:`spawn_state` (plus ``extra``) as JSON to ``path``."""
    dump_json(path, dict(spawn_state(), **extra))


def dump_fds(path):
    """Write this process's fd table as JSON (listed before the output file is opened)."""
    dump_json(path, open_fds())


def dump_flags(path):
    dump_json(
        path,
        {
            'flags': list(sys.flags),
            'optimize': sys.flags.optimize,
            'ignore_environment': sys.flags.ignore_environment,
            'no_user_site': sys.flags.no_user_site,
            'isolated': sys.flags.isolated,
        },
    )


def exit_if_multiprocessing_imported():
    """Exit code 1 if the stdlib ``multiprocessing`` package was imported into this child, else 0."""
    sys.exit(int('multiprocessing' in sys.modules))


def add_under_lock(value, lock, n):
    """``n`` read-modify-write increments of a lock-less shared value, each under an explicit lock."""
    for _ in range(n):
        with lock:
            v = value.value
            time.sleep(0)
            value.value = v + 1


def put_identity(q):
    """Put this process's name/pid and its view of the parent on ``q``."""
    mp = target_mp()
    parent = mp.parent_process()
    q.put(
        {
            'name': mp.current_process().name,
            'pid': os.getpid(),
            'ppid': os.getppid(),
            'parent_name': parent.name,
            'parent_pid': parent.pid,
            'start_method': mp.get_start_method(),
        }
    )


def spawn_nested(q):
    """Start a spawn grandchild that reports through ``q`` (passed down from the top); then report ourselves."""
    mp = target_mp()
    g = mp.get_context('spawn').Process(target=put_identity, args=(q,))
    before = g.name
    g.start()
    g.join()
    put_identity(q)
    q.put({'grandchild_name': before, 'grandchild_pid': g.pid, 'grandchild_exitcode': g.exitcode})


def use_stdlib_objects(q, sq, a, b, lock, evt, value, d):
    """Use every stdlib object received in one start: a Queue, a SimpleQueue, both ends of a duplex Pipe, ..."""
    a.send('ping')
    got = b.recv()  # both ends arrived in this child: a -> b
    with lock:
        value.value += 1
    d['child'] = got
    q.put(('queue', got))
    sq.put(('simple', got))
    b.send(('pong', got))  # b -> a, read by the parent
    evt.set()


def child_pids():
    """[[pid, state]] of this process's children, zombies included (for scripts run in a fresh interpreter)."""
    me = os.getpid()
    out = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append([int(entry), fields[0]])
    return out


# -- payload fidelity (spawn sends plain payloads without pickle) ------------------------------------------------


class TaggedStr(str):
    pass


def describe_args_to_file(path, args, kwargs):
    """`describe_args`, written as JSON to `path` (so that nothing but plain data is in the payload)."""
    import json

    with open(path, 'w') as f:
        json.dump(describe_args(args, kwargs), f)


def describe_args(args, kwargs):
    """What a child received: repr, exact types, and identities between the arguments."""
    import math

    return {
        'repr': repr((args, kwargs)),
        'types': [type(a).__name__ for a in args] + [type(v).__name__ for v in kwargs.values()],
        'same_0_1': len(args) > 1 and args[0] is args[1],
        'nan_is_nan': any(isinstance(a, float) and math.isnan(a) for a in args),
    }


class CustomReduceProcessHolder:
    """A picklable instance argument (travels by pickle)."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is type(self) and other.value == self.value


def stdlib_tracker_state(path):
    """Create a stdlib spawn-context semaphore here; record whether this process reused its parent's tracker."""
    import json
    import multiprocessing
    from multiprocessing import resource_tracker

    inherited_fd = resource_tracker._resource_tracker._fd
    lock = multiprocessing.get_context('spawn').Lock()
    state = {'inherited_fd': inherited_fd is not None, 'own_tracker_pid': resource_tracker._resource_tracker._pid}
    del lock
    with open(path, 'w') as f:
        json.dump(state, f)


def write_digest(path, data):
    """Write the SHA-256 of `data` to `path` (huge-argument tests)."""
    import hashlib

    with open(path, 'w') as f:
        f.write(hashlib.sha256(data).hexdigest())


# -- forkserver (test_forkserver.py) ------------------------------------------------------------------------------


def server_pid():
    """The pid of the fork server this process uses (procstart), or None."""
    return target_mp()._procstart._forkserver_pid()


def forkserver_view(conn):
    """Send (pid, ppid, server pid, open fds) from a child."""
    conn.send((os.getpid(), os.getppid(), server_pid(), open_fds()))
    conn.close()


def start_forkserver_children(conn, codes, sleep_first=0.0):
    """From this child, start forkserver children that exit with ``codes``; send their exit codes and the server pid
    (a child that is not the server's parent: the server reaps them and reports their status)."""
    ctx = target_mp().get_context('forkserver')
    procs = [ctx.Process(target=sleep_then_exit, args=(sleep_first, code)) for code in codes]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    conn.send(([p.exitcode for p in procs], server_pid()))
    conn.close()


def sleep_then_exit(seconds, code):
    time.sleep(seconds)
    os._exit(code)


def nested_server_pids(conn, method):
    """Start a ``method`` child that starts a forkserver grandchild; send the server pid each level used."""
    import multiprocessing

    r, w = multiprocessing.Pipe(duplex=False)
    p = target_mp().get_context(method).Process(target=_level_two, args=(w,))
    p.start()
    w.close()
    levels = r.recv()
    p.join()
    conn.send((server_pid(), *levels, p.exitcode))
    conn.close()


def _level_two(conn):
    import multiprocessing

    r, w = multiprocessing.Pipe(duplex=False)
    g = target_mp().get_context('forkserver').Process(target=forkserver_view, args=(w,))
    g.start()
    w.close()
    grandchild = r.recv()
    g.join()
    conn.send((server_pid(), grandchild[2], g.exitcode))
    conn.close()


def loaded_in(module):
    """The pid recorded by ``module`` when it was imported (and whether this child found it already imported)."""
    return sys.modules[module].LOADED_IN


# -- resource tracker (test_resource_tracker.py) --------------------------------------------------------------------


def tracker_pid():
    """The pid of procstart's resource tracker this process uses."""
    from procstart import resource_tracker

    resource_tracker.ensure_running()
    return resource_tracker._resource_tracker._pid


def make_registered_semaphores(conn, names):
    """Create named semaphores, register them with procstart's tracker, report, then wait to be killed."""
    import _multiprocessing

    from procstart import resource_tracker

    keep = []
    for name in names:
        keep.append(_multiprocessing.SemLock(1, 1, 1, name, False))
        resource_tracker.register(name, 'semaphore')
    conn.send('ready')
    time.sleep(60)


# -- synchronisation primitives (test_synchronize.py) --------------------------------------------------------------


def hold_lock(lock, held, release):
    """Acquire ``lock``, signal ``held``, keep it until ``release`` is set."""
    with lock:
        held.set()
        release.wait(30)


def wait_for_flag(conn, cond, flag):
    with cond:
        ok = cond.wait_for(lambda: flag.value == 1, timeout=30)
    conn.send(ok)
    conn.close()


def barrier_wait(conn, barrier):
    conn.send(barrier.wait(30))
    conn.close()


def event_wait(conn, event):
    conn.send(event.wait(30))
    conn.close()


def queue_put_many(q, n):
    for i in range(n):
        q.put(i)


def release_foreign(conn, lock):
    """Try to release a lock this process does not hold; send the outcome."""
    conn.send(outcome(lock.release))
    conn.close()


def manager_dict_set(d, n):
    for i in range(n):
        d[i] = i * i


def make_locks_then_wait(conn, method, n):
    """Create ``n`` procstart locks of ``method``'s context (named and tracked under spawn and forkserver), send their
    names, then wait to be killed."""
    ctx = target_mp().get_context(method)
    locks = [ctx.Lock() for _ in range(n)]
    conn.send([lock._semlock.name for lock in locks])
    time.sleep(60)


# -- faults and load (test_faults.py, test_load.py) ---------------------------------------------------------------


def put_forever(q, started):
    """Put into ``q`` without end (killed while writing)."""
    started.set()
    i = 0
    while True:
        q.put(i)
        i += 1


def segfault():
    import ctypes
    import faulthandler

    # A fork child inherits pytest's faulthandler, whose traceback of this crash on purpose reads like the suite's.
    faulthandler.disable()
    ctypes.string_at(0)


def exhaust_fds():
    """Open descriptors until the limit; exit 0 if EMFILE came (and nothing else went wrong)."""
    import errno
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    opened = []
    try:
        while True:
            opened.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as e:
        sys.exit(0 if e.errno == errno.EMFILE and len(opened) > 64 else 1)


# -- procstart's extensions -----------------------------------------------------------------------------------------


def descendants(conn, depth, fanout, orphan_last=False):
    """Grow a tree below this process with ``os.fork``: every node above ``depth`` forks ``fanout`` children. Each
    node sends its pid on ``conn``, then sleeps. ``orphan_last``: the deepest level's parents exit at once, so that
    their children are adopted elsewhere (only a process group still ties them to this tree)."""
    level = 0
    forked = 0
    while level < depth and forked < fanout:
        if os.fork() == 0:
            level, forked = level + 1, 0
        else:
            forked += 1
    if orphan_last and level == depth - 1:
        os._exit(0)
    conn.send(os.getpid())
    time.sleep(60)
    if level:
        os._exit(0)


def hog_memory(conn, mib):
    """Touch ``mib`` MiB, report, and wait to be killed (as the out-of-memory killer would)."""
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    conn.send('ready')
    time.sleep(60)


def allocate_over_limit(mib):
    """Allocate ``mib`` MiB past an address-space limit of the current size + 64 MiB: MemoryError, exit 1."""
    import resource

    with open('/proc/self/statm') as f:
        size = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')
    resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), resource.RLIMIT_INFINITY))
    bytearray(mib << 20)


def spin(seconds):
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass


def send_environ(conn, *names):
    conn.send([os.environ.get(name) for name in names] + [sys.flags.dont_write_bytecode])


def send_process_group(conn):
    conn.send((os.getpid(), os.getpgid(0)))


def stdlib_tracker_reused(parent_tracker_pid):
    """CPython's ``_is_resource_tracker_reused``: stdlib's tracker in this child is the parent's (a fork child on
    CPython 3.14 does not know its pid, gh-146313; a spawned one never did), not one of its own."""
    from multiprocessing.resource_tracker import _resource_tracker

    _resource_tracker.ensure_running()
    return _resource_tracker._pid in (None, parent_tracker_pid) and _resource_tracker._check_alive()


def hold_proxy_until_told(proxy, conn):
    """Keep a Manager proxy while the parent counts its references; exit when told."""
    conn.send('ready')
    conn.recv()
    conn.close()


# -- procstart's classes and stdlib's (test_stdlib_classes.py) -------------------------------------------------------

METHODS = ('fork', 'spawn', 'forkserver')
CONTEXT_CLASSES = {'fork': 'ForkContext', 'spawn': 'SpawnContext', 'forkserver': 'ForkServerContext'}
PROCESS_CLASSES = {'fork': 'ForkProcess', 'spawn': 'SpawnProcess', 'forkserver': 'ForkServerProcess'}
LOCK_CLASSES = {'Lock': (), 'RLock': (), 'Semaphore': (2,), 'BoundedSemaphore': (2,)}


def stdlib_class_objects(kind):
    """``{label: object}``: the module under test's contexts, Process classes (and a subclass of one) or locks,
    made without importing stdlib ``multiprocessing`` here (procstart does not import it; its locks do)."""
    mp = target_mp()
    if kind == 'contexts':
        return {**{method: mp.get_context(method) for method in METHODS}, 'default': mp.context._default_context}
    if kind == 'processes':

        class Early(mp.get_context('spawn').Process):
            pass

        classes = {method: mp.get_context(method).Process for method in METHODS}
        return {'Process': mp.Process, **classes, 'subclass': Early}
    assert kind == 'locks', kind
    return {
        f'{method} {name}': getattr(mp.get_context(method), name)(*args)
        for method in METHODS
        for name, args in LOCK_CLASSES.items()
    }


def stdlib_class_failures(kind, objects):
    """The labels of the checks ``objects`` (:func:`stdlib_class_objects`) fail: that they are instances or
    subclasses of stdlib ``multiprocessing``'s classes (imported here), as libraries check them."""
    from multiprocessing import context, process, synchronize

    checks = []
    if kind == 'contexts':

        def resolve(ctx):  # as libraries take a context or a start method name
            if not isinstance(ctx, context.BaseContext):
                ctx = context._default_context.get_context(ctx)
            return ctx

        for method, ctx in objects.items():
            cls = 'DefaultContext' if method == 'default' else CONTEXT_CLASSES[method]
            checks += [
                (f'{method} BaseContext', isinstance(ctx, context.BaseContext)),
                (f'{method} {cls}', isinstance(ctx, getattr(context, cls))),
                (f'{method} idiom', resolve(ctx) is ctx and (method == 'default' or resolve(method) is not None)),
            ]
    elif kind == 'processes':
        checks += [
            ('Process BaseProcess', issubclass(objects['Process'], process.BaseProcess)),
            ('Process context.Process', issubclass(objects['Process'], context.Process)),
            ('Process instance', isinstance(objects['Process'](), process.BaseProcess)),
            ('current_process', isinstance(target_mp().current_process(), process.BaseProcess)),
            ('subclass SpawnProcess', issubclass(objects['subclass'], context.SpawnProcess)),
        ]
        for method, cls in PROCESS_CLASSES.items():
            stdlib_cls = getattr(context, cls)
            checks += [
                (f'{method} BaseProcess', issubclass(objects[method], process.BaseProcess)),
                (f'{method} {cls}', issubclass(objects[method], stdlib_cls)),
                (f'{method} instance', isinstance(objects[method](), stdlib_cls)),
            ]
    else:
        for label, lock in objects.items():
            name = label.split()[1]
            checks += [
                (label, isinstance(lock, getattr(synchronize, name))),
                (f'{label} SemLock', isinstance(lock, synchronize.SemLock)),
            ]
    return [label for label, ok in checks if not ok]


def exit_if_stdlib_class_checks_fail(kind):
    """Exit code 1 if :func:`stdlib_class_failures` finds any in this child, else 0."""
    sys.exit(1 if stdlib_class_failures(kind, stdlib_class_objects(kind)) else 0)


def describe_buffers_to_file(path, *args):
    """What a child received of buffer-like arguments, written as JSON to `path`: per argument its
    exact type, size, a digest of its bytes, its writability (and that writing works), and which
    arguments are the same object."""
    import array
    import hashlib
    import json

    described = []
    for a in args:
        d = {'type': type(a).__name__}
        if type(a).__module__ == 'numpy':
            d.update(
                dtype=a.dtype.str,
                shape=list(a.shape),
                writeable=bool(a.flags.writeable),
                c_contiguous=bool(a.flags.c_contiguous),
                f_contiguous=bool(a.flags.f_contiguous),
                digest=hashlib.sha256(a.tobytes()).hexdigest(),
            )
            if a.flags.writeable and a.size:
                a.flat[0] = a.flat[-1]
        elif isinstance(a, str):
            d.update(len=len(a), digest=hashlib.sha256(a.encode()).hexdigest())
        elif isinstance(a, list):
            d.update(len=len(a), digest=hashlib.sha256(b''.join(a)).hexdigest())
        else:
            view = memoryview(a)
            d.update(len=len(a), readonly=view.readonly, digest=hashlib.sha256(view.cast('B')).hexdigest())
            view.release()
            if isinstance(a, array.array):
                d['typecode'] = a.typecode
                a.append(a[0] if a else 0)
            elif isinstance(a, bytearray):
                a.append(1)  # its own memory: resizable
        described.append(d)
    same = [[i, j] for i in range(len(args)) for j in range(i + 1, len(args)) if args[i] is args[j]]
    with open(path, 'w') as f:
        json.dump({'args': described, 'same': same}, f)


class SlowToLoad:
    """Takes ``seconds`` to unpickle in the child: what comes after it in the payload loads late."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __reduce__(self):
        return (_sleep_then_make, (self.seconds,))


def _sleep_then_make(seconds):
    time.sleep(seconds)
    return SlowToLoad(seconds)


class ExitWhileLoading:
    """Ends the child with exit code 3 while it unpickles its payload."""

    def __reduce__(self):
        return (os._exit, (3,))


class Referent:
    """An argument a test holds only a weak reference to."""


def use_queue(slow, queue):
    queue.put('x')
    assert queue.get(timeout=5) == 'x'


def report_loaded_then_wait(conn, referent):
    conn.send('loaded')
    conn.recv()


def logical_tree(conn, methods, process_kwargs=None):
    """One node of a tree one child wide: sends (pid, ``parent_process()``'s pid, process group), then starts a child
    with the start method ``methods[0]`` (and ``process_kwargs``) running this with the rest, and sleeps until
    killed."""
    mp = target_mp()
    parent = mp.parent_process()
    conn.send((os.getpid(), parent.pid if parent else None, os.getpgid(0)))
    if methods:
        child = mp.get_context(methods[0]).Process(
            target=logical_tree, args=(conn, methods[1:], process_kwargs), **(process_kwargs or {})
        )
        child.start()
    time.sleep(60)


def chain_exit_reasons(conn, methods):
    """One node of a chain one child wide: starts a child with the start method ``methods[0]`` running this with the
    rest, joins it and sends what it saw of its end: [pid, exitcode, exit_reason, whether rusage has a max RSS]; then
    exits with 10 + the levels below it. The last node segfaults."""
    mp = target_mp()
    if not methods:
        segfault()
    p = mp.get_context(methods[0]).Process(target=chain_exit_reasons, args=(conn, methods[1:]))
    p.start()
    p.join()
    conn.send([p.pid, p.exitcode, p.exit_reason, p.rusage.max_rss > 0])
    sys.exit(10 + len(methods))
