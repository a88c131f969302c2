"""A real PostgreSQL 15 server for the test session (a pytest plugin, registered in conftest.py).

The server runs from the machine's binaries (/usr/lib/postgresql/15/bin, or
$RUNENGINE_PG_BIN), in a temporary data directory, listening on 127.0.0.1 on a
free port with its unix socket in that directory. As root, initdb and the server
run as the `postgres` user (PostgreSQL refuses to run as root).

Fixtures:
- `pg_server`: the session's `PostgresServer` (stop / start / restart it in a test).
- `pg_dsn`: a DSN to a fresh database for the test module.
- `pg_schema_url`: a `postgresql://` store URL with a fresh schema per test (an empty store).

With CI=true the tests never skip: missing binaries fail loudly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit import free_port

PG_BIN = Path(os.environ.get("RUNENGINE_PG_BIN", "/usr/lib/postgresql/15/bin"))

# The test cluster has no TLS. asyncpg's default (`prefer`) opens every connection with an
# SSLRequest, and a restart that closes the socket during it, just as the connecting task is
# cancelled, leaves an exception on asyncpg's own future that nobody retrieves
# (asyncpg.connect_utils.TLSUpgradeProto; MagicStack/asyncpg#1312): anyio's test runner then
# fails the test that restarted the server. Served and worker processes inherit this too.
os.environ.setdefault("PGSSLMODE", "disable")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, started and stopped with pg_ctl."""

    def __init__(self, *, fsync: bool = False, max_connections: int = 300) -> None:
        if not (PG_BIN / "initdb").exists():
            raise FileNotFoundError(f"PostgreSQL binaries not found in {PG_BIN}")
        self.root = Path(tempfile.mkdtemp(prefix="runengine-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.fsync = fsync
        self.max_connections = max_connections
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}\n{result.stdout}\n{log[-3000:]}")
        return result

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
            f" -c max_connections={self.max_connections} -c fsync={'on' if self.fsync else 'off'}"
            f" -c synchronous_commit=on -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql over the unix socket (no driver needed)."""
        result = self._run(
            "psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", database,
            "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql,
        )
        return result.stdout.strip()

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        _missing(str(exc))
        raise
    try:
        for attempt in range(3):  # the free port may be taken between finding it and binding it
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                server.port = free_port()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    name = pg_server.create_database()
    yield pg_server.dsn_for(name)
    pg_server.ensure_running()  # a test may have stopped it
    pg_server.drop_database(name)


@pytest.fixture
def pg_schema_url(pg_dsn: str) -> str:
    """A store URL with a schema of its own: the store creates it, empty."""
    return f"{pg_dsn}?schema=s_{uuid.uuid4().hex[:12]}"
