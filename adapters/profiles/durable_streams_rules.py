"""The Durable Streams protocol's rules, without I/O: offsets, header values, content types, JSON
messages, expiry, the writers' state and the append decision (Stream-Seq, idempotent producers,
closing). The profile (durable_streams.py) reads the store, asks these, and writes what they say.

Positions count bytes, or messages in a JSON stream, from the stream's start; an offset is a
position as `0000000000000000_<16 digits>`, so offsets sort as positions do (a run's stream: the
seq of its last event read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from runengine.adapters.profiles.durable_streams_store import Chunk, StreamMeta
from runengine.http.core import parse_json

_OFFSET = re.compile(r"^0{16}_(\d{16})$")
#: A non-negative decimal integer without sign, leading zeros, point or exponent.
_WHOLE = re.compile(r"^(0|[1-9][0-9]*)$")
#: Producer-Epoch and Producer-Seq stay within what JavaScript numbers hold exactly.
MAX_SAFE_INTEGER = 2**53 - 1
#: The default content type of a stream created without one.
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class ProtocolError(Exception):
    """A refusal: its status, code, message and the protocol headers it carries."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def bad(message: str, code: str = "invalid_request") -> ProtocolError:
    return ProtocolError(400, code, message)


# -- offsets ---------------------------------------------------------------------------------


def format_offset(position: int) -> str:
    return f"{0:016d}_{position:016d}"


def parse_offset(text: str, what: str = "offset") -> int:
    """The position an offset names (not the sentinels -1 and now); 400 when it is malformed."""
    match = _OFFSET.match(text)
    if match is None:
        raise bad(f"{what} must be -1, now or an offset this server returned; got {text[:80]!r}")
    return int(match.group(1))


# -- header values ---------------------------------------------------------------------------


def whole_number(text: str, header: str, *, maximum: int | None = None) -> int:
    if not _WHOLE.match(text) or (maximum is not None and int(text) > maximum):
        limit = f" up to {maximum}" if maximum is not None else ""
        raise bad(f"{header} must be a non-negative integer{limit} (no sign, leading zeros or exponent); got {text[:40]!r}")
    return int(text)


def flag(value: str | None) -> bool:
    """A Stream-Closed header: only `true` (any case) counts; other values are as if absent."""
    return value is not None and value.strip().lower() == "true"


def parse_expires(text: str) -> int:
    """Stream-Expires-At (RFC 3339) as µs since the epoch."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad(f"Stream-Expires-At must be an RFC 3339 time; got {text[:60]!r}") from None
    if value.tzinfo is None:
        raise bad("Stream-Expires-At must name its time zone (Z or +hh:mm)")
    return int(value.timestamp() * 1_000_000)


def format_expires(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class Producer:
    """An idempotent producer's headers."""

    id: str
    epoch: int
    seq: int


