"""No dead code in the package (issue 21): every private function, method or module-level name
(`_name`) that runengine/ and adapters/ define is used somewhere in them. (Public names may be
the API of an embedding program; vulture, run by hand, looks at those.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _private_definitions(tree: ast.AST) -> dict[str, int]:
    defined: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.setdefault(node.name, node.lineno)
    for node in getattr(tree, "body", []):  # module-level assignments
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    defined.setdefault(target.id, node.lineno)
    return {name: line for name, line in defined.items() if name.startswith("_") and not name.startswith("__")}


def test_every_private_definition_is_used() -> None:
    sources = sorted((ROOT / "runengine").rglob("*.py")) + sorted((ROOT / "adapters").rglob("*.py"))
    used: set[str] = set()
    defined: dict[str, str] = {}
    for path in sources:
        tree = ast.parse(path.read_text())
        for name, line in _private_definitions(tree).items():
            defined[name] = f"{path.relative_to(ROOT)}:{line}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rsplit(".", 1)[-1])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)  # getattr(obj, "_name"), string-named hooks
    unused = sorted(where + " " + name for name, where in defined.items() if name not in used)
    assert unused == [], unused
