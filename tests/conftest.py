"""Shared fixtures. Core tests run on both anyio backends; I/O adapters pin asyncio where they need it."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

# The PostgreSQL server fixtures (tests/pg.py): a real server for the session.
pytest_plugins = ["pg"]
