"""The Durable Streams profile (github.com/durable-streams/durable-streams, PROTOCOL.md), mounted
by `build_app` at /ds: streams at /ds/v1/stream/{name}, and every run as a read-only JSON stream
at /ds/v1/stream/runs/{run_id}. docs/durable-streams.md says what is served and how.

    PUT    create (Content-Type, Stream-TTL / Stream-Expires-At, Stream-Closed, a fork with
           Stream-Forked-From / Stream-Fork-Offset / Stream-Fork-Sub-Offset), 201 / 200 / 409
    POST   append (Stream-Seq, Stream-Closed, Producer-Id / -Epoch / -Seq)
    GET    read from ?offset= (-1, now, an offset), catch-up, live=long-poll or live=sse
    HEAD   the stream's metadata; DELETE (a stream with forks is kept for them: 410)

The streams live in the engine's store (DurableStreamStore: the memory, SQLite and PostgreSQL
stores), a write a compare-and-set of the stream's row with its data; readers wait on the store's
wake-ups (PostgreSQL: NOTIFY, so a reader on one process sees another's appends). The rules
without I/O are in durable_streams_rules.py.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import anyio
import attrs

from runengine.adapters.profiles.durable_streams_rules import (
    DEFAULT_CONTENT_TYPE,
    AppendRequest,
    ProtocolError,
    bad,
    body_of,
    chunk_part,
    decide_append,
    expired,
    flag,
    format_expires,
    format_offset,
    is_json,
    is_text,
    media_type,
    new_chunk,
    parse_expires,
    parse_offset,
    producer_of,
    whole_number,
)
from runengine.adapters.profiles.durable_streams_store import Chunk, DurableStreamStore, StreamMeta, StreamWrite
from runengine.engine import RunEngine
from runengine.errors import RunEngineError
from runengine.http.auth import AuthHook, authenticate, owner_of
from runengine.http.core import HttpError, Request, Response, StreamResponse, engine_error_response, error_response
from runengine.http.openstreams import OpenStreams
from runengine.http.streaming import server_stop
from runengine.ownership import session_key
from runengine.ports import port_of
from runengine.wire import event_to_json

#: Where build_app mounts the profile (`runengine serve --durable-streams-prefix`).
DEFAULT_PREFIX = "/ds"
#: The streams' root under the prefix, as the protocol's clients and conformance suite address them.
STREAM_ROOT = "/v1/stream/"
#: Stream names under this are the runs' streams, read-only.
RUNS = "runs/"
#: How long a long-poll waits for data before its 204 (`--durable-streams-long-poll`).
LONG_POLL_SECONDS = 20.0
#: An SSE response ends after this long (the protocol: ~60 s, so CDNs can collapse); clients resume.
SSE_SECONDS = 60.0
#: Seconds between keep-alive comments on an idle SSE response.
SSE_KEEPALIVE = 15.0
#: What one read returns at most (more is read by the next request, or the next SSE event).
READ_BYTES = 256 * 1024
READ_CHUNKS = 1000
#: Longest stream name.
MAX_NAME = 1024
#: A write that keeps losing its compare-and-set to other writers gives up (503) after this many tries.
MAX_TRIES = 200
#: Stream-Cursor: 20-second intervals since 2024-10-09T00:00Z (the protocol's defaults).
CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=timezone.utc).timestamp()
CURSOR_INTERVAL = 20
#: On every answer (the protocol's browser security headers).
SECURITY_HEADERS = (("x-content-type-options", "nosniff"), ("cross-origin-resource-policy", "cross-origin"))
#: Catch-up chunks may be cached (private: a principal's streams); a tail or offset=now answer not.
CACHE_CHUNK = "private, max-age=60, stale-while-revalidate=300"
NO_STORE = "no-store"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def now_us() -> int:
    return time.time_ns() // 1000


def next_cursor(client: str | None) -> str:
    """The Stream-Cursor of a live answer: the current interval, or past the client's when it
    already has that one (random jitter, so cached answers never loop)."""
    current = int((time.time() - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if client is not None and client.isdigit() and int(client) >= current:
        current = int(client) + random.randint(1, 3600 // CURSOR_INTERVAL)
    return str(current)


@attrs.frozen
class View:
    """A stream as one read saw it: its tail, whether it is closed, and what a wait compares."""

    tail: int
    closed: bool
    token: Any


class Source:
    """What the read modes read: a stored stream or a run's."""

    content_type: str
    etag_id: str
    json_mode: bool
    start: int = 0

    async def view(self) -> View:
        raise NotImplementedError

    async def parts(self, view: View, position: int) -> list[Chunk]:
        raise NotImplementedError

    async def wait(self, view: View, timeout: float) -> None:
        raise NotImplementedError


