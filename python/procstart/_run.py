"""`python -m procstart run`: a program run as `python script.py args` (or `python -m module args`,
or `python - args` for one read from standard input) runs it, with `procstart.install()` in effect,
so that the processes it starts through stdlib `multiprocessing` (and what is built on it) are
procstart's. A procstart extension.

The program gets what `python` would give it: `sys.argv`, `sys.path[0]` (the script's directory, or
the working directory for `-m`), a fresh `__main__` module (also `__mp_main__`, as stdlib
`multiprocessing` names it, so that spawn and forkserver children re-import the script under that
name), its exit status, and its tracebacks without this runner's frames.
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
import sys

import procstart
from procstart import context


def _parser():
    parser = argparse.ArgumentParser(
        prog='python -m procstart run',
        usage='%(prog)s [-h] [--start-method METHOD] (script | -m module) [args ...]',
        description='Run a Python program as `python script args` (or `python -m module args`) does, with stdlib '
        'multiprocessing starting its processes through procstart (procstart.install()).',
    )
    methods = procstart.get_all_start_methods()
    parser.add_argument(
        '--start-method',
        choices=methods,
        metavar='METHOD',
        help=f'{", ".join(methods)}: the default start method, used unless the program sets one itself '
        '(default: the platform default)',
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        '-m', dest='module', nargs=argparse.REMAINDER, help='run a module as `python -m module args` does'
    )
    target.add_argument('script', nargs='?', help='the script to run')
    parser.add_argument('args', nargs=argparse.REMAINDER, help="the program's arguments")
    return parser


class _NoModule(Exception):
    """runpy's error for a module that cannot be run (not one raised while importing its package)."""


def main(argv):
    """Run the program `argv` names (the arguments after `run`); the exit status for `sys.exit`."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.module == []:
        parser.error('argument -m: expected a module name')
    if args.start_method:
        context._set_default_method(args.start_method)
    procstart.install()
    if args.module:
        return _run_module(*args.module)
    return _run_script(args.script, args.args)


def _run_script(path, args):
    sys.argv = [path, *args]
    if path == '-':
        return _run_stdin()
    # As Python: relative to the working directory, not normalised.
    file = os.path.join(os.getcwd(), path)
    import pkgutil

    if pkgutil.get_importer(path) is not None:
        # A directory or zip archive: Python runs the `__main__` module in it, with it first on sys.path.
        return _run_main_of_path_entry(file)
    try:
        with io.open_code(file) as f:
            source = f.read()
    except OSError as error:
        print(f"{sys.executable}: can't open file {file!r}: [Errno {error.errno}] {error.strerror}", file=sys.stderr)
        return 2
    if not (sys.flags.isolated or getattr(sys.flags, 'safe_path', False)):
        # `python -m procstart` put the working directory first.
        sys.path[0] = os.path.dirname(os.path.realpath(file))
    from importlib.machinery import SourceFileLoader, SourcelessFileLoader
    from importlib.util import MAGIC_NUMBER

    if source.startswith(MAGIC_NUMBER):
        # A compiled file, which Python runs too: its code follows the 16-byte header.
        import marshal

        attrs = {'__file__': file, '__cached__': None, '__loader__': SourcelessFileLoader('__main__', file)}
        return _run_main(lambda: marshal.loads(source[16:]), attrs)
    attrs = {'__file__': file, '__cached__': None, '__loader__': SourceFileLoader('__main__', file)}
    return _run_main(lambda: compile(source, file, 'exec', dont_inherit=True), attrs)


def _run_stdin():
    """`python -`: the program read from standard input, as bytes (its coding cookie holds)."""
    if not (sys.flags.isolated or getattr(sys.flags, 'safe_path', False)):
        sys.path[0] = ''
    source = sys.stdin.buffer.read()
    import importlib.machinery

    attrs = {'__file__': '<stdin>', '__cached__': None, '__loader__': importlib.machinery.BuiltinImporter}
    return _run_main(lambda: compile(source, '<stdin>', 'exec', dont_inherit=True), attrs)


def _run_main_of_path_entry(path):
    import runpy

    # As Python: the entry made absolute, not normalised.
    sys.path[0] = path
    try:
        _, spec, code = runpy._get_main_module_details(_NoModule)
    except _NoModule as error:
        # As Python: "can't find '__main__' module in <path>", exit status 1.
        return f'{sys.executable}: {error}'
    attrs = {
        '__file__': spec.origin,
        '__cached__': spec.cached,
        '__loader__': spec.loader,
        '__package__': '',
        '__spec__': spec,
    }
    return _run_main(lambda: code, attrs)


def _run_module(name, *args):
    import runpy

    # As `python -m`: '-m' while the module's package is imported, then the module's file.
    sys.argv = ['-m', *args]
    try:
        # What `python -m` itself runs (runpy._run_module_as_main).
        _, spec, code = runpy._get_module_details(name, _NoModule)
    except _NoModule as error:
        # As `python -m`: this message, exit status 1.
        return f'{sys.executable}: {error}'
    sys.argv[0] = spec.origin
    attrs = {
        '__file__': spec.origin,
        '__cached__': spec.cached,
        '__loader__': spec.loader,
        '__package__': spec.parent,
        '__spec__': spec,
    }
    return _run_main(lambda: code, attrs)


def _run_main(load_code, attrs):
    """Run the code `load_code()` returns (compiling errors included) as the `__main__` module."""
    main_module = type(sys)('__main__')
    main_module.__dict__.update(attrs, __builtins__=builtins)
    sys.modules['__main__'] = sys.modules['__mp_main__'] = main_module
    code = None
    try:
        code = load_code()
        exec(code, main_module.__dict__)  # noqa: S102 -- running the program is the point
    except BaseException:
        sys.excepthook = _from_frame_of(code, sys.excepthook)
        raise
    return 0


def _from_frame_of(code, hook):
    """`hook` for an exception that escaped `code`, with the traceback starting at `code`'s frame:
    Python would show this runner's and runpy's frames too. A program that failed to compile has no
    frame, so its `SyntaxError` is shown alone, as Python shows it."""

    def excepthook(exc_type, exc, tb):
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        hook(exc_type, exc.with_traceback(tb), tb)

    return excepthook
