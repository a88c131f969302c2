"""An OpenAI-compatible chat completions server for the tests: a Starlette app that answers each
POST /v1/chat/completions with the next scripted reply (SSE chunks in OpenAI's format, a stream
cut after some chunks, or an HTTP error), and keeps the requests it got."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@attrs.define
class Reply:
    """One scripted answer: `chunks` streamed (cut after `cut_after` of them), or `status` with an error body."""

    chunks: list[dict[str, Any]] = attrs.field(factory=list)
    cut_after: int | None = None
    status: int = 200


class StreamCut(Exception):
    """Raised inside the streaming body: uvicorn drops the connection mid-response."""


def _chunk(delta: dict[str, Any], finish_reason: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        "usage": usage,
    }


def text(*pieces: str, prompt_tokens: int = 7, completion_tokens: int = 3, reasoning: str | None = None) -> Reply:
    """A streamed text answer, one chunk per piece, then the usage chunk (stream_options.include_usage)."""
    chunks = [_chunk({"role": "assistant", "content": ""})]
    if reasoning is not None:
        chunks.append(_chunk({"reasoning_content": reasoning}))
    chunks += [_chunk({"content": piece}) for piece in pieces]
    chunks.append(_chunk({}, "stop"))
    chunks.append(_chunk({}, usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}))
    return Reply(chunks)


def tool_calls(*calls: tuple[str, str, dict[str, Any] | str]) -> Reply:
    """A streamed answer that calls tools: each (id, name, arguments) with its arguments split over two chunks."""
    chunks = [_chunk({"role": "assistant", "content": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        half = len(raw) // 2
        chunks.append(_chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": raw[:half]}}]}))
        chunks.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[half:]}}]}))
    chunks.append(_chunk({}, "tool_calls"))
    chunks.append(_chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}))
    return Reply(chunks)


def error(status: int) -> Reply:
    return Reply(status=status)


class FakeOpenAI:
    """The server's script and what it saw. `replies` are served in order; the last one repeats."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    async def _complete(self, request: Request) -> Response:
        self.requests.append(await request.json())
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.status != 200:
            kind = "rate_limit_exceeded" if reply.status == 429 else "server_error"
            body = {"error": {"message": f"scripted {reply.status}", "type": kind, "code": kind}}
            # retry-after-ms keeps the client's retries quick.
            return JSONResponse(body, status_code=reply.status, headers={"retry-after-ms": "10"})
        return StreamingResponse(self._stream(reply), media_type="text/event-stream")

    async def _stream(self, reply: Reply) -> AsyncIterator[bytes]:
        for sent, chunk in enumerate(reply.chunks):
            if reply.cut_after is not None and sent == reply.cut_after:
                raise StreamCut("the connection drops here")
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"
