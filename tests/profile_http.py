"""Real servers for the profile tests: uvicorn serving an App on a free 127.0.0.1 port, and a
webhook receiver (a threaded http.server) that records what it gets and answers as scripted."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import attrs

from httpkit import NO_LIFESPAN_H11, serve
from runengine.adapters.asgi import ASGIApp
from runengine.http.core import App


@contextlib.asynccontextmanager
async def serve_app(app: App) -> AsyncIterator[str]:
    """Serve `app` over real HTTP (uvicorn, h11) on a free loopback port; yield the base URL."""
    async with serve(ASGIApp(app), **NO_LIFESPAN_H11) as base:
        yield base


@attrs.frozen
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class Reply:
    status: int = 200
    headers: dict[str, str] = attrs.field(factory=dict)
    delay: float = 0.0


class Receiver:
    """A real HTTP server on 127.0.0.1 recording every request; replies are scripted per path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    script = receiver.scripts.get(self.path) or []
                    reply = script.pop(0) if script else Reply()
                    receiver.received.append(
                        Received(
                            method="POST",
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.monotonic(),
                        )
                    )
                    receiver._lock.notify_all()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self.scripts[path] = list(replies)

    def for_path(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        def check() -> bool:
            return len([r for r in self.received if r.path == path]) >= count

        def block() -> None:
            with self._lock:
                if not self._lock.wait_for(check, timeout=timeout):
                    raise TimeoutError(f"{path}: fewer than {count} requests after {timeout} s")

        await anyio.to_thread.run_sync(block)
        return self.for_path(path)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r._thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


