"""The import graph of ``src/dowork`` has layers and no cycles (issue 15).

Every import counts, lazy ones inside functions and ``TYPE_CHECKING`` ones too: a module may
import only modules of its own layer or of the layers below it, and no import cycle may
appear. Where a lower module needs a higher one (a task its engine, a schedule its engine, a
task function its queue, a dump line its queue), it names what it needs as a protocol.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: The layers, bottom first, as module-name prefixes (a package names all its modules).
# fmt: off
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core types",
        (
            "dowork.errors", "dowork._redact", "dowork.clock", "dowork.retry", "dowork.options",
            "dowork.ratelimit", "dowork._capacity", "dowork._loop_thread", "dowork.codec",
            "dowork.schedule",
        ),
    ),
    ("stores", ("dowork.backends",)),
    (
        "tasks",  # what a queue holds and runs; they reach the engine and queue as protocols
        (
            "dowork.task", "dowork.chain", "dowork.hooks", "dowork.group", "dowork._line",
            "dowork._threads", "dowork.scheduling", "dowork.function", "dowork.registry",
            "dowork.dump",
        ),
    ),
    ("engine", ("dowork.engine",)),  # runs attempts; holds in-memory tasks (LocalSource)
    ("sources", ("dowork.durable",)),  # the durable task source, on a store
    ("queue", ("dowork.queue", "dowork._global", "dowork.admin")),
    (
        "services",
        (
            "dowork.metrics", "dowork._metric_counts", "dowork._http", "dowork.tracing",
            "dowork.signals", "dowork._load", "dowork.demo",
        ),
    ),
    ("front ends", ("dowork.cli", "dowork.dashboard", "dowork.__main__")),
]
# fmt: on


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in (SRC / "dowork").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """The package modules each module imports, wherever the import statement is.

    An import of a module's own enclosing package is left out: Python has initialised it
    before the module runs (``from . import x`` names the submodule ``x``).
    """
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                named = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            else:
                continue
            for target in named:
                enclosing = name.startswith(target + ".")
                if target in mods and target != name and not enclosing:
                    graph[name].add(target)
    return graph


def layer_of(name: str) -> int:
    """The index in ``LAYERS`` of a module (the longest matching prefix wins)."""
    best, length = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and len(prefix) > length:
                best, length = index, len(prefix)
    if name == "dowork":
        return len(LAYERS) - 2  # the package's front door: the public names (services)
    return best


def cycles(graph: dict[str, set[str]], names: list[str]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in names:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in sorted(modules()) if layer_of(name) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    graph = imports(modules())
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name in sorted(graph)
        for target in sorted(graph[name])
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    mods = modules()
    assert [sorted(c) for c in cycles(imports(mods), sorted(mods))] == []


def test_the_checks_see_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    """The graph builder finds imports inside functions and TYPE_CHECKING blocks."""
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (package / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    mods = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    graph = imports(mods)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert cycles(graph, sorted(mods)) == [{"pkg.a", "pkg.b"}]
