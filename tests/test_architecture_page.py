"""docs/architecture.md is the module graph the code has now (docs/make_architecture.py renders it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

PAGE_SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "make_architecture.py"


def test_the_architecture_page_is_the_current_module_graph(tmp_path: Path) -> None:
    # A process of its own, away from the repository root: there ./runengine, without the
    # adapters/ folder that installs as runengine.adapters, would hide the installed package.
    done = subprocess.run([sys.executable, str(PAGE_SCRIPT), "--check"], cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, "docs/architecture.md is stale: run python docs/make_architecture.py"
