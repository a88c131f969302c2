"""SSE frames as a real client parses them (httpx-sse): every line break in the data
(\r\n, \r or \n) ends a data line, so the client gets the data back with its breaks as \n."""

from __future__ import annotations

import re

import httpx
from httpx_sse import EventSource
from hypothesis import given
from hypothesis import strategies as st

from runengine.http.sse import sse_frame


def parsed(stream: bytes) -> list[tuple[str, str, str]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
    return [(sse.id, sse.event, sse.data) for sse in EventSource(response).iter_sse()]


# Line breaks are drawn often: they are what the test is about.
data_text = st.lists(st.one_of(st.text(), st.sampled_from(["\r\n", "\r", "\n", "\n\r", "\r\r"]))).map("".join)


@given(data=data_text, event=st.from_regex(r"[a-z][a-z._]{0,20}", fullmatch=True), seq=st.integers(1, 10**9))
def test_any_data_round_trips_through_an_sse_parser(data: str, event: str, seq: int) -> None:
    assert parsed(sse_frame(data, event=event, id=seq)) == [(str(seq), event, re.sub(r"\r\n|\r", "\n", data))]


@given(st.lists(data_text, min_size=1, max_size=5))
def test_frames_in_a_row_stay_apart(datas: list[str]) -> None:
    stream = b"".join(sse_frame(data, event="message.delta", id=seq) for seq, data in enumerate(datas, 1))
    assert [data for _, _, data in parsed(stream)] == [re.sub(r"\r\n|\r", "\n", data) for data in datas]


def test_a_bare_carriage_return_ends_a_line() -> None:
    assert sse_frame("a\rb\r\nc", id=1) == b"id: 1\ndata: a\ndata: b\ndata: c\n\n"
