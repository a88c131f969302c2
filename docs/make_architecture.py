"""Render docs/architecture.md: the module graph of runengine, from the imports themselves.

    python docs/make_architecture.py            # rewrites docs/architecture.md
    python docs/make_architecture.py --check    # exit 1 if the page is stale (tests run this)

Each module's level is one more than the highest level it imports, so every arrow points to
a lower level: the graph read top-down is the import graph pointing only downward. The one-line
idea of each module is the first sentence of its docstring.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from functools import cache
from pathlib import Path

import grimp

PAGE = Path(__file__).resolve().parent / "architecture.md"

INTRO = """# Architecture

One module, one idea; one declaration per fact; imports point only downward. This page is
generated from the code (`python docs/make_architecture.py`; a test fails when it is stale), and
the layer rules are contracts that `lint-imports` checks in the test suite
(`[tool.importlinter]` in pyproject.toml): the core never imports `runengine.adapters`, a web
framework, a metrics or a tracing library; profiles never import a store; sibling modules form
no cycle.

- **The core** (`runengine.*` outside `runengine.adapters`): events and their declared moves
  (`events`), the table derived from them (`transitions`), the pure reducer (`reducer`), the
  ports a store implements (`ports`), the run driver and its durable context (`driver`,
  `context`, `replay`, `writer`), the engine API (`engine`), the framework-neutral HTTP toolkit
  (`runengine.http`), and the hypothesis strategies and the conformance suite every store
  passes (`runengine.testing`).
- **Adapters** (`runengine.adapters`): stores (memory, SQLite, PostgreSQL), the HTTP bindings
  (ASGI, aiohttp, uvicorn), the API profiles (`profiles`: native, ACP, Kore, Agent Platform,
  Threads/Runs), webhooks, metrics and traces, the console page and the CLI.

## Packaging: one distribution, the adapters mapped into it

The repository's top level is the design card's: `runengine/` holds the core, `adapters/` every
piece of I/O. Both ship in one distribution, `runengine`, whose wheel maps the `adapters/` folder
to the package `runengine.adapters` (`[tool.setuptools.package-dir]` in pyproject.toml). Why one
distribution and not a workspace of adapter packages: the embedded SQLite default, the CLI and the
ASGI app are what `pip install runengine` is for, so they would be dependencies of the core anyway;
one import name (`runengine.adapters.sqlite`) keeps every embedding and entry point unchanged; and
no bare top-level package named `adapters` (a PyPI library of that name exists) lands in anyone's
site-packages. Optional dependencies stay extras (`runengine[postgres]`, `[aiohttp]`, `[metrics]`...).
A third-party store is a package of its own registering a `runengine.stores` entry point.

In a checkout, `make install` lays the editable install as setuptools' strict link tree (the same
mapping as the wheel; the Makefile lays it again when a file is added). From the repository root,
`./runengine` shadows the installed package, so `runengine/__init__.py` extends the package's path
with every `runengine/` folder on `sys.path`, and the installed `runengine.adapters` is found.

Levels: a module imports only modules of lower levels (imports that run; an
`if TYPE_CHECKING:` import of a type is not a dependency).
"""


def idea(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def render() -> str:
    graph = grimp.build_graph("runengine", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if m.startswith("runengine.") and not _is_package_only(m))

    def imports(module: str) -> list[str]:
        return sorted(d for d in graph.find_modules_directly_imported_by(module) if d in modules and d != module)

    @cache
    def level(module: str) -> int:
        return 1 + max((level(d) for d in imports(module)), default=-1)

    lines = [INTRO]
    for depth in range(max(map(level, modules)) + 1):
        lines += [f"## Level {depth}", "", "| module | idea | imports |", "|---|---|---|"]
        for module in (m for m in modules if level(m) == depth):
            short = module.removeprefix("runengine.")
            deps = ", ".join(f"`{d.removeprefix('runengine.')}`" for d in imports(module))
            lines.append(f"| `{short}` | {idea(module).replace('|', '/')} | {deps} |")
        lines.append("")
    return "\n".join(lines)


def _is_package_only(module: str) -> bool:
    """A package whose __init__ only gathers (`runengine.adapters`, `runengine.testing`...)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None and module.count(".") >= 1 and not (
        spec.origin and Path(spec.origin).read_text().strip().count("\n") > 20
    )


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.read_text() == text else 1)
    PAGE.write_text(text)
