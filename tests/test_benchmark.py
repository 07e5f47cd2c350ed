"""`python -m procstart`, the benchmark: progress on stderr and results on stdout, `--plot`'s figure, and what
fails before any measurement. Runs use the smallest sample counts: what is checked is what the benchmark writes,
never how fast anything was."""

import fcntl
import importlib.util
import json
import os
import platform
import re
import struct
import subprocess
import sys
import termios
import xml.etree.ElementTree as ET

import pytest
from _support import IS_STDLIB, child_env, run_python

pytestmark = pytest.mark.skipif(IS_STDLIB, reason="procstart's benchmark (it measures both libraries)")

# One latency sample per library (spawn: five), no throughput, no big parent, no argument rows.
SMALL = ('-n', '1', '--batches', '0', '--rss-mib', '0', '--arg-mib', '0')
SVG = '{http://www.w3.org/2000/svg}'
PLOT_EXTRA = "pip install 'procstart[plot]'"
# Looked up, not imported: importing it (and numpy) here would change the process later tests fork from.
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec('matplotlib') is None, reason=f'--plot needs matplotlib: {PLOT_EXTRA}'
)


def _benchmark(*args, first_on_path=()):
    """`python -m procstart args`, stdout and stderr pipes -> CompletedProcess (text)."""
    return run_python('-m', 'procstart', *args, path=first_on_path, timeout=90, check=False)


def _svg_texts(path):
    root = ET.parse(path).getroot()
    assert root.tag == f'{SVG}svg'
    # A list, not a set: two rows may well carry the same ratio label.
    return [''.join(element.itertext()).strip() for element in root.iter(f'{SVG}text')]


def test_progress_on_stderr_results_on_stdout():
    run = _benchmark(*SMALL, '--methods', 'fork,spawn', '--json')
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [row['method'] for row in report['latency']] == ['fork', 'spawn']
    assert report['throughput'] == []
    assert report['forkserver_server_start'] is None
    # Not a terminal: one plain line per measurement, numbered.
    assert '\r' not in run.stderr and '\x1b' not in run.stderr
    steps = [
        re.fullmatch(r'\[(\d)/(\d)\] (\w+) latency \(n=(\d) per library\)', line) for line in run.stderr.splitlines()
    ]
    assert [step.groups() if step else None for step in steps] == [('1', '2', 'fork', '1'), ('2', '2', 'spawn', '5')]


def test_quiet_writes_nothing_to_stderr():
    run = _benchmark(*SMALL, '--methods', 'fork', '--quiet')
    assert run.returncode == 0, run.stderr
    assert run.stderr == ''
    assert re.search(r'^fork +\d+\.\d+ +\d+\.\d+ +\d+\.\d+x$', run.stdout, re.MULTILINE), run.stdout


def test_progress_on_a_terminal_is_one_line_rewritten():
    columns = 50
    master, terminal = os.openpty()
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack('HHHH', 24, columns, 0, 0))
        with subprocess.Popen(
            [sys.executable, '-m', 'procstart', *SMALL, '--methods', 'fork'],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            env=child_env(),
        ) as proc:
            stdout, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0
        # All written by now: read what is there, without waiting for more.
        os.set_blocking(master, False)
        shown = b''
        while True:
            try:
                shown += os.read(master, 4096)
            except BlockingIOError:
                break
    finally:
        os.close(master)
        os.close(terminal)
    shown = shown.decode()
    assert '\n' not in shown
    # Each state of the line: cut to the terminal's width (a wrapped line would not be rewritten), then erased to
    # its end; the last one clears it for the results.
    states = shown.split('\r')
    assert states[0] == '' and states[-1] == '\x1b[K'
    assert all(state.endswith('\x1b[K') and len(state) - 3 < columns for state in states[1:])
    assert states[1] == '[1/1] fork latency (n=1 per library)\x1b[K'
    assert any(state.startswith('[1/1] fork latency (n=1 per library): round 5/5') for state in states)
    assert stdout.startswith('start+join latency')


