"""Shared pieces of the fault and load suites: real servers on loopback, a raw SSE reader,
and process figures read from /proc.

Everything here is real: uvicorn serving the engine's ASGI app on a free 127.0.0.1 port,
or `runengine serve` as a child process; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs
import httpx

from httpkit import NO_LIFESPAN_H11, serve
from kit import free_port
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.server import build_app
from runengine.engine import RunEngine

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def serve_engine(engine: RunEngine) -> AsyncIterator[str]:
    """Serve a started engine over real HTTP (uvicorn, h11) on a free loopback port; yield the base URL."""
    async with serve(ASGIApp(build_app(engine)), **NO_LIFESPAN_H11) as base:
        yield base


# -- reading SSE byte by byte ------------------------------------------------------------


@attrs.frozen
class Frame:
    id: str | None
    event: str | None
    data: str


class FrameReader:
    """Parses SSE frames from raw bytes as they arrive; a frame counts only once its blank line came."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames = []
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            id_ = event = None
            data: list[str] = []
            for line in raw.decode().split("\n"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "id":
                    id_ = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
            if data:  # comments (keep-alives) and retry hints carry no data
                frames.append(Frame(id_, event, "\n".join(data)))
        return frames


# -- `runengine serve` as a child process -------------------------------------------------


@attrs.define
class ServeProcess:
    """`runengine serve` in its own process group, on a free loopback port."""

    args: list[str]
    log: Path
    #: extra environment variables (e.g. the store URL for an --app engine)
    env: dict[str, str] = attrs.field(factory=dict)
    #: the working directory: `--app module:NAME` imports from here
    cwd: Path = ROOT
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        command = [str(Path(sys.executable).parent / "runengine"), "serve", *self.args, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runengine serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/openapi.json", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"runengine serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the server's process group and wait for it to end."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def serve_process(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[ServeProcess]:
    server = ServeProcess(args, log, env=dict(env or {}), cwd=cwd)
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


# -- process figures --------------------------------------------------------------------------


def sigkill_when(script: Path, *args: str, killed_after: Callable[[str], bool]) -> None:
    """Run `python script *args`, hand each line it prints to `killed_after`, and SIGKILL the
    process as soon as that returns True (a watchdog kills it after 120 s: never hang the suite)."""
    child = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    watchdog = threading.Timer(120.0, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if killed_after(line):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=60)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, "the child stopped before it was killed"


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_sockets(pid: int | str = "self") -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def tcp_connections(port: int) -> int:
    """TCP connections to or from `port` on loopback that still hold a socket open at either end
    (every state but LISTEN and TIME_WAIT; both ends count), from /proc/net/tcp."""
    hex_port = f"{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state not in ("0A", "06") and (local.endswith(":" + hex_port) or remote.endswith(":" + hex_port)):
            count += 1
    return count
