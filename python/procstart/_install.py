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
  is started by procstart's launcher for its class's start method (or the default one), and is the
  current process in its child;
- the tracker of `multiprocessing.resource_tracker` (its `_resource_tracker` and module functions)
  by procstart's: stdlib's semaphores and shared memory register with the one tracker of the tree;
- the fork server of `multiprocessing.forkserver` (its `_forkserver`, `ensure_running` and
  `set_forkserver_preload`) by procstart's, the one that starts the forkserver processes.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import context as stdlib_context
from multiprocessing import process as stdlib_process

from . import _procstart, context, process

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
    api = {name: context._module_api(name) for name in multiprocessing.__all__}
    api['active_children'] = active_children
    for name, value in api.items():
        _replace(multiprocessing, name, value)
    _replace(stdlib_context, '_concrete_contexts', context._concrete_contexts)
    _replace(stdlib_context._default_context, '__class__', _InstalledDefaultContext)
    from multiprocessing import resource_tracker as stdlib_tracker

    from . import resource_tracker

    for name in ('_resource_tracker', 'ensure_running', 'register', 'unregister', 'getfd'):
        _replace(stdlib_tracker, name, getattr(resource_tracker, name))
    from multiprocessing import forkserver as stdlib_forkserver

    from . import forkserver

    # Programs and CPython's tests reach the fork server through this module (its pid, address and authkey, a fresh
    # one after `_forkserver._stop()`, the preload list): the server that starts the program's forkserver processes
    # is procstart's. The launcher's own functions (connect_to_new_process, get_inherited_fds) stay stdlib's, unused.
    for name in ('_forkserver', 'ensure_running', 'set_forkserver_preload'):
        _replace(stdlib_forkserver, name, getattr(forkserver, name))
    for cls in (
        stdlib_context.Process,
        stdlib_context.ForkProcess,
        stdlib_context.SpawnProcess,
        stdlib_context.ForkServerProcess,
    ):
        _replace(cls, '_Popen', staticmethod(_procstart._launch))
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
    """`multiprocessing.active_children()` while installed: the live children of stdlib process
    objects (started through procstart, tracked by stdlib) and of procstart's."""
    return stdlib_process.active_children() + _procstart.active_children()


class _InstalledDefaultContext(stdlib_context.DefaultContext):
    """The class of stdlib's default context object while installed. Its state (CPython's
    `_default_context` and `_actual_context` attributes, which its methods read and write) is
    procstart's default context's."""

    Process = process.Process

    @property
    def _default_context(self):
        return context._default_context._get_default()

    @property
    def _actual_context(self):
        if context._default_context.get_start_method(allow_none=True) is None:
            return None
        return context._default_context.get_context()

    @_actual_context.setter
    def _actual_context(self, ctx):
        context._default_context.set_start_method(None if ctx is None else ctx._name, force=True)
