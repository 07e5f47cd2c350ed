"""`python -m procstart`: procstart's start methods against stdlib `multiprocessing`, side by
side in one run. (`python -m procstart run ...` runs a program instead: see `procstart._run`.)

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
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.forkserver
import os
import statistics
import subprocess
import sys
import tempfile
import time

import procstart
import procstart.forkserver
from procstart.benchmark_target import noop

THROUGHPUT_BATCH = 64
THROUGHPUT_ROUNDS = 3
# The target's module imports procstart: preloaded by both servers, so that no stdlib child pays
# for importing procstart, which a program using stdlib would not import.
FORKSERVER_PRELOAD = ['__main__', 'procstart.benchmark_target']

# What a typical program imports at top level (stdlib only, so that the script runs anywhere).
SCRIPT_IMPORTS = ('argparse', 'dataclasses', 'decimal', 'json', 'logging', 'statistics')
SCRIPT_MAIN = '''\
"""A user program for `python -m procstart`'s "forkserver, script __main__" rows, run as
`python script.py LIBRARY N BATCHES` with LIBRARY procstart or multiprocessing: the only one it
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


def measure_throughput(method, batches, rounds=THROUGHPUT_ROUNDS):
    """Best processes/second of procstart and stdlib for `method` over `rounds` alternations."""
    ctx_ours, ctx_stdlib = procstart.get_context(method), multiprocessing.get_context(method)
    ours = max(_throughput(ctx_ours, batches) for _ in range(rounds))
    theirs = max(_throughput(ctx_stdlib, batches) for _ in range(rounds))
    return {'method': method, 'procstart_per_s': ours, 'stdlib_per_s': theirs, 'ratio': ours / theirs}


