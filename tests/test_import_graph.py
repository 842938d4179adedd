"""The import graph of ``facesieve/`` has no cycle (module-level and function-level imports).

Parsed with the standard library's ``ast`` (nothing is imported): every ``import x`` /
``from x import y`` anywhere in a module, relative imports resolved, ``from pkg import name``
counted as an import of ``pkg.name`` when that is a module of the package, else of ``pkg``.
Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``; that implicit edge is
left out (a package's ``__init__`` importing its own submodules is not a cycle of design).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facesieve"

# Cycles outside the layers below that remain today (each a set of modules forming a strongly
# connected component). This list must shrink, not grow: a new cycle fails the test.
ALLOWED_CYCLES: list[frozenset[str]] = []  # none left: a new cycle fails the test

LAYERED = ("detectors", "backends", "nets", "ops", "weights", "export")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module name -> set of modules of the package it imports (anywhere in its source)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                for a in node.names:
                    full = f"{stem}.{a.name}"
                    targets.append(full if full in modules else stem)
            for t in targets:
                # `import a.b.c` names a.b.c; fall back to the longest prefix that is a module
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(frozenset(comp))
    return out


def test_graph_finds_a_planted_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "facesieve"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from facesieve.sub.c import x\n")
    (pkg / "sub" / "c.py").write_text("from ..sub.a import y\n")
    (pkg / "d.py").write_text("import facesieve.sub.a\n")
    graph = import_graph(pkg)
    assert graph["facesieve.sub.a"] == {"facesieve.sub.b"}
    assert graph["facesieve.sub.b"] == {"facesieve.sub.c"}
    assert graph["facesieve.sub.c"] == {"facesieve.sub.a"}
    assert strongly_connected(graph) == [frozenset({"facesieve.sub.a", "facesieve.sub.b", "facesieve.sub.c"})]


def test_no_import_cycle_in_the_model_layers() -> None:
    layered = tuple(f"facesieve.{p}" for p in LAYERED)
    graph = import_graph()
    sub = {m: {t for t in ts if t.startswith(layered)} for m, ts in graph.items() if m.startswith(layered)}
    assert strongly_connected(sub) == []


def test_no_import_cycle_beyond_the_allowed_list() -> None:
    cycles = strongly_connected(import_graph())
    new = [sorted(c) for c in cycles if c not in ALLOWED_CYCLES]
    assert new == [], f"import cycles: {new}"
    gone = [sorted(c) for c in ALLOWED_CYCLES if c not in cycles]
    assert gone == [], f"cycles in ALLOWED_CYCLES no longer exist, remove them: {gone}"
