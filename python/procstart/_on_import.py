"""`on_import(name, callback)`: run `callback(module)` once the module `name` has been executed, or at
once if it is loaded, without importing it for that (a spawned child does not import stdlib
`multiprocessing` unless it uses it).

One finder serves every waiting callback; it sits first in `sys.meta_path` only while some wait, and
costs any other import a dictionary look-up.
"""

from __future__ import annotations

import sys

__all__ = ['on_import']


class _Finder:
    def __init__(self):
        self.waiting = {}  # module name -> callbacks, in registration order

    def find_spec(self, name, path=None, target=None):
        if name not in self.waiting:
            return None
        from _frozen_importlib_external import PathFinder

        spec = PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_call(module):
            exec_module(module)
            # Taken when the module is executed, not found: a spec found but never executed
            # (`importlib.util.find_spec`) leaves the callbacks waiting.
            callbacks = self.waiting.pop(name, ())
            if not self.waiting:
                self._remove()
            for callback in callbacks:
                callback(module)

        spec.loader.exec_module = exec_and_call
        return spec

    def _remove(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_finder = _Finder()


class _Waiting:
    """A callback waiting for its module; `cancel()` withdraws it."""

    def __init__(self, name, callback):
        self.name = name
        self.callback = callback

    def cancel(self):
        callbacks = _finder.waiting.get(self.name)
        if callbacks is None or self.callback not in callbacks:
            return
        callbacks.remove(self.callback)
        if not callbacks:
            del _finder.waiting[self.name]
            if not _finder.waiting:
                _finder._remove()


def on_import(name, callback):
    """`callback(module)` now if `name` is loaded, else when it is imported; the waiting hook (with a
    `cancel()` method), or None."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return None
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    _finder.waiting.setdefault(name, []).append(callback)
    return _Waiting(name, callback)