class StoredSource(Source):
    def __init__(self, profile: DurableStreamsProfile, meta: StreamMeta) -> None:
        self.profile, self.meta = profile, meta
        self.content_type, self.etag_id = meta.content_type, meta.stream_id
        self.json_mode = is_json(meta.content_type)
        self._read = False  # the first view is the row the request just read

    async def view(self) -> View:
        if self._read:
            self.meta = await self.profile.visible(self.meta.path, same_as=self.meta)
        self._read = True
        return View(self.meta.tail, self.meta.closed, self.meta)

    async def parts(self, view: View, position: int) -> list[Chunk]:
        return await self.profile.parts(view.token, position, view.tail, READ_CHUNKS)

    async def wait(self, view: View, timeout: float) -> None:
        await self.profile.store_port().stream_wait(view.token, timeout=timeout)


class RunSource(Source):
    """A run's log as a JSON stream: one message per event (its wire form), position = seq."""

    content_type = "application/json"
    json_mode = True

    def __init__(self, engine: RunEngine, run_id: str) -> None:
        self.engine, self.run_id = engine, run_id
        self.etag_id = "run:" + run_id

    async def view(self) -> View:
        summary = await self.engine.store.get_run(self.run_id)
        if summary is None:
            raise ProtocolError(404, "not_found", f"run {self.run_id} not found")
        return View(summary.last_seq, summary.status.terminal, summary.last_seq)

    async def parts(self, view: View, position: int) -> list[Chunk]:
        events = await self.engine.store.read(self.run_id, after_seq=position, limit=min(READ_CHUNKS, view.tail - position))
        return [Chunk(e.seq - 1, e.seq, event_to_json(e).encode()) for e in events if e.seq <= view.tail]

    async def wait(self, view: View, timeout: float) -> None:
        await self.engine.store.wait(self.run_id, after_seq=view.tail, timeout=timeout)


