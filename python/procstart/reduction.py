"""Pickling policy: how the preparation data and the `Process` of a spawned or fork-server child become
bytes (CPython keeps its pickling in multiprocessing/reduction.py; procstart's has no ForkingPickler of its own).

Plain values and by-name references, within `MARSHAL_BUDGET` bytes of strings, go as marshal's bytes of
`_encode`'s trees (`_decode` rebuilds them in the child, see `spawn.py`'s wire layout); everything else is
pickled with protocol 5 into `_Segments` (the pickler's writes as it made them, big objects not copied), with
stdlib's ForkingPickler when stdlib is loaded, refusing what a child cannot import from `__main__`, read-only
NumPy arrays as stdlib's protocol gives them (`_readonly_arrays_as_stdlib`), and a note naming the part of the
process that cannot be pickled.
"""

from __future__ import annotations

import os
import sys

from . import _procstart, process


def _main_is_importable():
    main_module = sys.modules['__main__']
    spec = getattr(main_module, '__spec__', None)
    return getattr(spec, 'name', None) is not None or process.main_file(main_module) is not None


def _pickler_class():
    """stdlib's ForkingPickler when stdlib is loaded (its Connection and socket reducers live in
    its dispatch table), else the C pickler."""
    stdlib_reduction = sys.modules.get('multiprocessing.reduction')
    if stdlib_reduction is not None:
        return stdlib_reduction.ForkingPickler
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
                    'spawned child cannot import (the parent runs a REPL, python -c, a program read from standard '
                    'input or a notebook). Define it in a module, or use the fork start method.'
                )
            return NotImplemented

    return Pickler


# The `S` payload's pickles: protocol 5 writes a bytearray and a buffer (a NumPy array's data) in
# band from their own memory, where protocol 4 copies them into a new bytes first.
_STREAM_PROTOCOL = 5


class _Segments(list):
    """The file a streamed payload is pickled into: what the pickler writes, kept as the pickler
    wrote it, for the launcher to write to the child's pipe once the child exists
    (`src/launch/transport.rs`). The C pickler writes its frames (up to 64 KiB, new bytes each) and
    every big bytes, bytearray or buffer as the object itself (not a copy): those are kept as a byte
    view, whose export keeps a bytearray from being resized until the launcher has written it."""

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
    """The containers and bytearrays `_encode` has met, and how many more bytes of strings it may take."""

    def __init__(self, budget):
        super().__init__()
        self.budget = budget

    def first_meeting(self, obj):
        """Records `obj`; one met before (shared or recursive) is left to pickle, which keeps its identity."""
        if id(obj) in self:
            raise _NotPlain
        self.add(id(obj))

    def spend(self, nbytes):
        """Takes `nbytes` of the budget; past it, big strings go to the pickle stream, read straight into them."""
        self.budget -= nbytes
        if self.budget < 0:
            raise _NotPlain


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
            seen.spend(len(obj))
        return obj
    if kind in (tuple, list, dict):
        seen.first_meeting(obj)
        if kind is dict:
            return ('d', *(node for item in obj.items() for node in (_encode(item[0], seen), _encode(item[1], seen))))
        return ('t' if kind is tuple else 'l', *(_encode(item, seen) for item in obj))
    if kind is process.AuthenticationString:
        return ('a', bytes(obj))
    if kind is bytearray:
        # A new object in the child, as pickle makes it.
        seen.first_meeting(obj)
        seen.spend(len(obj))
        return ('b', bytes(obj))
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
    if tag == 'b':
        return bytearray(node[1])
    if tag == 'o':
        cls = _decode(node[1])
        obj = cls.__new__(cls)
        obj.__setstate__(_decode(node[2]))
        return obj
    raise ValueError(f'unknown payload node {tag!r}')


def _marshalled(prep, process_obj):
    """The preparation data and the process as marshal's bytes of `_encode`'s trees, or None when they are not all
    plain."""
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
    return marshal.dumps(encoded)
