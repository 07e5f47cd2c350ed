"""The benchmark `python -m procstart` runs (see `procstart.__main__`): procstart's start methods
against stdlib `multiprocessing`, side by side in one run.

For each start method: the start+join latency of a process running a trivial target, and the
throughput of starting 64 such processes at once and joining them, measured alternately with
procstart and stdlib so both see the same machine state, and their ratios. The `--rss-mib`
rows repeat the latency measurement from a parent holding that much resident memory, where
fork's page-table copy dominates. For forkserver, the server's start is measured on its own and
kept out of the latency and throughput rows.

The "forkserver, script __main__" rows measure the common case of a program run as
`python script.py`: there, every CPython 3.11-3.13.7 forkserver child re-runs the script (the
server never receives its path, so preloading `__main__` does nothing) and pays all its top-level
imports. Under `python -m procstart` the main module is `procstart.__main__`, which children never
re-run, so these rows run a generated script (SCRIPT_MAIN) in subprocesses, one per library.

The argument rows (`--arg-mib`) start a child whose target takes one argument, a `bytes` or a
`bytearray` of that many MiB (and a NumPy `uint8` array where NumPy is installed), for the methods
that send the child a payload (spawn and forkserver): the best of ARG_ROUNDS alternations, as the
cost then grows with the data.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import multiprocessing.forkserver
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial

import procstart
import procstart.forkserver
from procstart.benchmark_target import noop, take

LIBRARIES = ('procstart', 'stdlib')
THROUGHPUT_BATCH = 64
THROUGHPUT_ROUNDS = 3
LATENCY_ROUNDS = 5
SERVER_START_ROUNDS = 10
ARG_ROUNDS = 3
ARG_KINDS = ('bytes', 'bytearray')
ARG_MIB_DEFAULT = '1,16,256'
# The start methods that send a child its process object, and so its arguments.
PAYLOAD_METHODS = ('spawn', 'forkserver')
# Formats matplotlib writes with its non-interactive backends (Agg, SVG, PDF), told by the suffix.
PLOT_FORMATS = ('.svg', '.png', '.pdf')
# The target's module imports procstart: preloaded by both servers, so that no stdlib child pays
# for importing procstart, which a program using stdlib would not import.
FORKSERVER_PRELOAD = ['__main__', 'procstart.benchmark_target']

# What a typical program imports at top level (stdlib only, so that the script runs anywhere).
SCRIPT_IMPORTS = ('argparse', 'dataclasses', 'decimal', 'json', 'logging', 'statistics')
SCRIPT_MAIN = '''\
"""A user program for `python -m procstart`'s "forkserver, script __main__" rows, run as
`python script.py LIBRARY N BATCHES` with LIBRARY procstart or stdlib: the only one it
imports, as a program using the other would not import it. Its top-level imports stand for a
typical program's: {imports}. Forkserver with the default preload (`['__main__']`); prints N
start+join latencies (s) and the processes/s of BATCHES batches of {batch} (null if 0) as JSON.
"""

{import_lines}
import sys
import time

if sys.argv[1] == 'procstart':
    import procstart as mp
else:
    import multiprocessing as mp


def noop():
    pass


def start_join(ctx, procs):
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f'{{sys.argv[1]}} child exited with {{p.exitcode}}')
        p.close()


def main():
    n, batches = int(sys.argv[2]), int(sys.argv[3])
    ctx = mp.get_context('forkserver')
    # Warm-up: the server's start (its interpreter, preloading this script) is not measured.
    for _ in range(2):
        start_join(ctx, [ctx.Process(target=noop)])
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        start_join(ctx, [ctx.Process(target=noop)])
        latencies.append(time.perf_counter() - t0)
    per_s = None
    if batches:
        t0 = time.perf_counter()
        for _ in range(batches):
            start_join(ctx, [ctx.Process(target=noop) for _ in range({batch})])
        per_s = batches * {batch} / (time.perf_counter() - t0)
    print(json.dumps({{'latency_s': latencies, 'per_s': per_s}}))


if __name__ == '__main__':
    main()
'''.format(
    imports=', '.join(SCRIPT_IMPORTS),
    import_lines='\n'.join(f'import {name}' for name in SCRIPT_IMPORTS),
    batch=THROUGHPUT_BATCH,
)


def _start_join_latencies(ctx, n):
    """Seconds per start()+join() of a trivial process, one sample per process."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        samples.append(time.perf_counter() - t0)
        if p.exitcode != 0:
            raise RuntimeError(f'{ctx.get_start_method()} child exited with {p.exitcode}')
        p.close()
    return samples