def producer_of(headers: Mapping[str, str]) -> Producer | None:
    """Producer-Id, -Epoch and -Seq: all three or none (400), well formed (400)."""
    given = [headers.get(name) for name in ("producer-id", "producer-epoch", "producer-seq")]
    if all(value is None for value in given):
        return None
    if any(value is None for value in given):
        raise bad("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    producer_id, epoch, seq = (value.strip() for value in given)  # type: ignore[union-attr]
    if not producer_id:
        raise bad("Producer-Id must not be empty")
    return Producer(
        producer_id,
        whole_number(epoch, "Producer-Epoch", maximum=MAX_SAFE_INTEGER),
        whole_number(seq, "Producer-Seq", maximum=MAX_SAFE_INTEGER),
    )


# -- content types and JSON messages -------------------------------------------------------------


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    """Whether SSE carries the stream's data as text (else base64)."""
    return is_json(content_type) or media_type(content_type).startswith("text/")


def json_messages(body: bytes, *, allow_empty: bool) -> list[str]:
    """A JSON body's messages (an array is flattened one level), each as compact JSON text."""
    try:
        value = parse_json(body)
        texts = [json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in (value if isinstance(value, list) else [value])]
        for text in texts:
            text.encode()  # a lone surrogate cannot be stored as UTF-8
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise bad(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not texts and not allow_empty:
        raise bad("an empty JSON array appends nothing: send at least one message")
    return texts


def new_chunk(content_type: str, start: int, body: bytes, *, allow_empty: bool) -> Chunk | None:
    """The chunk a body appends at `start` (None: nothing to append)."""
    if not body:
        return None
    if is_json(content_type):
        messages = json_messages(body, allow_empty=allow_empty)
        return Chunk(start, start + len(messages), ",".join(messages).encode()) if messages else None
    return Chunk(start, start + len(body), body)


def chunk_part(chunk: Chunk, start: int, end: int, json_mode: bool) -> Chunk:
    """The part of `chunk` at positions [start, end) (clipped to the chunk)."""
    start, end = max(start, chunk.start), min(end, chunk.end)
    if start == chunk.start and end == chunk.end:
        return chunk
    if json_mode:
        messages = [json.dumps(m, ensure_ascii=False, separators=(",", ":")) for m in json.loads(b"[" + chunk.data + b"]")]
        return Chunk(start, end, ",".join(messages[start - chunk.start : end - chunk.start]).encode())
    return Chunk(start, end, chunk.data[start - chunk.start : end - chunk.start])


def body_of(parts: list[Chunk], json_mode: bool) -> bytes:
    if json_mode:
        return b"[" + b",".join(part.data for part in parts if part.data) + b"]"
    return b"".join(part.data for part in parts)


# -- expiry ------------------------------------------------------------------------------------


def expired(meta: StreamMeta, now_us: int) -> bool:
    if meta.expires_us is not None and now_us >= meta.expires_us:
        return True
    return meta.ttl is not None and now_us >= meta.touched_us + meta.ttl * 1_000_000


# -- the writers' state: producers, the last Stream-Seq, the tuple that closed the stream --------------


@attrs.frozen
class Writers:
    producers: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)
    stream_seq: str | None = None
    closed_by: tuple[str, int, int] | None = None

    @classmethod
    def loads(cls, text: str) -> Writers:
        raw: dict[str, Any] = json.loads(text) if text else {}
        closed_by = raw.get("c")
        return cls(
            {k: (int(v[0]), int(v[1])) for k, v in raw.get("p", {}).items()},
            raw.get("s"),
            (closed_by[0], int(closed_by[1]), int(closed_by[2])) if closed_by else None,
        )

    def dumps(self) -> str:
        raw: dict[str, Any] = {"p": {k: list(v) for k, v in self.producers.items()}}
        if self.stream_seq is not None:
            raw["s"] = self.stream_seq
        if self.closed_by is not None:
            raw["c"] = list(self.closed_by)
        return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


@attrs.frozen(kw_only=True)
class AppendRequest:
    body: bytes
    #: The request's Content-Type (None: not sent).
    content_type: str | None
    stream_seq: str | None
    producer: Producer | None
    close: bool


@attrs.frozen(kw_only=True)
class AppendDecision:
    """What an append does: the status, the protocol headers, and the row and chunk to write
    (None: nothing changes, e.g. a duplicate)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    meta: StreamMeta | None = None
    chunk: Chunk | None = None


def decide_append(meta: StreamMeta, request: AppendRequest, now_us: int) -> AppendDecision:
    """The append (or close) `request` on the open or closed stream `meta`, as the protocol orders
    its checks: closed first, then the content type, then the producer (a duplicate is a success
    before any Stream-Seq check), then Stream-Seq. ProtocolError for a refusal."""
    writers = Writers.loads(meta.writers)
    producer = request.producer
    offset = (("stream-next-offset", format_offset(meta.tail)),)
    closed = (("stream-closed", "true"),)
    if meta.closed:
        if producer is not None and writers.closed_by == (producer.id, producer.epoch, producer.seq):
            return AppendDecision(status=204, headers=(*offset, *closed, *_producer_headers(producer.epoch, producer.seq)))
        if request.close and not request.body:  # closing again is idempotent
            return AppendDecision(status=204, headers=(*offset, *closed))
        raise ProtocolError(409, "stream_closed", "the stream is closed: nothing more can be appended", (*offset, *closed))
    if request.body:
        if request.content_type is None or not request.content_type.strip():
            raise bad("an append with a body needs a Content-Type")
        if media_type(request.content_type) != media_type(meta.content_type):
            raise ProtocolError(
                409, "content_type_mismatch", f"the stream's content type is {meta.content_type}, not {request.content_type}"
            )
    elif not request.close:
        raise bad("an append needs a body (an empty one only with Stream-Closed: true)")
    chunk = new_chunk(meta.content_type, meta.tail, request.body, allow_empty=False) if request.body else None
    producers = dict(writers.producers)
    if producer is not None:
        state = producers.get(producer.id)
        if state is not None and producer.epoch < state[0]:
            raise ProtocolError(
                403, "stale_producer_epoch", f"producer epoch {producer.epoch} is older than {state[0]}",
                (("producer-epoch", str(state[0])),),
            )
        if state is None or producer.epoch > state[0]:
            if producer.seq != 0:
                raise bad(f"a new producer epoch starts at Producer-Seq 0, not {producer.seq}")
        elif producer.seq <= state[1]:  # a retry of what was accepted: nothing is appended again
            return AppendDecision(status=204, headers=(*offset, *_producer_headers(state[0], state[1])))
        elif producer.seq > state[1] + 1:
            raise ProtocolError(
                409, "producer_sequence_gap", f"expected Producer-Seq {state[1] + 1}, got {producer.seq}",
                (("producer-expected-seq", str(state[1] + 1)), ("producer-received-seq", str(producer.seq))),
            )
        producers[producer.id] = (producer.epoch, producer.seq)
    if request.stream_seq is not None and writers.stream_seq is not None and request.stream_seq <= writers.stream_seq:
        raise ProtocolError(
            409, "stream_seq_regression", f"Stream-Seq {request.stream_seq[:60]!r} is not after {writers.stream_seq[:60]!r}"
        )
    tail = chunk.end if chunk is not None else meta.tail
    closed_by = (producer.id, producer.epoch, producer.seq) if request.close and producer is not None else writers.closed_by
    new_writers = Writers(producers, request.stream_seq if request.stream_seq is not None else writers.stream_seq, closed_by)
    new_meta = attrs.evolve(
        meta,
        tail=tail,
        closed=request.close,
        writers=new_writers.dumps(),
        touched_us=max(meta.touched_us, now_us),
        version=meta.version + 1,
    )
    headers = [("stream-next-offset", format_offset(tail))]
    if request.close:
        headers.append(("stream-closed", "true"))
    if producer is not None:
        headers += _producer_headers(producer.epoch, producer.seq)
    status = 200 if producer is not None and request.body else 204
    return AppendDecision(status=status, headers=tuple(headers), meta=new_meta, chunk=chunk)


def _producer_headers(epoch: int, seq: int) -> tuple[tuple[str, str], ...]:
    return (("producer-epoch", str(epoch)), ("producer-seq", str(seq)))


__all__ = [
    "AppendDecision",
    "AppendRequest",
    "DEFAULT_CONTENT_TYPE",
    "Producer",
    "ProtocolError",
    "Writers",
    "body_of",
    "chunk_part",
    "decide_append",
    "expired",
    "flag",
    "format_expires",
    "format_offset",
    "is_json",
    "is_text",
    "media_type",
    "new_chunk",
    "parse_expires",
    "parse_offset",
    "producer_of",
    "whole_number",
]
