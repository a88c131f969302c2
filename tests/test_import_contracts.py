"""The layer rules hold: `lint-imports` checks the import-linter contracts in pyproject.toml
(the core never imports an adapter or a web framework, profiles never import a store, no
import cycles between sibling modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