def _summary(samples):
    ordered = sorted(samples)
    return {
        'median_ms': statistics.median(ordered) * 1e3,
        'p90_ms': ordered[int(len(ordered) * 0.9)] * 1e3,
        'n': len(ordered),
    }


def _contexts(method):
    return {'procstart': procstart.get_context(method), 'stdlib': multiprocessing.get_context(method)}


def _alternate(rounds, tick):
    """(round, library) for `rounds` rounds of procstart then stdlib, each announced to `tick`:
    alternating, both libraries see the same machine state."""
    for i in range(rounds):
        for library in LIBRARIES:
            tick(f'round {i + 1}/{rounds}, {library}')
            yield i, library


def _latency_row(row, samples):
    """`row` with the summaries of `samples` ({library: [seconds]}) and the ratio of their medians."""
    row.update((library, _summary(samples[library])) for library in LIBRARIES)
    row['ratio'] = row['procstart']['median_ms'] / row['stdlib']['median_ms']
    return row


def _throughput_row(row, per_s):
    """`row` with the best of `per_s` ({library: [processes/s]}) and their ratio."""
    ours, theirs = max(per_s['procstart']), max(per_s['stdlib'])
    row.update(procstart_per_s=ours, stdlib_per_s=theirs, ratio=ours / theirs)
    return row


def _throughput(ctx, batches):
    """Processes per second when THROUGHPUT_BATCH are started at once, then all joined."""
    t0 = time.perf_counter()
    for _ in range(batches):
        procs = [ctx.Process(target=noop) for _ in range(THROUGHPUT_BATCH)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f'{ctx.get_start_method()} child exited with {p.exitcode}')
            p.close()
    return batches * THROUGHPUT_BATCH / (time.perf_counter() - t0)


def measure_throughput(method, batches, tick, rounds=THROUGHPUT_ROUNDS):
    """Best processes/second of procstart and stdlib for `method` over `rounds` alternations."""
    contexts = _contexts(method)
    per_s = {library: [] for library in LIBRARIES}
    for _, library in _alternate(rounds, tick):
        per_s[library].append(_throughput(contexts[library], batches))
    return _throughput_row({'method': method}, per_s)


