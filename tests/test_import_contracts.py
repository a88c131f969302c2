"""The layer rules hold: `lint-imports` checks the import-linter contracts in pyproject.toml
(the core never imports an adapter or a web framework, profiles never import a store, no
import cycles between sibling modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.server
def test_the_import_contracts_are_kept(tmp_path: Path) -> None:
    # Run from another folder: lint-imports puts its working folder on the path, and from the
    # root ./runengine (without adapters/, which installs as runengine.adapters) would hide the
    # installed package whose modules it must walk.
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_two_modules_import_each_other_not_even_for_type_checking() -> None:
    # lint-imports leaves out `if TYPE_CHECKING:` imports (exclude_type_checking_imports); two
    # modules naming each other there are still a circle (issue 21: the PostgreSQL store and its
    # work queue were, and so were the engine and its worker, the events and the reducer).
    import ast

    modules = {
        "runengine." + ".".join(path.relative_to(ROOT / "runengine").with_suffix("").parts): path
        for path in (ROOT / "runengine").rglob("*.py")
    } | {
        "runengine.adapters." + ".".join(path.relative_to(ROOT / "adapters").with_suffix("").parts): path
        for path in (ROOT / "adapters").rglob("*.py")
    }
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        package = name.split(".")[: -1 if path.name != "__init__.py" else -1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(part for part in (base, node.module or "") if part)
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import observe`
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        imports[name] = {other for other in found if other in modules and other != name}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in imports.items() for b in targets if a in imports.get(b, ())})
    assert pairs == [], pairs
    assert _circles(imports) == []


def _circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of any length: the modules each reachable from every other (strongly
    connected components of more than one module, iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(imports[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_the_circle_finder_finds_a_long_circle() -> None:
    imports = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(imports) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
