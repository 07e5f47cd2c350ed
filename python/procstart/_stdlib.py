"""Keeping stdlib `multiprocessing` consistent inside procstart children.

Objects from stdlib (Queue, Pipe, Lock, Manager proxies) ride along into procstart children,
and libraries inside a child call `multiprocessing.current_process()`. The parts of stdlib
`multiprocessing` the child already has are brought to the state CPython's own child bootstrap
leaves them in; nothing is imported that the child did not already have.
"""

from __future__ import annotations

import atexit
import itertools
import sys


def enter_child(process, parent, method):
    mp_process = sys.modules.get('multiprocessing.process')
    if mp_process is not None:
        mp_process._current_process = process
        mp_process._parent_process = parent
        mp_process._process_counter = itertools.count(1)
        mp_process._children = set()
    mp_context = sys.modules.get('multiprocessing.context')
    if mp_context is not None:
        mp_context._force_start_method(method)
    util = sys.modules.get('multiprocessing.util')
    if util is not None:
        if method != 'spawn':
            # Inherited stdlib objects (Queue feeder threads, Manager connections, fork-aware
            # locks) reset themselves here, as in a stdlib fork child.
            util._finalizer_registry.clear()
            util._run_after_forkers()
        # Flushes Queue feeder threads and joins stdlib children when the child ends.
        atexit.register(util._exit_function)
