"""The Durable Streams profile's rules without I/O (adapters/profiles/durable_streams_rules.py):
offsets, header values, JSON messages, chunk slicing, expiry and the append decision. (The whole
protocol over HTTP: the official suite, tests/test_durable_streams_conformance.py.)"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runengine.adapters.profiles.durable_streams_rules import (
    AppendRequest,
    Producer,
    ProtocolError,
    Writers,
    chunk_part,
    decide_append,
    expired,
    flag,
    format_offset,
    json_messages,
    new_chunk,
    parse_offset,
    producer_of,
)
from runengine.adapters.profiles.durable_streams_store import Chunk, StreamMeta

META = StreamMeta(path="s", stream_id="a" * 32, content_type="text/plain", created_us=0, touched_us=0)


@given(st.integers(min_value=0, max_value=10**16 - 1), st.integers(min_value=0, max_value=10**16 - 1))
def test_offsets_name_positions_and_sort_as_they_do(a: int, b: int) -> None:
    assert parse_offset(format_offset(a)) == a
    assert (format_offset(a) < format_offset(b)) == (a < b)


@pytest.mark.parametrize("text", ["", "-1", "now", "0,1", "0 1", "../x", "1_0000000000000000", "0000000000000000_1"])
def test_anything_but_an_offset_it_made_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_offset(text)
    assert refused.value.status == 400


def test_header_values() -> None:
    assert flag("true") and flag("TRUE") and not flag("yes") and not flag(None) and not flag("1")
    assert producer_of({}) is None
    assert producer_of({"producer-id": "p", "producer-epoch": "2", "producer-seq": "0"}) == Producer("p", 2, 0)
    for headers in (
        {"producer-id": "p"},
        {"producer-id": "", "producer-epoch": "0", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "01", "producer-seq": "0"},
        {"producer-id": "p", "producer-epoch": "0", "producer-seq": str(2**53)},
    ):
        with pytest.raises(ProtocolError):
            producer_of(headers)


def test_json_messages_flatten_one_level_and_slice() -> None:
    assert json_messages(b'[{"a":1},[2,3]]', allow_empty=False) == ['{"a":1}', "[2,3]"]
    assert json_messages(b'"x"', allow_empty=False) == ['"x"']
    assert json_messages(b"[]", allow_empty=True) == []
    for body in (b"[]", b"{oops", b"NaN"):
        with pytest.raises(ProtocolError):
            json_messages(body, allow_empty=False)
    chunk = new_chunk("application/json; charset=utf-8", 4, b'[1,{"b":[2]},"c"]', allow_empty=False)
    assert chunk == Chunk(4, 7, b'1,{"b":[2]},"c"')
    assert chunk_part(chunk, 5, 7, True) == Chunk(5, 7, b'{"b":[2]},"c"')
    assert chunk_part(Chunk(0, 5, b"hello"), 1, 3, False) == Chunk(1, 3, b"el")


def test_expiry() -> None:
    assert not expired(META, 10**12)
    assert expired(attrs.evolve(META, ttl=2, touched_us=1_000_000), 3_000_000)
    assert not expired(attrs.evolve(META, ttl=2, touched_us=1_000_000), 2_999_999)
    assert expired(attrs.evolve(META, expires_us=5), 5)


def append(meta: StreamMeta, body: bytes = b"x", producer: Producer | None = None, **extra: object) -> object:
    fields: dict[str, object] = {"content_type": "text/plain", "stream_seq": None, "close": False}
    fields.update(extra)
    return decide_append(meta, AppendRequest(body=body, producer=producer, **fields), 7)  # type: ignore[arg-type]


def test_an_idempotent_producer_is_decided_as_the_protocol_says() -> None:
    first = append(META, producer=Producer("p", 0, 0))
    assert first.status == 200 and first.meta.tail == 1 and first.meta.version == META.version + 1
    state = first.meta
    assert append(state, producer=Producer("p", 0, 0)).status == 204  # a retry: nothing appended
    assert append(state, producer=Producer("p", 0, 0)).meta is None
    with pytest.raises(ProtocolError) as gap:
        append(state, producer=Producer("p", 0, 2))
    assert gap.value.status == 409 and ("producer-expected-seq", "1") in gap.value.headers
    newer = append(state, producer=Producer("p", 1, 0)).meta
    with pytest.raises(ProtocolError) as stale:
        append(newer, producer=Producer("p", 0, 1))
    assert stale.value.status == 403 and ("producer-epoch", "1") in stale.value.headers
    with pytest.raises(ProtocolError) as bad_epoch:
        append(state, producer=Producer("p", 2, 3))
    assert bad_epoch.value.status == 400
    assert Writers.loads(newer.writers).producers == {"p": (1, 0)}


def test_closing_and_the_order_of_refusals() -> None:
    closed = append(META, body=b"last", close=True, producer=Producer("p", 0, 0))
    assert closed.status == 200 and closed.meta.closed
    again = append(closed.meta, body=b"other", close=True, producer=Producer("p", 0, 0))
    assert again.status == 204 and ("stream-closed", "true") in again.headers  # the closing tuple: a duplicate
    assert append(closed.meta, body=b"", close=True).status == 204  # closing again
    with pytest.raises(ProtocolError) as after:
        append(closed.meta, content_type="application/json")  # closed is checked before the content type
    assert after.value.status == 409 and ("stream-closed", "true") in after.value.headers
    with pytest.raises(ProtocolError) as mismatch:
        append(META, content_type="application/json")
    assert mismatch.value.status == 409
    with pytest.raises(ProtocolError) as empty:
        append(META, body=b"")
    assert empty.value.status == 400
    seq = append(META, stream_seq="09").meta
    assert append(seq, stream_seq="10").status == 204
    with pytest.raises(ProtocolError):
        append(seq, stream_seq="09")
