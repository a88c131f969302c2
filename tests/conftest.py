"""Shared fixtures and settings. Test helpers live in tests/kit.py.

Async tests run on both anyio backends; a module whose tests need one (I/O adapters on
asyncio: uvicorn, the SQLite store, asyncpg) says so with `ANYIO_BACKENDS = ("asyncio",)`.
"""

from __future__ import annotations

import pytest

# The PostgreSQL server fixtures (tests/pg.py): a real server for the session; the tiers' markers
# kept true (tests/tiers.py); pytester, for the tests of those plugins.
pytest_plugins = ["pg", "tiers", "pytester"]


@pytest.hookimpl(tryfirst=True)  # before anyio's own anyio_backend fixture parametrizes the test
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" not in metafunc.fixturenames:
        return
    if any("anyio_backend" in str(mark.args[0]) for mark in metafunc.definition.iter_markers("parametrize")):
        return  # the test chooses its backend itself
    backends = getattr(metafunc.module, "ANYIO_BACKENDS", ("asyncio", "trio"))
    metafunc.parametrize("anyio_backend", backends, scope="module")
