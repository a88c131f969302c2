"""Drives the published ACP Python client (acp-sdk) against a server; prints what it saw as JSON.

Runs in its own virtualenv (acp-sdk pins its own dependency tree), started by
tests/test_profile_acp.py:  python acp_client_driver.py <base_url>
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from acp_sdk.client import Client
from acp_sdk.models import ACPError, Message, MessageAwaitResume, MessagePart


def text(run: Any) -> str:
    return "".join(str(m) for m in run.output)


async def main(base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Client(base_url=base_url, timeout=60) as client:
        await client.ping()
        out["agents"] = [a.name async for a in client.agents()]
        out["agent"] = (await client.agent(name="echo")).model_dump(mode="json")

        run = await client.run_sync("hello big world", agent="echo")
        out["sync"] = {"status": run.status.value, "text": text(run), "run_id": str(run.run_id)}

        run = await client.run_async("one two", agent="echo")
        out["async_first"] = run.status.value
        for _ in range(600):
            run = await client.run_status(run_id=run.run_id)
            if run.status.is_terminal:
                break
            await asyncio.sleep(0.05)
        out["async_final"] = {"status": run.status.value, "text": text(run)}

        events = [e async for e in client.run_stream("stream me now", agent="echo")]
        out["stream"] = [e.type for e in events]
        out["stream_text"] = "".join(e.part.content for e in events if e.type == "message.part")
        stream_run_id = events[0].run.run_id
        out["events"] = [e.type async for e in client.run_events(run_id=stream_run_id)]

        run = await client.run_sync("hi", agent="asker")
        out["awaiting"] = {
            "status": run.status.value,
            "await_request": str(run.await_request.message) if run.await_request else None,
        }
        resume = MessageAwaitResume(message=Message(parts=[MessagePart(content="Bob")]))
        run = await client.run_resume_sync(resume, run_id=run.run_id)
        out["resumed"] = {"status": run.status.value, "text": text(run)}

        events = [e async for e in client.run_stream("hi", agent="asker")]
        out["stream_until_awaiting"] = [e.type for e in events]
        waiting_id = events[-1].run.run_id
        resume = MessageAwaitResume(message=Message(parts=[MessagePart(content="Ann")]))
        events = [e async for e in client.run_resume_stream(resume, run_id=waiting_id)]
        out["resume_stream"] = [e.type for e in events]
        out["resume_stream_final"] = text(events[-1].run)

        run = await client.run_async("", agent="slow")
        for _ in range(600):
            if (await client.run_status(run_id=run.run_id)).status.value == "in-progress":
                break
            await asyncio.sleep(0.05)
        cancelled = await client.run_cancel(run_id=run.run_id)
        out["cancel"] = {
            "response": cancelled.status.value,
            "final": (await client.run_status(run_id=run.run_id)).status.value,
        }

        run = await client.run_sync("x", agent="failing")
        out["failed"] = {"status": run.status.value, "code": run.error.code if run.error else None}

        async with client.session() as session:
            first = await session.run_sync("first", agent="echo")
            second = await session.run_sync("second", agent="echo")
            refreshed = await session.refresh_session()
            out["session"] = {
                "same": str(first.session_id) == str(second.session_id),
                "history": len(refreshed.history),
                "texts": [text(first), text(second)],
            }

        try:
            await client.run_sync("x", agent="no-such-agent")
            out["unknown_agent"] = None
        except ACPError as exc:
            out["unknown_agent"] = exc.error.code
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
