"""`procstart.install()` and `procstart.uninstall()`: stdlib `multiprocessing` starting its processes
through procstart (a procstart extension).

install() replaces, and uninstall() puts back (the very objects it replaced):

- every name of `multiprocessing.__all__` by procstart's, as `import procstart as multiprocessing`
  would give (`active_children()` lists the children of both);
- `multiprocessing.context._concrete_contexts` by procstart's contexts, so that `get_context(method)`
  of any stdlib context answers with procstart's;
- the class of stdlib's default context object, by one whose start-method state is procstart's:
  the bound methods that stdlib modules (`pool`, `managers`, `sharedctypes`) and libraries took from
  it at import then see procstart's start method and contexts;
- `_Popen` of stdlib's `Process`, `ForkProcess`, `SpawnProcess` and `ForkServerProcess`: a stdlib
  process object (of a subclass defined before install(), or from a stdlib context kept from before)
  starts through procstart, run by a `_Starter`.
"""

from __future__ import annotations

import functools
import multiprocessing
from multiprocessing import context as stdlib_context
from multiprocessing import process as stdlib_process

import procstart

from . import _procstart, context

# (object, attribute, original) for each replacement, in order; None while not installed.
_replaced = None


def installed():
    return _replaced is not None


def install():
    global _replaced
    if _replaced is not None:
        return
    chosen = stdlib_context._default_context._actual_context
    _replaced = []
    api = {name: getattr(procstart, name) for name in multiprocessing.__all__}
    api['active_children'] = active_children
    for name, value in api.items():
        _replace(multiprocessing, name, value)
    _replace(stdlib_context, '_concrete_contexts', context._concrete_contexts)
    _replace(stdlib_context._default_context, '__class__', _InstalledDefaultContext)
    for cls, method in (
        (stdlib_context.Process, None),
        (stdlib_context.ForkProcess, 'fork'),
        (stdlib_context.SpawnProcess, 'spawn'),
        (stdlib_context.ForkServerProcess, 'forkserver'),
    ):
        _replace(cls, '_Popen', staticmethod(functools.partial(_start, method=method)))
    # A start method the program chose through stdlib before install() stays chosen, unless one
    # was chosen through procstart too (as in a child, whose method its parent sets).
    if chosen is not None and context._default_context.get_start_method(allow_none=True) is None:
        context._default_context.set_start_method(chosen._name)


def uninstall():
    global _replaced
    if _replaced is None:
        return
    for obj, name, original in reversed(_replaced):
        setattr(obj, name, original)
    _replaced = None


def _replace(obj, name, value):
    # From the object's own namespace where it has the name: a class's staticmethod then goes back
    # as itself, not as the function getattr would unwrap.
    original = vars(obj)[name] if name in vars(obj) else getattr(obj, name)
    _replaced.append((obj, name, original))
    setattr(obj, name, value)


def active_children():
    """`multiprocessing.active_children()` while installed: the live children of stdlib and of
    procstart, a stdlib process object started through procstart listed once, as itself."""
    started_here = [p for p in _procstart.active_children() if not isinstance(p, _Starter)]
    return stdlib_process.active_children() + started_here


class _InstalledDefaultContext(stdlib_context.DefaultContext):
    """The class of stdlib's default context object while installed. Its state (CPython's
    `_default_context` and `_actual_context` attributes, which its methods read and write) is
    procstart's default context's."""

    Process = _procstart.Process

    @property
    def _default_context(self):
        return context._concrete_contexts[context._default_method]

    @property
    def _actual_context(self):
        if context._default_context.get_start_method(allow_none=True) is None:
            return None
        return context._default_context.get_context()

    @_actual_context.setter
    def _actual_context(self, ctx):
        context._default_context.set_start_method(None if ctx is None else ctx._name, force=True)


def _start(process_obj, method):
    """stdlib's `_Popen(process_obj)` while installed: the child is a procstart child running
    `process_obj`; its `Popen` has the protocol stdlib's `start()`, `join()` … use."""
    starter = _STARTERS[method or context._default_context.get_start_method()](process_obj)
    starter.start()
    return starter._popen


class _Starter:
    """A procstart process standing for a stdlib process object: it carries that object to the
    child and runs it there."""

    def __init__(self, process_obj):
        # Not Process.__init__: the stdlib object has its identity, name and configuration already
        # (shared, so that the daemon flag is the same), and procstart's counter must not advance.
        self._process = process_obj
        self._identity = process_obj._identity
        self._config = process_obj._config
        self._parent_pid = process_obj._parent_pid
        self._parent_name = process_obj._parent_name
        self._name = process_obj._name

    def run(self):
        process_obj = self._process
        # As in a stdlib child, the process object itself is the current process.
        _procstart._set_current_process(process_obj)
        stdlib_process._current_process = process_obj
        process_obj.run()


class _ForkStarter(_Starter, context.ForkProcess):
    pass


class _SpawnStarter(_Starter, context.SpawnProcess):
    pass


class _ForkServerStarter(_Starter, context.ForkServerProcess):
    pass


_STARTERS = {'fork': _ForkStarter, 'spawn': _SpawnStarter, 'forkserver': _ForkServerStarter}
