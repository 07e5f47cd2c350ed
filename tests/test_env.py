"""procstart extension: ``Process(env=...)``, variables set over the parent's environment in the child, for every
start method (a spawned child starts with them; a forked one sets them before ``run()``)."""

import os
import sys

import _targets
import pytest
from _support import IS_STDLIB, finish, recv, start_reporting

pytestmark = pytest.mark.skipif(IS_STDLIB, reason='procstart extension: stdlib Process has no env')


def test_env_merged_over_the_parents(ctx, make_pipe, monkeypatch):
    # PATH: inherited unchanged (a fork-server child inherits the server's environment, as under CPython, which
    # has the same PATH); PROCSTART_REPLACED: set here after the server may have started.
    monkeypatch.setenv('PROCSTART_REPLACED', 'parent')
    p, r = start_reporting(
        ctx,
        make_pipe,
        _targets.send_environ,
        'PATH',
        'PROCSTART_REPLACED',
        'PROCSTART_NEW',
        env={'PROCSTART_REPLACED': 'child', 'PROCSTART_NEW': 'é ü'},
    )
    kept, replaced, new, _ = recv(r)
    finish(p)
    assert (kept, replaced, new) == (os.environ['PATH'], 'child', 'é ü')
    assert os.environ['PROCSTART_REPLACED'] == 'parent' and 'PROCSTART_NEW' not in os.environ


def test_spawned_interpreter_starts_with_it(ctx, make_pipe, start_method):
    """Variables the interpreter reads at start-up take effect only in a spawned child."""
    p, r = start_reporting(ctx, make_pipe, _targets.send_environ, env={'PYTHONDONTWRITEBYTECODE': '1'})
    (dont_write_bytecode,) = recv(r)
    finish(p)
    assert dont_write_bytecode == (1 if start_method == 'spawn' else sys.flags.dont_write_bytecode)


def test_no_env_is_inherited(ctx, make_pipe):
    p, r = start_reporting(ctx, make_pipe, _targets.send_environ, 'PATH', env=None)
    assert recv(r)[0] == os.environ['PATH']
    finish(p)
    assert not hasattr(p, '_env')


@pytest.mark.parametrize(
    ('env', 'exc', 'message'),
    [
        (['A=1'], TypeError, 'env must be a mapping of str to str, not list'),
        ({1: 'x'}, TypeError, 'env keys and values must be str, not int'),
        ({'A': b'x'}, TypeError, 'env keys and values must be str, not bytes'),
        ({'A=B': 'x'}, ValueError, 'illegal environment variable name'),
        ({'': 'x'}, ValueError, 'illegal environment variable name'),
        ({'A': 'x\0y'}, ValueError, 'embedded null byte'),
    ],
)
def test_bad_env_raises_at_construction(ctx, env, exc, message):
    with pytest.raises(exc) as info:
        ctx.Process(target=_targets.noop, env=env)
    assert str(info.value) == message


def test_set_before_the_parents_modules_are_imported(ctx, make_pipe, tmp_path, monkeypatch, start_method):
    """A module the child imports reads the variable at import time: a spawned or fork-server child has it by then;
    a fork child imported the module in the parent already."""
    module = f'envprobe_{start_method}'
    (tmp_path / f'{module}.py').write_text(
        'import os\nAT_IMPORT = os.environ.get("PROCSTART_AT_IMPORT")\n\ndef report(conn):\n    conn.send(AT_IMPORT)\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = __import__(module)
    p, r = start_reporting(ctx, make_pipe, probe.report, env={'PROCSTART_AT_IMPORT': 'yes'})
    at_import = recv(r)
    finish(p)
    assert at_import == (None if start_method == 'fork' else 'yes')
