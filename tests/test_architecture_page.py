"""docs/architecture.md is the module graph the code has now (docs/make_architecture.py renders it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PAGE_SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "make_architecture.py"


def test_the_architecture_page_is_the_current_module_graph() -> None:
    spec = importlib.util.spec_from_file_location("make_architecture", PAGE_SCRIPT)
    assert spec is not None and spec.loader is not None
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    assert page.PAGE.read_text() == page.render(), "docs/architecture.md is stale: run python docs/make_architecture.py"
