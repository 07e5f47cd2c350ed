"""Wrong types and values at every public entry point: the same exception type and message as
CPython where CPython has one (the stdlib run is the reference), raised in the parent at the call
that caused it, with nothing left behind (the autouse leak checks)."""

import math
import os

import _targets
import pytest
from _support import CHILD_TIMEOUT, finish, run_process, skip_on_stdlib

# (description, call(mp, ctx), exception type, exact message or None for "any message")
CASES = [
    (
        'get_context unknown name',
        lambda mp, ctx: mp.get_context('bogus'),
        ValueError,
        "cannot find context for 'bogus'",
    ),
    ('get_context non-str', lambda mp, ctx: mp.get_context(5), ValueError, 'cannot find context for 5'),
    (
        'set_start_method on a concrete context',
        lambda mp, ctx: ctx.set_start_method('fork'),
        ValueError,
        'cannot set start method of concrete context',
    ),
    (
        'set_forkserver_preload with a non-string',
        lambda mp, ctx: mp.set_forkserver_preload(['os', 1]),
        TypeError,
        'module_names must be a list of strings',
    ),
    (
        'set_forkserver_preload with a non-iterable',
        lambda mp, ctx: mp.set_forkserver_preload(5),
        TypeError,
        "'int' object is not iterable",
    ),
    (
        'set_executable with a non-path',
        lambda mp, ctx: mp.set_executable(5),
        TypeError,
        'expected str, bytes or os.PathLike object, not int',
    ),
    (
        'Process group not None',
        lambda mp, ctx: ctx.Process(group=1),
        AssertionError,
        'group argument must be None for now',
    ),
    ('Process args not iterable', lambda mp, ctx: ctx.Process(args=5), TypeError, "'int' object is not iterable"),
    (
        'Process kwargs not a mapping',
        lambda mp, ctx: ctx.Process(kwargs=5),
        TypeError,
        "'int' object is not iterable",
    ),
    (
        'name set to a non-str',
        lambda mp, ctx: setattr(ctx.Process(), 'name', 5),
        AssertionError,
        'name must be a string',
    ),
    ('join before start', lambda mp, ctx: ctx.Process().join(1), AssertionError, 'can only join a started process'),
    ('sentinel before start', lambda mp, ctx: ctx.Process().sentinel, ValueError, 'process not started'),
]


@pytest.mark.parametrize(('what', 'call', 'exc_type', 'message'), CASES, ids=[c[0] for c in CASES])
def test_bad_input(mp, ctx, what, call, exc_type, message):
    with pytest.raises(exc_type) as excinfo:
        call(mp, ctx)
    if message is not None:
        assert str(excinfo.value) == message


# procstart's extensions (no stdlib reference): clear messages naming the argument.
EXTENSION_CASES = [
    (
        'die_with_parent not a bool',
        lambda mp, ctx: ctx.Process(die_with_parent='no'),
        TypeError,
        'die_with_parent must be True or False, not str',
    ),
    (
        'new_process_group not a bool',
        lambda mp, ctx: ctx.Process(new_process_group=1),
        TypeError,
        'new_process_group must be True or False, not int',
    ),
    ('env not a mapping', lambda mp, ctx: ctx.Process(env=[('A', '1')]), TypeError, None),
    ('kill with a positional', lambda mp, ctx: ctx.Process().kill(9), TypeError, None),
    (
        'terminate tree not a bool',
        lambda mp, ctx: ctx.Process().terminate(tree='yes'),
        TypeError,
        'tree must be True or False, not str',
    ),
    (
        'set_fork_thread_check unknown mode',
        lambda mp, ctx: mp.set_fork_thread_check('never'),
        ValueError,
        "fork thread check must be 'warn', 'error' or 'ignore', not 'never'",
    ),
]


@skip_on_stdlib('extensions')
@pytest.mark.parametrize(('what', 'call', 'exc_type', 'message'), EXTENSION_CASES, ids=[c[0] for c in EXTENSION_CASES])
def test_bad_input_to_extensions(mp, ctx, what, call, exc_type, message):
    test_bad_input(mp, ctx, what, call, exc_type, message)
    assert mp.get_fork_thread_check() == 'warn'


@pytest.mark.parametrize('timeout', ['soon', [1]], ids=['str', 'list'])
def test_join_timeout_of_the_wrong_type(ctx, timeout):
    # CPython fails inside select/poll with its own TypeError text; procstart's names the
    # argument. The type is what both promise.
    p = ctx.Process(target=_targets.sleep, args=(0.2,))
    p.start()
    try:
        with pytest.raises(TypeError):
            p.join(timeout)
    finally:
        finish(p)
    assert p.exitcode == 0


def test_join_timeout_nan(ctx):
    p = ctx.Process(target=_targets.sleep, args=(0.2,))
    p.start()
    try:
        with pytest.raises(ValueError, match='cannot convert float NaN to integer'):
            p.join(math.nan)
    finally:
        finish(p)


def test_non_callable_target_fails_in_the_child(ctx):
    # As CPython: the target is only called in the child, which reports the TypeError and exits 1.
    p = run_process(ctx, 5)
    assert p.exitcode == 1


@pytest.mark.parametrize('size', [10 * 1024 * 1024], ids=['10MiB'])
def test_huge_arguments_arrive(ctx, tmp_path, size):
    data = os.urandom(1024) * (size // 1024)
    path = str(tmp_path / 'digest')
    p = ctx.Process(target=_targets.write_digest, args=(path, data))
    p.start()
    p.join(CHILD_TIMEOUT)
    assert p.exitcode == 0
    import hashlib

    with open(path) as f:
        assert f.read() == hashlib.sha256(data).hexdigest()