def measure(method, n, tick, rounds=LATENCY_ROUNDS):
    """Median latency of procstart and stdlib for `method`, interleaved in `rounds` rounds."""
    contexts = _contexts(method)
    per_round = max(1, n // rounds)
    # One warm-up each: imports, caches and helper processes are not what is measured.
    for ctx in contexts.values():
        _start_join_latencies(ctx, 2)
    samples = {library: [] for library in LIBRARIES}
    for _, library in _alternate(rounds, tick):
        samples[library] += _start_join_latencies(contexts[library], per_round)
    return _latency_row({'method': method}, samples)


def _run_script(path, library, n, batches):
    # The script gets the parent's interpreter, flags and sys.path (as PYTHONPATH, which keeps
    # its order), so that it finds procstart wherever the parent found it, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, *subprocess._args_from_interpreter_flags(), path, library, str(n), str(batches)]
    return json.loads(subprocess.run(command, env=env, stdout=subprocess.PIPE, check=True).stdout)


def measure_script_main(n, batches, tick, rounds=LATENCY_ROUNDS):
    """Latency and throughput (as `measure` and `measure_throughput`) of forkserver from a
    program run as a script, which imports SCRIPT_IMPORTS; one script run per library and round,
    alternated."""
    latencies = {library: [] for library in LIBRARIES}
    per_s = {library: [] for library in LIBRARIES}
    per_round = max(1, n // rounds)
    with tempfile.TemporaryDirectory(prefix='procstart-bench-') as tmp:
        path = os.path.join(tmp, 'script.py')
        with open(path, 'w') as f:
            f.write(SCRIPT_MAIN)
        for i, library in _alternate(rounds, tick):
            run = _run_script(path, library, per_round, batches if i < THROUGHPUT_ROUNDS else 0)
            latencies[library] += run['latency_s']
            if run['per_s'] is not None:
                per_s[library].append(run['per_s'])
    row = {'method': 'forkserver', 'script_imports': list(SCRIPT_IMPORTS)}
    latency = _latency_row(dict(row), latencies)
    return latency, _throughput_row(row, per_s) if batches else None


def _start_join_with(ctx, arg):
    """Seconds for start()+join() of a process whose target takes `arg`."""
    t0 = time.perf_counter()
    p = ctx.Process(target=take, args=(arg,))
    p.start()
    p.join()
    elapsed = time.perf_counter() - t0
    if p.exitcode != 0:
        raise RuntimeError(f'{ctx.get_start_method()} child exited with {p.exitcode}')
    p.close()
    return elapsed


def _numpy_array(size):
    import numpy

    return numpy.zeros(size, dtype=numpy.uint8)


# The argument rows' objects, by kind: numpy's where it is installed (`_plan`).
_ARGUMENTS = {'bytes': bytes, 'bytearray': bytearray, 'numpy': _numpy_array}


def measure_argument(method, kind, mib, tick, rounds=ARG_ROUNDS):
    """Best start+join of procstart and stdlib for `method` with one `kind` argument of `mib` MiB,
    alternated over `rounds` rounds, with the same argument object."""
    contexts = _contexts(method)
    arg = _ARGUMENTS[kind](mib << 20)
    samples = {library: [] for library in LIBRARIES}
    for _, library in _alternate(rounds, tick):
        samples[library].append(_start_join_with(contexts[library], arg))
    row = {'method': method, 'argument': kind, 'mib': mib}
    for library in LIBRARIES:
        row[library] = {
            'best_ms': min(samples[library]) * 1e3,
            'median_ms': statistics.median(samples[library]) * 1e3,
            'n': rounds,
        }
    row['ratio'] = row['procstart']['best_ms'] / row['stdlib']['best_ms']
    return row


def _server_start(forkserver, ctx):
    """Seconds for `ensure_running()` to start a stopped fork server, and until the first child
    it forks has been joined: in both libraries `ensure_running()` returns once the server is
    launched, so its own start-up (interpreter, preloading) is paid by that first child."""
    forkserver._stop()
    t0 = time.perf_counter()
    forkserver.ensure_running()
    launched = time.perf_counter() - t0
    _start_join_latencies(ctx, 1)
    return launched, time.perf_counter() - t0


def _servers():
    return {
        'procstart': (procstart.forkserver._forkserver, procstart.get_context('forkserver')),
        'stdlib': (multiprocessing.forkserver._forkserver, multiprocessing.get_context('forkserver')),
    }


def measure_server_start(tick, rounds=SERVER_START_ROUNDS):
    """Median fork-server start of procstart and stdlib over `rounds` restarts, alternated."""
    servers = _servers()
    # One restart each first: stdlib also starts its resource tracker with its first server.
    for server in servers.values():
        _server_start(*server)
    samples = {library: [] for library in LIBRARIES}
    for _, library in _alternate(rounds, tick):
        samples[library].append(_server_start(*servers[library]))
    result = {'rounds': rounds}
    for i, key in enumerate(('ensure_running', 'until_first_child')):
        a, b = (statistics.median(s[i] for s in samples[library]) * 1e3 for library in LIBRARIES)
        result[key] = {'procstart_ms': a, 'stdlib_ms': b, 'ratio': a / b}
    return result


def _hold_memory(mib, tick):
    """Resident memory (written, so really resident) for the big-parent rows."""
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):
        # Writing a GiB takes over a second here.
        if i % (256 << 20) == 0:
            tick(f'{i >> 20}/{mib} MiB')
        block[i] = 1
    return block


def _samples(method, n):
    # A spawn child costs tens of milliseconds: fewer samples keep the run short.
    return max(5, n // 5) if method == 'spawn' else n


def _plan(methods, args, report, held):
    """The measurements of a run, in order, as (what, function, arguments, store): function(*arguments,
    tick) measures, telling tick how far it is, and store puts its result into `report`; the big
    parent's memory goes to `held`."""
    latency, throughput = report['latency'], report['throughput']

    def store_script_main(rows):
        script_latency, script_throughput = rows
        latency.append(script_latency)
        if script_throughput:
            throughput.append(script_throughput)

    def store_big_parent(row):
        latency.append({**row, 'parent_rss_mib': args.rss_mib})

    plan = []
    for method in methods:
        n = _samples(method, args.n)
        if method == 'forkserver':
            plan.append(
                (
                    f'forkserver server start ({SERVER_START_ROUNDS} restarts per library)',
                    measure_server_start,
                    (),
                    partial(report.__setitem__, 'forkserver_server_start'),
                )
            )
        plan.append((f'{method} latency (n={n} per library)', measure, (method, n), latency.append))
        if args.batches:
            plan.append(
                (
                    f'{method} throughput ({args.batches} x {THROUGHPUT_BATCH} processes, best of {THROUGHPUT_ROUNDS})',
                    measure_throughput,
                    (method, args.batches),
                    throughput.append,
                )
            )
        if method == 'forkserver':
            plan.append(
                (
                    f'forkserver from a script __main__ (n={n} per library, in subprocesses)',
                    measure_script_main,
                    (n, args.batches),
                    store_script_main,
                )
            )
    plan += _argument_steps(methods, ARG_KINDS, args.arg_mib, report['argument'].append)
    if args.rss_mib:
        plan.append((f'allocating {args.rss_mib} MiB in the parent', _hold_memory, (args.rss_mib,), held.append))
        for method in methods:
            n = max(5, _samples(method, args.n) // 10)
            plan.append(
                (
                    f'{method} latency from a {args.rss_mib} MiB parent (n={n} per library)',
                    measure,
                    (method, n),
                    store_big_parent,
                )
            )
    if args.arg_mib and importlib.util.find_spec('numpy') is not None:
        # Last: importing numpy may start threads, which the fork rows' parent must not have.
        if 'forkserver' in methods:
            plan.append(('fork servers restarted with numpy preloaded', _preload_numpy, (), lambda _: None))
        plan += _argument_steps(methods, ('numpy',), args.arg_mib, report['argument'].append)
    return plan


def _preload_numpy(tick):
    """Both fork servers restarted with numpy preloaded, as a program that imports it at top level has it in its
    server (`__main__`): the numpy rows then measure the array's way to the child, not numpy's import in it,
    which both libraries' children would pay alike."""
    for library, (forkserver, ctx) in _servers().items():
        tick(library)
        forkserver._stop()
        (procstart if library == 'procstart' else multiprocessing).set_forkserver_preload(
            [*FORKSERVER_PRELOAD, 'numpy']
        )
        _start_join_latencies(ctx, 1)


def _argument_steps(methods, kinds, mibs, store):
    return [
        (
            f'{method} with a {mib} MiB {kind} argument (best of {ARG_ROUNDS})',
            measure_argument,
            (method, kind, mib),
            store,
        )
        for method in methods
        if method in PAYLOAD_METHODS
        for kind in kinds
        for mib in mibs
    ]


class Progress:
    """What is being measured and how far along, on stderr (results go to stdout alone). On a
    terminal: one line, rewritten down to the round; elsewhere (a log, a pipe): one plain line per
    measurement, without control characters. `stream` None: silent."""

    def __init__(self, total, stream):
        self.total = total
        self.stream = stream
        self.live = stream is not None and stream.isatty()
        self.started = 0
        self.current = ''

    def step(self, what):
        self.started += 1
        self.current = f'[{self.started}/{self.total}] {what}'
        if self.live:
            self._show(self.current)
        elif self.stream is not None:
            print(self.current, file=self.stream, flush=True)

    def tick(self, detail):
        if self.live:
            self._show(f'{self.current}: {detail}')

    def _show(self, line):
        # A line wider than the terminal wraps, and the carriage return would rewrite only its end.
        width = os.get_terminal_size(self.stream.fileno()).columns or 80
        self.stream.write(f'\r{line[: width - 1]}\x1b[K')
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.live:
            # Cleared for the results; on an error the line stays, ended, to show where it happened.
            self.stream.write('\n' if exc_type else '\r\x1b[K')
            self.stream.flush()


def _machine():
    with open('/proc/cpuinfo') as f:
        models = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return {
        'implementation': platform.python_implementation(),
        'system': f'{platform.system()} {platform.release()}',
        'arch': platform.machine(),
        'cpu': models[0] if models else platform.processor(),
        'cpus': len(os.sched_getaffinity(0)),
    }


def _label(result):
    if 'parent_rss_mib' in result:
        return f'{result["method"]} ({result["parent_rss_mib"]} MiB parent)'
    if 'script_imports' in result:
        return f'{result["method"]}, script __main__'
    return result['method']


def _argument_label(row):
    return f'{row["method"]}, {row["argument"]} {row["mib"]} MiB'


def _print_tables(report):
    results, throughput, server_start = report['latency'], report['throughput'], report['forkserver_server_start']
    print(f'start+join latency of a trivial process (median, ms), Python {report["python"]}')
    print(f'{"method":<30}{"procstart":>12}{"stdlib":>12}{"ratio":>9}')
    for r in results:
        print(
            f'{_label(r):<30}{r["procstart"]["median_ms"]:>12.3f}{r["stdlib"]["median_ms"]:>12.3f}{r["ratio"]:>8.2f}x'
        )
    if throughput:
        print(
            f'\nthroughput, {THROUGHPUT_BATCH} processes started then joined (processes/s, best of {THROUGHPUT_ROUNDS})'
        )
        print(f'{"method":<30}{"procstart":>12}{"stdlib":>12}{"ratio":>9}')
        for r in throughput:
            print(f'{_label(r):<30}{r["procstart_per_s"]:>12.0f}{r["stdlib_per_s"]:>12.0f}{r["ratio"]:>8.2f}x')
    if server_start:
        print(f'\nforkserver server start, from stopped (median of {server_start["rounds"]}, ms)')
        print(f'{"":<30}{"procstart":>12}{"stdlib":>12}{"ratio":>9}')
        for key, label in (('ensure_running', 'ensure_running()'), ('until_first_child', 'until first child joined')):
            r = server_start[key]
            print(f'{label:<30}{r["procstart_ms"]:>12.3f}{r["stdlib_ms"]:>12.3f}{r["ratio"]:>8.2f}x')
    if report['argument']:
        print(f'\nstart+join with one argument (best of {ARG_ROUNDS}, ms)')
        print(f'{"method, argument":<30}{"procstart":>12}{"stdlib":>12}{"ratio":>9}')
        for r in report['argument']:
            print(
                f'{_argument_label(r):<30}{r["procstart"]["best_ms"]:>12.3f}'
                f'{r["stdlib"]["best_ms"]:>12.3f}{r["ratio"]:>8.2f}x'
            )
    if any('script_imports' in r for r in results):
        print(
            '\nscript __main__: a program run as `python script.py`, importing at top level '
            f"{', '.join(SCRIPT_IMPORTS)}; default preload ['__main__']"
        )


def _figure(report):
    """The title and panels of the --plot figure (see procstart._plot.draw)."""
    machine = report['machine']
    cpu = f' ({machine["cpu"]})' if machine['cpu'] else ''
    title = (
        f'procstart {report["procstart_version"]} vs stdlib multiprocessing, measured side by side\n'
        f'{machine["implementation"]} {report["python"]}, {machine["system"]}, {machine["arch"]}, '
        f'{machine["cpus"]} CPUs{cpu}'
    )
    panels = [
        {
            'title': 'start+join latency of a trivial process',
            'axis': 'ms, median (whisker: 90th percentile), log scale: lower is better',
            'format': '{:#.3g} ms',
            'lower_is_better': True,
            'rows': [
                {
                    'label': _label(r),
                    'values': {library: r[library]['median_ms'] for library in LIBRARIES},
                    'p90': {library: r[library]['p90_ms'] for library in LIBRARIES},
                }
                for r in report['latency']
            ],
        }
    ]
    if report['throughput']:
        panels.append(
            {
                'title': f'throughput: {THROUGHPUT_BATCH} processes started at once, then joined',
                'axis': f'processes/s, best of {THROUGHPUT_ROUNDS}, log scale: higher is better',
                'format': '{:.0f} /s',
                'lower_is_better': False,
                'rows': [
                    {'label': _label(r), 'values': {library: r[f'{library}_per_s'] for library in LIBRARIES}}
                    for r in report['throughput']
                ],
            }
        )
    if report['argument']:
        panels.append(
            {
                'title': 'start+join of a process whose target takes one argument',
                'axis': f'ms, best of {ARG_ROUNDS}, log scale: lower is better',
                'format': '{:#.3g} ms',
                'lower_is_better': True,
                'rows': [
                    {
                        'label': _argument_label(r),
                        'values': {library: r[library]['best_ms'] for library in LIBRARIES},
                    }
                    for r in report['argument']
                ],
            }
        )
    server_start = report['forkserver_server_start']
    if server_start:
        start = server_start['until_first_child']
        panels.append(
            {
                'title': 'forkserver server start, from stopped until its first child has been joined',
                'axis': f'ms, median of {server_start["rounds"]}, log scale: lower is better',
                'format': '{:#.3g} ms',
                'lower_is_better': True,
                'rows': [{'label': 'forkserver', 'values': {library: start[f'{library}_ms'] for library in LIBRARIES}}],
            }
        )
    return title, panels


def _check_plot(parser, path):
    """--plot fails before measuring, not after. matplotlib is looked up here, not imported: that
    would grow this process, and so every fork child's page tables, and numpy's BLAS may start
    threads in it, which fork children do not get."""
    if os.path.splitext(path)[1].lower() not in PLOT_FORMATS:
        parser.error(f'--plot {path}: the file name must end in {", ".join(PLOT_FORMATS)}')
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parser.error(f'--plot {path}: no such directory: {directory}')
    if os.path.isdir(path):
        parser.error(f'--plot {path}: is a directory')
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        parser.error(f'--plot {path}: not writable')
    if importlib.util.find_spec('matplotlib') is None:
        parser.error("--plot needs matplotlib, which is not installed: pip install 'procstart[plot]'")


def main(argv=None):
    available = procstart.get_all_start_methods()
    parser = argparse.ArgumentParser(
        prog='python -m procstart',
        description='Start+join latency of a trivial process: procstart vs stdlib multiprocessing, side by side.',
    )
    parser.add_argument(
        '-n', type=int, default=300, help='latency samples per method and library (default 300; spawn: a fifth)'
    )
    parser.add_argument(
        '--batches', type=int, default=2, help=f'batches of {THROUGHPUT_BATCH} processes for throughput (default 2)'
    )
    parser.add_argument(
        '--methods',
        default=','.join(available),
        help=f'comma-separated start methods (default and available: {",".join(available)})',
    )
    parser.add_argument(
        '--rss-mib',
        type=int,
        default=2048,
        help='also measure from a parent holding this many MiB resident (0 to skip; default 2048)',
    )
    parser.add_argument(
        '--arg-mib',
        default=ARG_MIB_DEFAULT,
        help='comma-separated sizes in MiB of the bytes, bytearray (and, where installed, numpy) argument rows of '
        'spawn and forkserver '
        f'(0 to skip; default {ARG_MIB_DEFAULT})',
    )
    parser.add_argument('--json', action='store_true', help='print the results as JSON')
    parser.add_argument(
        '--plot',
        metavar='FILE',
        help=f"also draw the results to FILE ({', '.join(PLOT_FORMATS)}); needs pip install 'procstart[plot]'",
    )
    parser.add_argument('-q', '--quiet', action='store_true', help='no progress on stderr')
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    for m in methods:
        if m not in available:
            parser.error(f'start method {m!r} is not available in procstart (available: {", ".join(available)})')
    if args.n < 1:
        parser.error('-n must be at least 1')
    try:
        args.arg_mib = [int(mib) for mib in args.arg_mib.split(',') if mib.strip()]
    except ValueError:
        parser.error(f'--arg-mib {args.arg_mib}: comma-separated whole numbers of MiB expected')
    if any(mib < 0 for mib in args.arg_mib):
        parser.error('--arg-mib: sizes must not be negative')
    args.arg_mib = [mib for mib in args.arg_mib if mib]
    if args.plot:
        _check_plot(parser, args.plot)

    report = {
        'python': sys.version.split()[0],
        'procstart_version': procstart.__version__,
        'machine': _machine(),
        'latency': [],
        'throughput': [],
        'forkserver_server_start': None,
        'argument': [],
    }
    held = []
    plan = _plan(methods, args, report, held)
    if 'forkserver' in methods:
        procstart.set_forkserver_preload(FORKSERVER_PRELOAD)
        multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)
    with Progress(len(plan), None if args.quiet else sys.stderr) as progress:
        for what, function, arguments, store in plan:
            progress.step(what)
            store(function(*arguments, tick=progress.tick))
    held.clear()

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_tables(report)
    if args.plot:
        # Imported only now: see _check_plot.
        from procstart._plot import draw

        draw(args.plot, *_figure(report))
        if not args.quiet:
            print(f'figure written to {args.plot}', file=sys.stderr)
    return 0