def _plot(tmp_path, *args):
    """Run with `--plot` and `--json`: (the report, the texts of the SVG)."""
    out = tmp_path / 'bench.svg'
    run = _benchmark(*args, '--json', '--plot', str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[-1] == f'figure written to {out}'
    return json.loads(run.stdout), _svg_texts(out)


@needs_matplotlib
def test_plot_shows_each_method_beside_stdlib(tmp_path):
    report, texts = _plot(tmp_path, *SMALL)
    rows = {'fork', 'spawn', 'forkserver', 'forkserver, script __main__'}
    assert rows | {'procstart', 'stdlib'} <= set(texts)
    assert any(platform.python_version() in text and platform.machine() in text for text in texts)
    ratios = [row['ratio'] for row in report['latency']]
    ratios.append(report['forkserver_server_start']['until_first_child']['ratio'])
    assert sorted(text for text in texts if text.endswith('×')) == sorted(f'{ratio:.2f}×' for ratio in ratios)


@needs_matplotlib
def test_plot_shows_throughput_and_big_parent_rows(tmp_path):
    report, texts = _plot(tmp_path, '-n', '1', '--batches', '1', '--rss-mib', '8', '--methods', 'fork')
    assert {'fork', 'fork (8 MiB parent)'} <= set(texts)
    assert any(text.startswith('throughput') for text in texts)
    ratios = [row['ratio'] for row in report['latency'] + report['throughput']]
    assert len(ratios) == 3
    assert sorted(text for text in texts if text.endswith('×')) == sorted(f'{ratio:.2f}×' for ratio in ratios)


def test_plot_without_matplotlib_fails_before_measuring(tmp_path):
    shim = tmp_path / 'shim'
    shim.mkdir()
    # As if matplotlib were not installed: a None in sys.modules makes both its import and its lookup fail.
    (shim / 'sitecustomize.py').write_text("import sys\nsys.modules['matplotlib'] = None\n")
    out = tmp_path / 'bench.svg'
    run = _benchmark(*SMALL, '--plot', str(out), first_on_path=[str(shim)])
    assert run.returncode == 2
    assert (
        run.stderr.splitlines()[-1]
        == f'python -m procstart: error: --plot needs matplotlib, which is not installed: {PLOT_EXTRA}'
    )
    assert run.stdout == ''
    assert '[1/' not in run.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ('name', 'message'),
    [
        ('missing/bench.svg', 'no such directory'),
        ('bench.txt', 'the file name must end in .svg, .png, .pdf'),
        ('taken.svg', 'is a directory'),
    ],
)
def test_plot_bad_path_fails_before_measuring(tmp_path, name, message):
    (tmp_path / 'taken.svg').mkdir()
    run = _benchmark(*SMALL, '--plot', str(tmp_path / name))
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1].startswith(f'python -m procstart: error: --plot {tmp_path / name}: {message}')
    assert run.stdout == ''
    assert '[1/' not in run.stderr


@needs_matplotlib
def test_argument_rows_per_payload_method_and_kind(tmp_path):
    # fork sends no payload: no argument rows for it.
    args = ('-n', '1', '--batches', '0', '--rss-mib', '0', '--arg-mib', '1,2', '--methods', 'fork,spawn,forkserver')
    report, texts = _plot(tmp_path, *args)
    rows = [(row['method'], row['argument'], row['mib']) for row in report['argument']]
    payload_methods = ('spawn', 'forkserver')
    # NumPy's rows come last, where it is installed (matplotlib brings it).
    assert rows == [
        (method, kind, mib) for method in payload_methods for kind in ('bytes', 'bytearray') for mib in (1, 2)
    ] + [(method, 'numpy', mib) for method in payload_methods for mib in (1, 2)]
    for row in report['argument']:
        for library in ('procstart', 'stdlib'):
            assert row[library]['n'] == 3 and 0 < row[library]['best_ms'] <= row[library]['median_ms']
        assert row['ratio'] == row['procstart']['best_ms'] / row['stdlib']['best_ms']
    assert {'spawn, bytes 1 MiB', 'forkserver, bytearray 2 MiB', 'spawn, numpy 2 MiB'} <= set(texts)
    ratios = [row['ratio'] for row in report['latency'] + report['argument']]
    ratios.append(report['forkserver_server_start']['until_first_child']['ratio'])
    assert sorted(text for text in texts if text.endswith('×')) == sorted(f'{ratio:.2f}×' for ratio in ratios)


def test_argument_rows_in_the_tables():
    run = _benchmark('-n', '1', '--batches', '0', '--rss-mib', '0', '--arg-mib', '1', '--methods', 'spawn')
    assert run.returncode == 0, run.stderr
    table = run.stdout.split('start+join with one argument (best of 3, ms)\n', 1)[1].splitlines()
    assert table[0].split() == ['method,', 'argument', 'procstart', 'stdlib', 'ratio']
    assert [line.split(' MiB')[0] for line in table[1:3]] == ['spawn, bytes 1', 'spawn, bytearray 1']


@pytest.mark.parametrize('value', ['x', '1,-2', '1.5'])
def test_bad_arg_mib_fails_before_measuring(value):
    run = _benchmark(*SMALL, '--arg-mib', value)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1].startswith('python -m procstart: error: --arg-mib')
    assert '[1/' not in run.stderr
