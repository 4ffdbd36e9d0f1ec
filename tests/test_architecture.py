"""The code's shape, checked by reading the source (AST, no imports): file sizes, where imports may point, which
imports may hide inside functions, and the layers contract (``lint-imports``)."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "flowbase",
    "results",
    "mini_world",
    "flowmodels",
    "scorers",
    "harness",
    "trainer",
    "service",
    "flow_opd",
)
MAX_LINES = 700
DEFERRED = "# deferred:"


def product_files() -> list[Path]:
    return sorted(f for p in PACKAGES for f in (ROOT / p).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def parsed(path: Path) -> tuple[ast.Module, tuple[str, ...]]:
    text = path.read_text(encoding="utf-8")
    return ast.parse(text, filename=str(path)), tuple(text.splitlines())


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement names (a relative import counts as first-party)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        return [f"<relative>.{node.module or ''}"]
    return [node.module or ""]


def first_party(module: str) -> bool:
    return module.startswith("<relative>") or module.split(".")[0] in PACKAGES


def imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function body."""
    out: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, in_function))
            else:
                inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                walk(child, in_function or inner)

    walk(tree, False)
    return out


def test_the_walk_sees_the_product() -> None:
    files = product_files()
    assert len(files) > 50
    assert {f.relative_to(ROOT).parts[0] for f in files} == set(PACKAGES)


def test_first_party_imports_inside_functions_say_why() -> None:
    """A first-party import inside a function only defers a heavy third-party library, and says which on its
    line (``# deferred: torch``); one that would hide an import cycle is a design problem, not a comment."""
    bare = []
    for path in product_files():
        tree, lines = parsed(path)
        for node, in_function in imports(tree):
            if not in_function or not any(first_party(m) for m in imported(node)):
                continue
            span = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
            if not any(DEFERRED in line for line in span):
                bare.append(f"{rel(path)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bare, (
        "move these imports to the module top, or mark a deferral of a heavy library with "
        f"'{DEFERRED} <library>':\n" + "\n".join(bare)
    )


def test_no_product_file_is_over_the_line_limit() -> None:
    long = {rel(f): n for f in product_files() if (n := len(parsed(f)[1])) > MAX_LINES}
    assert not long, f"split these files (limit {MAX_LINES} lines): {long}"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("harness", ("trainer",)), ("scorers", ("trainer", "harness"))],
)
def test_lower_packages_do_not_import_upper_ones(package: str, forbidden: tuple[str, ...]) -> None:
    """Top-level or inside a function: lint-imports sees both, this names the line."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree, _ = parsed(path)
        for node, _in_function in imports(tree):
            for module in imported(node):
                if module.split(".")[0] in forbidden:
                    found.append(f"{rel(path)}:{node.lineno}: imports {module}")
    assert not found, "\n".join(found)


def test_module_level_imports_have_no_cycle() -> None:
    """First-party imports form no cycle: function bodies count, imports that never run on import (the
    ``if __name__ == "__main__":`` script block, ``if TYPE_CHECKING:`` annotations) do not."""
    files = {module_name(f): f for f in product_files()}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        tree, _ = parsed(path)
        for node, _in_function in imports(tree):
            if _never_runs_on_import(tree, node):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level == 0 and node.module:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    targets.append(sub if sub in files else node.module)
            graph[name] |= {t for t in targets if t in files and t != name}
    cycles = _cycles(graph)
    assert not cycles, f"import cycles: {cycles}"


def _never_runs_on_import(tree: ast.Module, node: ast.AST) -> bool:
    guards = ("__name__ == '__main__'", "TYPE_CHECKING", "typing.TYPE_CHECKING")
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) in guards:
            end = stmt.end_lineno or stmt.lineno
            if stmt.lineno <= getattr(node, "lineno", 0) <= end:
                return True
    return False


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_lint_imports_keeps_the_layers_contract() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    found = str(exe) if exe.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.skip(
            "lint-imports is not installed (it comes with the dev extra: pip install -e '.[dev]')"
        )
    result = subprocess.run(
        [found, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
