"""What the extension calls back in procstart's Python half, handed to it once when `procstart` is imported
(`_procstart._register_hooks`; `src/hooks.rs` documents each hook). The extension imports no module of
procstart's by name: every call from Rust into procstart's Python starts here.

The launchers' modules are imported by the first start that needs them, as CPython imports
`popen_spawn_posix` at the first spawn: a program that only forks never loads them.
"""

from __future__ import annotations

import sys

from . import _bootstrap, _procstart, context, process

concrete_contexts = context._concrete_contexts
default_context = context._default_context
platform_default = context._platform_default
main_process = process._MainProcess
parent_process = process._ParentProcess
exitcode_to_name = process._exitcode_to_name
exit_reason = process.exit_reason
authentication_string = process.AuthenticationString
exit_function = process._exit_function
devnull_stdin = _bootstrap.devnull_stdin
exit_code_for = _bootstrap.exit_code_for
other_threads = _bootstrap.other_threads


def resource_usage(*fields):
    # process.ResourceUsage is built on first use (it needs `typing`).
    return process.ResourceUsage(*fields)


def payload(process_obj, method, parent_death):
    from . import popen_spawn

    return popen_spawn.payload(process_obj, method, parent_death)


def spawn_command_line():
    from . import spawn

    return spawn.command_line()


def forkserver_ensure_running():
    from . import forkserver

    forkserver.ensure_running()


def forkserver_child_main(payload_fd, parent_sentinel, inherited_fds):
    from . import forkserver

    forkserver.child_main(payload_fd, parent_sentinel, inherited_fds)


_procstart._register_hooks(sys.modules[__name__])
