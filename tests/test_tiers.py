"""The test tiers' markers say the truth (tests/tiers.py), checked on small pytest sessions of
their own (pytester, run in this process)."""

from __future__ import annotations

import pytest

# `--assert=plain`: no assertion rewriting, so no `ast.parse` in this process, which CPython 3.11
# can fail ("AST constructor recursion depth mismatch") while another thread of the session parses.
PLUGINS = ("-p", "pg", "-p", "tiers", "-p", "no:cacheprovider", "-p", "no:randomly", "--assert=plain")


@pytest.fixture(autouse=True)
def _only_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    # The installed plugins (schemathesis, hypothesis, langsmith, xdist) stay out of the inner
    # sessions: schemathesis' session-finish hook imports modules while the outer session's
    # hypothesis state is live, and a full CI run saw it end the inner session without a summary.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_a_test_using_the_postgres_fixtures_is_marked_postgres(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def url(pg_schema_url):
            return pg_schema_url

        def test_direct(pg_dsn): pass
        def test_through_another_fixture(url): pass
        def test_plain(): pass
        """
    )
    result = pytester.runpytest(*PLUGINS, "--collect-only", "-q", "-m", "postgres")
    result.stdout.fnmatch_lines(["*::test_direct", "*::test_through_another_fixture", "2/3 tests collected (1 deselected)*"])


def test_a_test_that_starts_a_server_unmarked_fails_and_marked_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        import pytest

        def listen():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                sock.listen()

        @pytest.fixture
        def server():
            listen()

        def test_unmarked_body(): listen()
        def test_unmarked_fixture(server): pass

        @pytest.mark.server
        def test_marked(server): listen()

        def test_plain_client():
            socket.socket().close()
        """
    )
    result = pytester.runpytest(*PLUGINS, "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*binds a socket or starts a process, but is not marked server / postgres / browser*"])
    result.stdout.fnmatch_lines(["*test_unmarked_body*", "*test_unmarked_fixture*"])


def test_a_test_that_starts_a_process_unmarked_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import subprocess
        import sys
        import pytest

        def test_unmarked(): subprocess.run([sys.executable, "-c", "pass"], check=True)

        @pytest.mark.server
        def test_marked(): subprocess.run([sys.executable, "-c", "pass"], check=True)
        """
    )
    result = pytester.runpytest(*PLUGINS, "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Seen: subprocess.Popen*"])
