"""No module of ``src/dowork`` over 400 lines, no function over 50 (issue 15).

A module counts its lines; a function (or method, or nested function) counts from its ``def``
line to its last line, decorators left out. ``KNOWN_LARGE`` lists today's offenders with their
size: each may only shrink. The test fails when an offender appears that is not listed, when a
listed one grows, and when a listed one is within the limit again (or gone) but still listed,
so the list stays honest: lower a listed size by hand when you shrink it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

MODULE_LINES = 400
FUNCTION_LINES = 50

#: The modules (``dowork.x``) and functions (``dowork.x:Class.method``) over the limit today,
#: with their size (none today: keep it that way).
KNOWN_LARGE: dict[str, int] = {}


def sizes(root: Path) -> dict[str, int]:
    """Every module under ``root`` by dotted name, and every function, with its size in lines.

    A function is named ``module:Outer.inner`` (classes and enclosing functions, dotted); of
    two functions with one name (overloads, a property's getter and setter), the longer counts.
    """
    found: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        text = path.read_text()
        found[module] = len(text.splitlines())
        for name, size in _functions(ast.parse(text, str(path)), ""):
            key = f"{module}:{name}"
            found[key] = max(size, found.get(key, 0))
    return found


def _functions(node: ast.AST, prefix: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for child in ast.iter_child_nodes(node):
        inner = prefix
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            inner = f"{prefix}{child.name}."
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            assert child.end_lineno is not None
            out.append((inner[:-1], child.end_lineno - child.lineno + 1))
        out.extend(_functions(child, inner))
    return out


def limit(name: str) -> int:
    """The most lines ``name`` (a module, or ``module:function``) may have."""
    return FUNCTION_LINES if ":" in name else MODULE_LINES


def over_limit(found: dict[str, int], known: dict[str, int]) -> list[str]:
    """What is too large and not allowed: a new offender, or a listed one that grew."""
    return [
        f"{name}: {size} lines (limit {limit(name)}"
        + (f", listed at {known[name]})" if name in known else ")")
        for name, size in sorted(found.items())
        if size > max(limit(name), known.get(name, 0))
    ]


def stale(found: dict[str, int], known: dict[str, int]) -> list[str]:
    """Listed items that are within the limit again, or gone: take them off the list."""
    return [
        f"{name}: {'gone' if name not in found else f'{found[name]} lines'}, still listed"
        for name in sorted(known)
        if found.get(name, 0) <= limit(name)
    ]


def test_no_module_or_function_is_larger_than_the_limit_or_its_listed_size() -> None:
    problems = over_limit(sizes(SRC / "dowork"), KNOWN_LARGE)
    assert not problems, "split these, or shrink them back to their listed size:\n" + "\n".join(
        problems
    )


def test_the_known_large_list_names_only_what_is_still_too_large() -> None:
    problems = stale(sizes(SRC / "dowork"), KNOWN_LARGE)
    assert not problems, "take these off KNOWN_LARGE:\n" + "\n".join(problems)


def test_the_checks_count_modules_and_functions(tmp_path: Path) -> None:
    """Sizes: a module's lines, a function's from def to end; the verdicts on a made-up tree."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body = "\n".join(f"        x = {i}" for i in range(3))
    (package / "a.py").write_text(
        f"class C:\n    @property\n    def f(self):\n{body}\n\n        def g():\n"
        "            pass\n\n        return g\n\n\nasync def h():\n    pass\n"
    )
    found = sizes(package)
    assert found == {"pkg": 0, "pkg.a": 15, "pkg.a:C.f": 9, "pkg.a:C.f.g": 2, "pkg.a:h": 2}
    small = {**found, "pkg.a:C.f": 60}  # a function over the limit of 50
    assert over_limit(small, {}) == ["pkg.a:C.f: 60 lines (limit 50)"]
    assert over_limit(small, {"pkg.a:C.f": 60}) == []
    assert over_limit(small, {"pkg.a:C.f": 59}) == ["pkg.a:C.f: 60 lines (limit 50, listed at 59)"]
    assert stale(small, {"pkg.a:C.f": 60}) == []
    assert stale(found, {"pkg.a:C.f": 60, "pkg.b": 500}) == [
        "pkg.a:C.f: 9 lines, still listed",
        "pkg.b: gone, still listed",
    ]