@attrs.define
class DurableStreamsProfile:
    """The profile's App (mounted under a prefix: it sees paths from /v1/stream/ on)."""

    engine: RunEngine
    auth: AuthHook | None = None
    streams: OpenStreams = attrs.field(factory=OpenStreams)
    long_poll: float = LONG_POLL_SECONDS
    sse_seconds: float = SSE_SECONDS

    def routes(self) -> list[tuple[str, str]]:
        return [(method, STREAM_ROOT + "{name}") for method in ("PUT", "POST", "GET", "HEAD", "DELETE")]

    def store_port(self) -> DurableStreamStore:
        store = port_of(self.engine.store, DurableStreamStore)
        if store is None:
            raise ProtocolError(501, "not_implemented", f"this store ({type(self.engine.store).__name__}) keeps no streams; runs' streams are served")
        return store

    async def __call__(self, request: Request) -> Response | StreamResponse:
        try:
            request = await authenticate(self.auth, request)
            response = await self._handle(request)
        except ProtocolError as exc:
            response = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        except HttpError as exc:
            response = exc.response()
        except RunEngineError as exc:
            response = engine_error_response(exc)
        headers = (*response.headers, *SECURITY_HEADERS)
        if request.method.upper() == "HEAD" and isinstance(response, Response):
            return Response(status=response.status, headers=headers, body=b"")
        return attrs.evolve(response, headers=headers)

    async def _handle(self, request: Request) -> Response | StreamResponse:
        if not request.path.startswith(STREAM_ROOT) or len(request.path) == len(STREAM_ROOT):
            raise ProtocolError(404, "not_found", f"no stream at {request.path}; streams are at {STREAM_ROOT}{{name}}")
        name = request.path[len(STREAM_ROOT) :]
        if len(name) > MAX_NAME or _CONTROL_CHARS.search(name):
            raise bad(f"a stream name is 1 to {MAX_NAME} characters, without control characters")
        if name.split("/", 1)[0] == "__ds":
            raise ProtocolError(404, "not_found", "subscriptions (the reserved __ds paths) are not served")
        method = request.method.upper()
        if name.startswith(RUNS):
            if method not in ("GET", "HEAD"):
                raise ProtocolError(
                    405, "method_not_allowed", "a run's stream is read-only: the engine writes it", (("allow", "GET, HEAD"),)
                )
            run_id = name[len(RUNS) :]
            await self.engine.run_summary(run_id, owner=self._owner(request))  # 404 for another principal's
            source: Source = RunSource(self.engine, run_id)
            return await (self._read(request, source) if method == "GET" else self._head(source, None))
        key = session_key(self._owner(request), name)
        if method == "PUT":
            return await self._create(request, key)
        if method == "POST":
            return await self._append(request, key)
        if method == "DELETE":
            return await self._delete(key)
        if method in ("GET", "HEAD"):
            meta = await self.visible(key)
            if method == "HEAD":
                return await self._head(StoredSource(self, meta), meta)
            if meta.ttl is not None:  # a read starts the sliding TTL again (HEAD does not)
                await self.store_port().stream_touch(key, now_us())
            return await self._read(request, StoredSource(self, meta))
        raise ProtocolError(
            405, "method_not_allowed", f"{method} is not allowed on a stream", (("allow", "GET, HEAD, POST, PUT, DELETE"),)
        )

    def _owner(self, request: Request) -> str | None:
        return owner_of(request.principal) if self.auth is not None else None

    # -- the stream's row: visible, expired, removed ------------------------------------------------

    async def visible(self, key: str, *, same_as: StreamMeta | None = None) -> StreamMeta:
        """The stream at `key`: 404 when there is none (an expired one without forks is removed
        here), 410 when it was deleted (or expired) but forks keep it. `same_as`: 404 too when
        the stream there is another one (deleted and made again)."""
        store = self.store_port()
        for _ in range(MAX_TRIES):
            meta = await store.stream_meta(key)
            if meta is None or (same_as is not None and meta.stream_id != same_as.stream_id):
                raise ProtocolError(404, "not_found", "no such stream")
            if meta.deleted:
                raise ProtocolError(410, "gone", "the stream was deleted (forks of it still read its data)")
            if not expired(meta, now_us()):
                return meta
            if await self._commit_removal(meta):
                raise ProtocolError(404 if meta.forks == 0 else 410, "not_found" if meta.forks == 0 else "gone", "the stream expired")
        raise _busy()

    async def _commit_removal(self, meta: StreamMeta) -> bool:
        write = await self._removal(meta)
        return await self.store_port().stream_write(write)

    async def _removal(self, meta: StreamMeta) -> StreamWrite:
        """Deleting `meta`: kept as deleted while forks read it; otherwise gone with its data, and its
        source's fork count down (the source too when that was its last fork and it is deleted or
        expired, and so on up the chain)."""
        if meta.forks > 0:
            return StreamWrite(rows=((meta, attrs.evolve(meta, deleted=True, version=meta.version + 1)),))
        rows: list[tuple[StreamMeta | None, StreamMeta | None]] = [(meta, None)]
        drop = [meta.stream_id]
        source_key = meta.fork_of
        while source_key is not None:
            source = await self.store_port().stream_meta(source_key)
            if source is None:
                break
            if source.forks <= 1 and (source.deleted or expired(source, now_us())):
                rows.append((source, None))
                drop.append(source.stream_id)
                source_key = source.fork_of
                continue
            rows.append((source, attrs.evolve(source, forks=max(source.forks - 1, 0), version=source.version + 1)))
            break
        return StreamWrite(rows=tuple(rows), drop=tuple(drop))

    # -- reading across forks ------------------------------------------------------------------------

    async def parts(self, meta: StreamMeta, start: int, end: int, limit: int) -> list[Chunk]:
        """The stream's data at positions [start, end), at most `limit` chunks, a fork's inherited
        part read from its source (up to the fork position)."""
        found: list[Chunk] = []
        json_mode = is_json(meta.content_type)
        if meta.fork_of is not None and start < meta.fork_pos:
            source = await self.store_port().stream_meta(meta.fork_of)
            inherited_end = min(end, meta.fork_pos)
            if source is not None:
                found = [chunk_part(c, start, inherited_end, json_mode) for c in await self.parts(source, start, inherited_end, limit)]
            if not found or found[-1].end < inherited_end or len(found) >= limit:
                return found
            start = inherited_end
        if start < end:
            chunks = await self.store_port().stream_chunks(meta.stream_id, start=start, end=end, limit=limit - len(found))
            found += [chunk_part(c, start, end, json_mode) for c in chunks]
        return found

    # -- PUT ----------------------------------------------------------------------------------------

    async def _create(self, request: Request, key: str) -> Response:
        headers = request.headers
        ttl_text, expires_text = headers.get("stream-ttl"), headers.get("stream-expires-at")
        if ttl_text is not None and expires_text is not None:
            raise bad("give Stream-TTL or Stream-Expires-At, not both")
        ttl = whole_number(ttl_text.strip(), "Stream-TTL") if ttl_text is not None else None
        expires_us = parse_expires(expires_text) if expires_text is not None else None
        closed = flag(headers.get("stream-closed"))
        forked_from = headers.get("stream-forked-from")
        fork_offset_text = headers.get("stream-fork-offset")
        sub_text = headers.get("stream-fork-sub-offset")
        if forked_from is None and (fork_offset_text is not None or sub_text is not None):
            raise bad("Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From")
        sub_offset = whole_number(sub_text.strip(), "Stream-Fork-Sub-Offset") if sub_text is not None else 0
        if sub_offset and fork_offset_text is None:
            raise bad("a Stream-Fork-Sub-Offset past 0 needs a Stream-Fork-Offset")
        fork_offset = parse_offset(fork_offset_text.strip(), "Stream-Fork-Offset") if fork_offset_text is not None else None
        asked_type = headers.get("content-type")
        asked_type = asked_type.strip() if asked_type and asked_type.strip() else None
        store = self.store_port()
        for _ in range(MAX_TRIES):
            source = await self._fork_source(request, forked_from) if forked_from is not None else None
            content_type = asked_type or (source.content_type if source is not None else DEFAULT_CONTENT_TYPE)
            if source is not None and media_type(content_type) != media_type(source.content_type):
                raise ProtocolError(409, "content_type_mismatch", f"the source stream's content type is {source.content_type}")
            fork_pos = await self._fork_position(source, fork_offset, sub_offset) if source is not None else 0
            if source is not None and ttl is None and expires_us is None:  # a fork without its own expiry inherits the source's
                ttl, expires_us = source.ttl, source.expires_us
            existing = await store.stream_meta(key)
            if existing is not None:
                if existing.deleted:
                    raise ProtocolError(409, "conflict", "a deleted stream still read by forks holds this path")
                if expired(existing, now_us()):
                    await self._commit_removal(existing)
                    continue
                same = (
                    media_type(existing.content_type) == media_type(content_type)
                    and existing.ttl == ttl
                    and existing.expires_us == expires_us
                    and existing.closed == closed
                    and existing.fork_of == (source.path if source is not None else None)
                    and (source is None or existing.fork_pos == fork_pos)
                )
                if not same:
                    raise ProtocolError(409, "conflict", "a stream with another configuration exists at this path")
                return self._created(request, existing, 200)
            at = now_us()
            meta = StreamMeta(
                path=key,
                stream_id=uuid.uuid4().hex,
                content_type=content_type,
                owner=self._owner(request),
                created_us=at,
                touched_us=at,
                ttl=ttl,
                expires_us=expires_us,
                tail=fork_pos,
                closed=closed,
                fork_of=source.path if source is not None else None,
                fork_pos=fork_pos,
            )
            chunk = new_chunk(content_type, fork_pos, request.body, allow_empty=True)
            if chunk is not None:
                meta = attrs.evolve(meta, tail=chunk.end)
            rows: list[tuple[StreamMeta | None, StreamMeta | None]] = [(None, meta)]
            if source is not None:
                rows.append((source, attrs.evolve(source, forks=source.forks + 1, version=source.version + 1)))
            chunks = ((meta.stream_id, chunk),) if chunk is not None else ()
            if await store.stream_write(StreamWrite(rows=tuple(rows), chunks=chunks)):
                return self._created(request, meta, 201)
        raise _busy()

    async def _fork_source(self, request: Request, forked_from: str) -> StreamMeta:
        """The stream Stream-Forked-From names (its path, with or without the mount prefix)."""
        path = forked_from.strip()
        prefix = request.root_path[: len(request.root_path) - len(request.path)] if request.root_path.endswith(request.path) else ""
        if prefix and path.startswith(prefix + STREAM_ROOT):
            path = path[len(prefix) :]
        if not path.startswith(STREAM_ROOT) or len(path) == len(STREAM_ROOT):
            raise bad(f"Stream-Forked-From must be a stream's path ({prefix}{STREAM_ROOT}{{name}})")
        name = path[len(STREAM_ROOT) :]
        if name.startswith(RUNS):
            raise bad("a run's stream cannot be forked")
        try:
            return await self.visible(session_key(self._owner(request), name))
        except ProtocolError as exc:
            if exc.status == 410:
                raise ProtocolError(409, "conflict", "the source stream was deleted") from None
            raise

    async def _fork_position(self, source: StreamMeta, fork_offset: int | None, sub_offset: int) -> int:
        anchor = source.tail if fork_offset is None else fork_offset
        if anchor > source.tail:
            raise bad("Stream-Fork-Offset is past the source stream's tail")
        if sub_offset:  # within the data written at the anchor, not past it
            following = await self.parts(source, anchor, source.tail, 1)
            boundary = following[0].end if following else anchor
            if anchor + sub_offset > boundary:
                raise bad("Stream-Fork-Sub-Offset is past the data written at Stream-Fork-Offset")
        return anchor + sub_offset

    def _created(self, request: Request, meta: StreamMeta, status: int) -> Response:
        headers = [("content-type", meta.content_type), ("stream-next-offset", format_offset(meta.tail))]
        if meta.closed:
            headers.append(("stream-closed", "true"))
        if status == 201:
            host = request.header("host") or "localhost"
            scheme = (request.header("x-forwarded-proto") or "http").split(",")[0].strip()
            headers.append(("location", f"{scheme}://{host}{request.root_path or request.path}"))
        return Response(status=status, headers=tuple(headers))

    # -- POST -----------------------------------------------------------------------------------------

    async def _append(self, request: Request, key: str) -> Response:
        append = AppendRequest(
            body=request.body,
            content_type=request.header("content-type"),
            stream_seq=request.header("stream-seq"),
            producer=producer_of(request.headers),
            close=flag(request.header("stream-closed")),
        )
        store = self.store_port()
        for _ in range(MAX_TRIES):
            meta = await self.visible(key)
            decision = decide_append(meta, append, now_us())
            if decision.meta is None:
                if meta.ttl is not None:  # a duplicate or a repeated close is a write too: the TTL starts again
                    await store.stream_touch(key, now_us())
                return Response(status=decision.status, headers=decision.headers)
            chunks = ((meta.stream_id, decision.chunk),) if decision.chunk is not None else ()
            if await store.stream_write(StreamWrite(rows=((meta, decision.meta),), chunks=chunks)):
                return Response(status=decision.status, headers=decision.headers)
        raise _busy()

    # -- DELETE ---------------------------------------------------------------------------------------

    async def _delete(self, key: str) -> Response:
        for _ in range(MAX_TRIES):
            meta = await self.visible(key)
            if await self._commit_removal(meta):
                return Response(status=204)
        raise _busy()

    # -- HEAD and GET -----------------------------------------------------------------------------------

    async def _head(self, source: Source, meta: StreamMeta | None) -> Response:
        view = await source.view()
        headers = [
            ("content-type", source.content_type),
            ("stream-next-offset", format_offset(view.tail)),
            ("cache-control", NO_STORE),
        ]
        if meta is not None and meta.ttl is not None:
            headers.append(("stream-ttl", str(meta.ttl)))
        if meta is not None and meta.expires_us is not None:
            headers.append(("stream-expires-at", format_expires(meta.expires_us)))
        if view.closed:
            headers.append(("stream-closed", "true"))
        return Response(status=200, headers=tuple(headers))

    async def _read(self, request: Request, source: Source) -> Response | StreamResponse:
        pairs = parse_qsl(request.query_string, keep_blank_values=True)
        offsets = [value for name, value in pairs if name == "offset"]
        if len(offsets) > 1:
            raise bad("give one offset")
        offset = offsets[0] if offsets else None
        if offset == "":
            raise bad("offset must not be empty (-1 reads from the start)")
        query = dict(pairs)
        live = query.get("live")
        if live not in (None, "long-poll", "sse"):
            raise bad("live must be long-poll or sse")
        if live is not None and offset is None:
            raise bad(f"live={live} needs an offset (-1: from the start; now: from the tail)")
        view = await source.view()
        if offset is None or offset == "-1":
            position = source.start
        elif offset == "now":
            position = view.tail
        else:
            position = parse_offset(offset)
            if position > view.tail:
                raise bad("the offset is past the stream's tail")
        cursor = query.get("cursor")
        if live == "sse":
            with self.streams.slot(request) as slot:
                return slot.bind(self._sse(source, view, position, cursor))
        if live == "long-poll":
            with self.streams.waiting(request):
                return await self._long_poll(source, view, position, cursor)
        if offset == "now":
            return self._tail_answer(source, view, 200, cache=NO_STORE)
        return await self._chunk_answer(source, view, position, if_none_match=request.header("if-none-match"))

    def _tail_answer(self, source: Source, view: View, status: int, *, cache: str, cursor: str | None = None) -> Response:
        """At the tail: 200 (catch-up: an empty body, `[]` for JSON) or 204 (long-poll)."""
        headers = [
            ("stream-next-offset", format_offset(view.tail)),
            ("stream-up-to-date", "true"),
            ("cache-control", cache),
        ]
        if view.closed:
            headers.append(("stream-closed", "true"))
        elif cursor is not None:
            headers.append(("stream-cursor", cursor))
        if status == 204:
            return Response(status=204, headers=tuple(headers))
        return Response(status=200, headers=(("content-type", source.content_type), *headers), body=b"[]" if source.json_mode else b"")

    async def _chunk_answer(
        self, source: Source, view: View, position: int, *, if_none_match: str | None = None, live: bool = False, cursor: str | None = None
    ) -> Response:
        parts = _within_budget(await source.parts(view, position)) if position < view.tail else []
        end = parts[-1].end if parts else position
        at_tail = end >= view.tail
        closed = view.closed and at_tail
        etag = f'"{source.etag_id}:{position}:{end}{":c" if closed else ""}"'
        headers = [
            ("content-type", source.content_type),
            ("stream-next-offset", format_offset(end)),
            ("etag", etag),
            ("cache-control", CACHE_CHUNK if parts else NO_STORE),
        ]
        if at_tail:
            headers.append(("stream-up-to-date", "true"))
        if closed:
            headers.append(("stream-closed", "true"))
        elif live:
            headers.append(("stream-cursor", next_cursor(cursor)))
        if etag in _etags(if_none_match):
            return Response(status=304, headers=tuple(h for h in headers if h[0] != "content-type"))
        return Response(status=200, headers=tuple(headers), body=body_of(parts, source.json_mode))

    async def _long_poll(self, source: Source, view: View, position: int, cursor: str | None) -> Response:
        deadline = anyio.current_time() + self.long_poll
        while True:
            if position < view.tail:
                return await self._chunk_answer(source, view, position, live=True, cursor=cursor)
            if view.closed:  # at the tail of a closed stream: no wait
                return self._tail_answer(source, view, 204, cache=NO_STORE)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return self._tail_answer(source, view, 204, cache=NO_STORE, cursor=next_cursor(cursor))
            await source.wait(view, remaining)
            view = await source.view()

    def _sse(self, source: Source, view: View, position: int, cursor: str | None) -> StreamResponse:
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        if not is_text(source.content_type):
            headers.append(("stream-sse-data-encoding", "base64"))
        return StreamResponse(status=200, headers=tuple(headers), body=self._sse_events(source, view, position, cursor))

    async def _sse_events(self, source: Source, view: View, position: int, cursor: str | None) -> AsyncIterator[bytes]:
        """Data events, each followed by its control event, then live ones until the stream closes
        or the response's time is up (the client resumes from the last control's offset)."""
        text = is_text(source.content_type)
        ends = anyio.current_time() + self.sse_seconds
        announced = False
        while True:
            if position < view.tail:
                parts = _within_budget(await source.parts(view, position))
                if not parts:  # the data went (the stream was deleted meanwhile)
                    return
                position = parts[-1].end
                at_tail = position >= view.tail
                # One write: a reader never sees a data event without the control event after it.
                yield _data_event(body_of(parts, source.json_mode), text) + _control_event(
                    position, view.closed and at_tail, at_tail, cursor
                )
                announced = at_tail
                if view.closed and at_tail:
                    return
                continue
            if view.closed:
                yield _control_event(position, True, True, cursor)
                return
            if not announced:
                yield _control_event(position, False, True, cursor)
                announced = True
            remaining = ends - anyio.current_time()
            if remaining <= 0 or server_stop.get().stopping:
                return
            await source.wait(view, min(remaining, SSE_KEEPALIVE))
            try:
                fresh = await source.view()
            except ProtocolError:  # deleted or expired while read
                return
            if fresh == view:
                yield b": keep-alive\n\n"
            view = fresh


