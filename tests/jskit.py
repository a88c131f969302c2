"""What the tests driving real JavaScript clients share: Node and npm (a skip where they are
missing, a failure in CI) and tests/js installed from its lock file (`npm ci`) when a pinned
package is missing from its node_modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: The JavaScript clients and suites, pinned by package-lock.json.
JS = Path(__file__).resolve().parent / "js"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def node_and_npm(needed_for: str, *, major: int = 18) -> tuple[str, str]:
    """The node and npm executables, node at least version `major`; skips (fails in CI) otherwise."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = f"Node.js and npm are not installed: {needed_for} needs them"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        found = int(version.lstrip("v").split(".")[0] or 0) if version.lstrip("v")[:1].isdigit() else 0
        if found >= major:
            return node, npm
        missing = f"{needed_for} needs Node.js {major} or later; found {version or 'no version'}"
    if in_ci():
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing)


def npm_ci(folder: Path, npm: str) -> None:
    """`npm ci` in `folder` (its package.json and package-lock.json)."""
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def installed(package: str, npm: str) -> Path:
    """tests/js with `package` in its node_modules (`npm ci` from the lock file when missing)."""
    if not (JS / "node_modules" / package / "package.json").exists():
        npm_ci(JS, npm)
    return JS