def measure(method, n, rounds=5):
    """Median latency of procstart and stdlib for `method`, interleaved in `rounds` rounds."""
    ours, theirs = [], []
    ctx_ours, ctx_stdlib = procstart.get_context(method), multiprocessing.get_context(method)
    per_round = max(1, n // rounds)
    # One warm-up each: imports, caches and helper processes are not what is measured.
    _start_join_latencies(ctx_ours, 2)
    _start_join_latencies(ctx_stdlib, 2)
    for _ in range(rounds):
        ours += _start_join_latencies(ctx_ours, per_round)
        theirs += _start_join_latencies(ctx_stdlib, per_round)
    result = {'method': method, 'procstart': _summary(ours), 'stdlib': _summary(theirs)}
    result['ratio'] = result['procstart']['median_ms'] / result['stdlib']['median_ms']
    return result


def _run_script(path, library, n, batches):
    # The script gets the parent's interpreter, flags and sys.path (as PYTHONPATH, which keeps
    # its order), so that it finds procstart wherever the parent found it, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, *subprocess._args_from_interpreter_flags(), path, library, str(n), str(batches)]
    return json.loads(subprocess.run(command, env=env, stdout=subprocess.PIPE, check=True).stdout)


def measure_script_main(n, batches, rounds=5):
    """Latency and throughput (as `measure` and `measure_throughput`) of forkserver from a
    program run as a script, which imports SCRIPT_IMPORTS; one script run per library and round,
    alternated."""
    ours, theirs = [], []
    per_s_ours, per_s_theirs = [], []
    per_round = max(1, n // rounds)
    with tempfile.TemporaryDirectory(prefix='procstart-bench-') as tmp:
        path = os.path.join(tmp, 'script.py')
        with open(path, 'w') as f:
            f.write(SCRIPT_MAIN)
        for i in range(rounds):
            round_batches = batches if i < THROUGHPUT_ROUNDS else 0
            for library, latencies, per_s in (
                ('procstart', ours, per_s_ours),
                ('multiprocessing', theirs, per_s_theirs),
            ):
                run = _run_script(path, library, per_round, round_batches)
                latencies += run['latency_s']
                if run['per_s'] is not None:
                    per_s.append(run['per_s'])
    imports = list(SCRIPT_IMPORTS)
    latency = {
        'method': 'forkserver',
        'script_imports': imports,
        'procstart': _summary(ours),
        'stdlib': _summary(theirs),
    }
    latency['ratio'] = latency['procstart']['median_ms'] / latency['stdlib']['median_ms']
    if not batches:
        return latency, None
    throughput = {
        'method': 'forkserver',
        'script_imports': imports,
        'procstart_per_s': max(per_s_ours),
        'stdlib_per_s': max(per_s_theirs),
    }
    throughput['ratio'] = throughput['procstart_per_s'] / throughput['stdlib_per_s']
    return latency, throughput


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


def measure_server_start(rounds=10):
    """Median fork-server start of procstart and stdlib over `rounds` restarts, alternated."""
    ours = (procstart.forkserver._forkserver, procstart.get_context('forkserver'))
    theirs = (multiprocessing.forkserver._forkserver, multiprocessing.get_context('forkserver'))
    # One restart each first: stdlib also starts its resource tracker with its first server.
    _server_start(*ours)
    _server_start(*theirs)
    samples_ours, samples_theirs = [], []
    for _ in range(rounds):
        samples_ours.append(_server_start(*ours))
        samples_theirs.append(_server_start(*theirs))
    result = {'rounds': rounds}
    for i, key in enumerate(('ensure_running', 'until_first_child')):
        a = statistics.median(s[i] for s in samples_ours) * 1e3
        b = statistics.median(s[i] for s in samples_theirs) * 1e3
        result[key] = {'procstart_ms': a, 'stdlib_ms': b, 'ratio': a / b}
    return result


def _hold_memory(mib):
    """Resident memory (written, so really resident) for the big-parent rows."""
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return block


def _label(result):
    if 'parent_rss_mib' in result:
        return f'{result["method"]} ({result["parent_rss_mib"]} MiB parent)'
    if 'script_imports' in result:
        return f'{result["method"]}, script __main__'
    return result['method']


def _progress(text):
    print(text, file=sys.stderr, flush=True)


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
    parser.add_argument('--json', action='store_true', help='print the results as JSON')
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    for m in methods:
        if m not in available:
            parser.error(f'start method {m!r} is not available in procstart (available: {", ".join(available)})')
    if args.n < 1:
        parser.error('-n must be at least 1')

    def samples(method, n):
        # A spawn child costs tens of milliseconds: fewer samples keep the run short.
        return max(5, n // 5) if method == 'spawn' else n

    results, throughput, server_start = [], [], None
    if 'forkserver' in methods:
        procstart.set_forkserver_preload(FORKSERVER_PRELOAD)
        multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)
    for method in methods:
        n = samples(method, args.n)
        if method == 'forkserver':
            _progress('measuring forkserver server start ...')
            server_start = measure_server_start()
        _progress(f'measuring {method} latency ({n} processes each) ...')
        results.append(measure(method, n))
        if args.batches:
            _progress(f'measuring {method} throughput ({args.batches} x {THROUGHPUT_BATCH} processes each) ...')
            throughput.append(measure_throughput(method, args.batches))
        if method == 'forkserver':
            _progress(f'measuring forkserver from a script __main__ ({n} processes each, in subprocesses) ...')
            latency, script_throughput = measure_script_main(n, args.batches)
            results.append(latency)
            if script_throughput:
                throughput.append(script_throughput)
    if args.rss_mib:
        _progress(f'allocating {args.rss_mib} MiB in the parent ...')
        block = _hold_memory(args.rss_mib)
        for method in methods:
            n = max(5, samples(method, args.n) // 10)
            _progress(f'measuring {method} from a {args.rss_mib} MiB parent ({n} processes each) ...')
            result = measure(method, n)
            result['parent_rss_mib'] = args.rss_mib
            results.append(result)
        del block

    if args.json:
        report = {
            'python': sys.version.split()[0],
            'latency': results,
            'throughput': throughput,
            'forkserver_server_start': server_start,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f'start+join latency of a trivial process (median, ms), Python {sys.version.split()[0]}')
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
    if any('script_imports' in r for r in results):
        print(
            '\nscript __main__: a program run as `python script.py`, importing at top level '
            f"{', '.join(SCRIPT_IMPORTS)}; default preload ['__main__']"
        )
    return 0


if __name__ == '__main__':
    if sys.argv[1:2] == ['run']:
        from procstart._run import main as run

        sys.exit(run(sys.argv[2:]))
    sys.exit(main())
