"""procstart's classes and stdlib ``multiprocessing``'s (issue 13): libraries check ``isinstance(ctx, BaseContext)``,
``issubclass(cls, BaseProcess)`` or ``isinstance(lock, synchronize.Lock)``, so procstart's contexts, Process classes
and locks are instances and subclasses of stdlib's -- whether stdlib is imported before procstart or after it (procstart
does not import it). The stdlib classes are bases for isinstance only: no name resolves through them.

One place for the three kinds: the objects and the checks are ``_targets.stdlib_class_objects`` and
``_targets.stdlib_class_failures``, so that this process, a fresh interpreter and a spawn child run the same checks.
"""

import _targets
import pytest
from _support import IS_STDLIB, last_json, run_process, skip_on_stdlib, stdlib_owned_names

KINDS = ['contexts', 'processes', 'locks']


@pytest.mark.parametrize('kind', KINDS)
def test_stdlib_imported_before(kind):
    # Here (pytest's process) stdlib multiprocessing was imported before the module under test.
    assert _targets.stdlib_class_failures(kind, _targets.stdlib_class_objects(kind)) == []


@pytest.mark.parametrize('kind', KINDS)
def test_stdlib_imported_after(run_py, kind):
    proc = run_py(
        f"""
        imported_before = sorted(name for name in sys.modules if name.startswith('multiprocessing'))
        objects = _targets.stdlib_class_objects({kind!r})
        print(json.dumps([imported_before, _targets.stdlib_class_failures({kind!r}, objects)]))
        """
    )
    imported_before, failures = last_json(proc)
    assert failures == []
    if not IS_STDLIB:
        assert imported_before == []


@pytest.mark.parametrize('kind', KINDS)
def test_in_a_spawn_child(mp, kind):
    # A spawn child imports the module under test through its own bootstrap, stdlib only when the checks do.
    assert run_process(mp.get_context('spawn'), _targets.exit_if_stdlib_class_checks_fail, kind).exitcode == 0


@skip_on_stdlib('procstart does not import stdlib multiprocessing (a stdlib spawn child is bootstrapped by it)')
def test_stdlib_multiprocessing_stays_unimported(run_py):
    # `import procstart` does not import it (the stdlib bases wait for it), nor does a spawn child through its start,
    # run and join. (The parent imports multiprocessing.process with its first Process, to share the main process's
    # authkey with stdlib's: process._main_config.)
    proc = run_py(
        """
        after_import = sorted(name for name in sys.modules if name.startswith('multiprocessing'))
        p = mp.get_context('spawn').Process(target=_targets.exit_if_multiprocessing_imported)
        p.start()
        p.join()
        print(json.dumps([after_import, p.exitcode]))
        """
    )
    assert last_json(proc) == [[], 0]


def _own_classes(mp, kind):
    if kind == 'contexts':
        return [type(ctx) for ctx in _targets.stdlib_class_objects('contexts').values()]
    if kind == 'processes':
        return [
            mp.Process,
            type(mp.current_process()),
            mp.process._ParentProcess,
            *(mp.get_context(method).Process for method in _targets.METHODS),
        ]
    from procstart import synchronize

    return [getattr(synchronize, name) for name in ('SemLock', *_targets.LOCK_CLASSES)]


# What stdlib's classes have and procstart's leave out: the stdlib bases must not bring them in.
STDLIB_ONLY_NAMES = {
    'contexts': [],
    'processes': ['_Popen', '_bootstrap', '_check_closed', '_after_fork'],
    'locks': ['_rand'],
}


@skip_on_stdlib('procstart classes with stdlib bases')
@pytest.mark.parametrize('kind', KINDS)
def test_names_are_procstart_own(mp, kind):
    for cls in _own_classes(mp, kind):
        assert stdlib_owned_names(cls) == [], cls
        for name in STDLIB_ONLY_NAMES[kind]:
            assert not hasattr(cls, name), (cls, name)
            assert not hasattr(cls.__new__(cls), name), (cls, name)
    if kind == 'contexts':
        # Nor an __init__ of procstart's own over the one stdlib's DefaultContext has (which sets _actual_context).
        assert type(mp.context._default_context).__init__ is object.__init__
