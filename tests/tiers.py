"""The test tiers (a pytest plugin, registered in conftest.py): markers that say the truth.

The markers are declared once, in pyproject.toml; `make test-fast` leaves out the tests marked
`slow`, `postgres`, `browser` or `server`. This plugin keeps those marks honest:
- a test using the PostgreSQL fixtures (tests/pg.py), directly or through another fixture, is
  marked `postgres` here, so no module has to remember it;
- a test that binds a socket (a server, or a port for one) or starts a process, in its fixtures'
  setup or in its body, fails unless it is marked `server`, `postgres`, `browser` or `slow`: the
  fast tier cannot hold a server by mistake. It is seen through Python's audit events (`sys.addaudithook`).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

#: The fixtures of tests/pg.py; a test that uses one needs the PostgreSQL server.
POSTGRES_FIXTURES = frozenset({"pg_server", "pg_dsn", "pg_schema_url"})

#: The markers that allow a test to listen on a socket or start a process: every tier that
#: `make test-fast` leaves out (a slow test may start what it likes).
MAY_START_SERVERS = ("server", "postgres", "browser", "slow")

#: The audit events of a server or a process being started.
STARTS = frozenset({"socket.bind", "subprocess.Popen", "os.fork", "os.posix_spawn"})

# The tests running now, innermost last (a test may run a pytest session of its own: pytester).
_running: list[pytest.Item] = []
# What each running test started without being marked for it, by node id.
_started: dict[str, list[str]] = {}
_hook_added = False


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in STARTS or not _running:
        return
    item = _running[-1]
    if item.nodeid in _started:
        what = f"socket.bind{args[1:]!r}" if event == "socket.bind" else f"{event}{args[:2]!r}"
        _started[item.nodeid].append(what)


def pytest_configure(config: pytest.Config) -> None:
    global _hook_added
    if not _hook_added:  # an audit hook stays for the life of the process: add it once
        sys.addaudithook(_on_audit)
        _hook_added = True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    watched = not any(item.get_closest_marker(name) for name in MAY_START_SERVERS)
    if watched:
        _started[item.nodeid] = []
    _running.append(item)
    try:
        yield
    finally:
        _running.pop()
        _started.pop(item.nodeid, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    if call.when != "call":
        return
    # Watched: the test's setup (its fixtures, of every scope) and its body. Not its teardown,
    # where a wider fixture's end (the session's PostgreSQL server stopping) may fall.
    started = _started.pop(item.nodeid, None)
    report = outcome.get_result()
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            "this test (or a fixture of it) binds a socket or starts a process, but is not marked "
            f"{' / '.join(MAY_START_SERVERS)}; mark it (e.g. pytestmark = pytest.mark.server) so "
            "that `make test-fast` leaves it out. Seen: " + "; ".join(dict.fromkeys(started))
        )
