"""The ACP reference server (acp-sdk 1.0.3) with the two benchmark agents.

Runs inside the benchmark's own virtualenv (.bench-venvs/acp), never the project's:
    python acp_server.py PORT
Agents:
  "parts": input text is a number N; yields N message parts "tok<i> ", then ends.
  "echo":  returns the input text as one message (the trivial sync agent).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator

from acp_sdk.models import Message, MessagePart
from acp_sdk.server import Context, RunYield, RunYieldResume, Server

server = Server()


def _text(messages: list[Message]) -> str:
    return "".join(part.content or "" for message in messages for part in message.parts)


@server.agent(name="parts")
async def parts(input: list[Message], context: Context) -> AsyncGenerator[RunYield, RunYieldResume]:
    for i in range(int(_text(input))):
        yield MessagePart(content=f"tok{i} ")


@server.agent(name="echo")
async def echo(input: list[Message], context: Context) -> AsyncGenerator[RunYield, RunYieldResume]:
    yield Message(parts=[MessagePart(content=_text(input))])


if __name__ == "__main__":
    # Same server stack as the other sides (plain asyncio loop, h11), no access log, no registration.
    server.run(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        self_registration=False,
        configure_logger=False,
        access_log=False,
        log_level="warning",
        loop="asyncio",
        http="h11",
    )
