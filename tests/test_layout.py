"""The shape of procstart's source, as issue 16 set it: no import cycle among procstart's Python modules, counting
imports inside functions too (a lazy import still makes two modules depend on each other), and no module of
procstart's Python half named by the extension, which receives what it calls back from `procstart/_hooks.py`.

Run as a script, it prints the import graph and its cycles: `python tests/test_layout.py`.
"""

from __future__ import annotations

import ast
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, 'python', 'procstart')
SRC_DIR = os.path.join(ROOT, 'src')
PACKAGE = 'procstart'
EXTENSION = 'procstart._procstart'


def package_modules():
    """{module name: path} of procstart's Python modules, and its extension (which imports none of them)."""
    modules = {EXTENSION: None}
    for entry in sorted(os.listdir(PACKAGE_DIR)):
        if entry.endswith('.py'):
            stem = entry[:-3]
            modules[PACKAGE if stem == '__init__' else f'{PACKAGE}.{stem}'] = os.path.join(PACKAGE_DIR, entry)
    return modules


def imported_by(name, path, modules):
    """The procstart modules that `import` and `from` statements of the module `name` name, at any nesting.

    Importing a submodule runs its package first, but that edge is every submodule's and not counted: the package
    counts where a statement names it, or a name of it that is not a submodule (`from . import _default_context`)."""
    package = PACKAGE if name == PACKAGE else name.rpartition('.')[0]
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + '.'):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else package.rsplit('.', node.level - 1)[0]
                base = f'{base}.{node.module}' if node.module else base
            else:
                base = node.module
            if base != PACKAGE and not base.startswith(PACKAGE + '.'):
                continue
            for alias in node.names:
                submodule = f'{base}.{alias.name}'
                found.add(submodule if submodule in modules else base)
    found.discard(name)
    unknown = found - modules.keys()
    assert not unknown, f'{name} imports modules procstart does not have: {sorted(unknown)}'
    return found


def import_graph():
    modules = package_modules()
    return {name: imported_by(name, path, modules) if path else set() for name, path in modules.items()}


def cycles(graph):
    """Every strongly connected component of more than one module (Tarjan's algorithm), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_path(graph, component):
    """One cycle through `component`, as `a -> b -> ... -> a`, for the failure message."""
    members = set(component)
    start = component[0]
    path, node = [start], start
    seen = {start}
    while True:
        succ = next(s for s in sorted(graph[node]) if s in members and (s == start or s not in seen))
        path.append(succ)
        if succ == start:
            return ' -> '.join(path)
        seen.add(succ)
        node = succ


# A Rust string literal, or a byte or C string; comments are dropped first, so doc comments may name Python files.
_RUST_LITERAL = re.compile(r'[bc]?"((?:[^"\\]|\\.)*)"')
_RUST_LINE_COMMENT = re.compile(r'//[^\n]*')
_PYTHON_MODULE_NAME = re.compile(r'^procstart(\.[A-Za-z_]\w*)*$')


def rust_named_modules():
    """(file, literal) for each string literal under src/ naming a procstart Python module other than the extension."""
    found = []
    for directory, _, files in os.walk(SRC_DIR):
        for file in sorted(files):
            if not file.endswith('.rs'):
                continue
            path = os.path.join(directory, file)
            with open(path, encoding='utf-8') as f:
                code = _RUST_LINE_COMMENT.sub('', f.read())
            for literal in _RUST_LITERAL.findall(code):
                if _PYTHON_MODULE_NAME.match(literal) and literal != EXTENSION:
                    found.append((os.path.relpath(path, ROOT), literal))
    return found


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert [cycle_path(graph, c) for c in found] == []


def test_the_extension_names_no_python_module_of_procstart():
    # What Rust calls back comes from procstart/_hooks.py (src/hooks.rs); a name such as "procstart.spawn" in src/
    # would import the Python half from the extension again, and make the circle issue 16 removed.
    assert rust_named_modules() == []


def test_the_checks_see_a_cycle_and_a_name():
    # A check that sees nothing passes too: these show that the checks find what they must.
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert cycles(graph) == [['a', 'b', 'c']]
    assert cycle_path(graph, ['a', 'b', 'c']) == 'a -> b -> c -> a'
    assert _PYTHON_MODULE_NAME.match('procstart.spawn') and not _PYTHON_MODULE_NAME.match("procstart's hooks")
    assert _RUST_LITERAL.findall('py.import(c"procstart.spawn") // "procstart.x"') == ['procstart.spawn', 'procstart.x']
    graph = import_graph()
    assert {'procstart._hooks', 'procstart.process'} <= graph[PACKAGE]
    assert graph[EXTENSION] == set()


if __name__ == '__main__':
    graph = import_graph()
    for name in sorted(graph):
        print(f'{name}: {", ".join(sorted(graph[name])) or "-"}')
    found = cycles(graph)
    print(f'\n{len(found)} cycle(s)')
    for c in found:
        print(f'  {cycle_path(graph, c)}  [{", ".join(c)}]')
    named = rust_named_modules()
    print(f'{len(named)} procstart module name(s) in src/' + ''.join(f'\n  {f}: {lit}' for f, lit in named))
    sys.exit(1 if found or named else 0)