def _within_budget(parts: list[Chunk]) -> list[Chunk]:
    """The leading parts within READ_BYTES (at least one)."""
    total = 0
    for index, part in enumerate(parts):
        total += len(part.data)
        if total > READ_BYTES and index > 0:
            return parts[:index]
    return parts


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _data_event(data: bytes, text: bool) -> bytes:
    if text:
        lines = _LINE_END.split(data)
    else:
        encoded = base64.b64encode(data)
        lines = [encoded[i : i + 4096] for i in range(0, len(encoded), 4096)] or [b""]
    # "data:" then the line; a line that starts with a space keeps it (a client drops one space).
    body = b"".join(b"data:" + (b" " if line.startswith(b" ") else b"") + line + b"\n" for line in lines)
    return b"event: data\n" + body + b"\n"


def _control_event(position: int, closed: bool, up_to_date: bool, cursor: str | None) -> bytes:
    fields: dict[str, Any] = {"streamNextOffset": format_offset(position)}
    if closed:
        fields["streamClosed"] = True
    else:
        fields["streamCursor"] = next_cursor(cursor)
    if up_to_date:
        fields["upToDate"] = True
    return b"event: control\ndata:" + json.dumps(fields, separators=(",", ":")).encode() + b"\n\n"


def _busy() -> ProtocolError:
    return ProtocolError(503, "busy", "other writes to the stream kept winning; retry", (("retry-after", "1"),))


__all__ = ["DEFAULT_PREFIX", "DurableStreamsProfile", "LONG_POLL_SECONDS"]
