"""The layering rule: the core (`runengine/`) never imports an adapter (`runengine.adapters`)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "runengine"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level and node.module and node.module.startswith("adapters"):
            names.add("runengine." + node.module)
    return names


def test_the_core_never_imports_an_adapter():
    offenders = {
        str(path.relative_to(CORE.parent)): sorted(m for m in imported_modules(path) if m.startswith("runengine.adapters"))
        for path in CORE.rglob("*.py")
        if "adapters" not in path.relative_to(CORE).parts
    }
    offenders = {path: mods for path, mods in offenders.items() if mods}
    assert offenders == {}, f"core modules importing adapters: {offenders}"


def test_the_core_imports_no_web_framework():
    frameworks = ("fastapi", "starlette", "aiohttp", "uvicorn", "litestar", "django", "hypercorn")
    for path in (CORE / "http").rglob("*.py"):
        assert not any(m.split(".")[0] in frameworks for m in imported_modules(path)), path


def test_the_core_imports_no_metrics_or_tracing_library():
    """Metrics and traces reach the core only through runengine.observe (no-op without an adapter)."""
    libraries = ("prometheus_client", "opentelemetry")
    for path in CORE.rglob("*.py"):
        if "adapters" in path.relative_to(CORE).parts:
            continue
        assert not any(m.split(".")[0] in libraries for m in imported_modules(path)), path
