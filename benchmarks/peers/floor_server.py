"""The floor: a plain FastAPI app that does no run bookkeeping at all.

    python floor_server.py PORT

POST /stream {"n": N}  -> an SSE stream of N+4 small JSON events shaped like a run's
                          (created, started, N deltas, completed message, completed run),
                          each frame with an `id:` line, as an event-sourced server sends them.
POST /sync {"input": s} -> a small JSON run object at once (the floor for a sync run).

It is the cost of HTTP + SSE + JSON on this machine, with the same server (uvicorn,
asyncio loop, h11) as the others.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

app = FastAPI()


class StreamRequest(BaseModel):
    n: int


class SyncRequest(BaseModel):
    input: str


def _frame(seq: int, type_: str, run_id: str, data: dict) -> str:
    event = {"run_id": run_id, "seq": seq, "type": type_, "at": datetime.now(timezone.utc).isoformat(), "data": data}
    return f"id: {seq}\nevent: {type_}\ndata: {json.dumps(event)}\n\n"


@app.post("/stream")
async def stream(request: StreamRequest) -> StreamingResponse:
    run_id = uuid.uuid4().hex

    async def body() -> AsyncIterator[str]:
        yield _frame(1, "run.created", run_id, {"agent": "parts"})
        yield _frame(2, "run.started", run_id, {})
        for i in range(request.n):
            yield _frame(3 + i, "message.delta", run_id, {"message_id": "m1", "content": f"tok{i} "})
        seq = 3 + request.n
        yield _frame(seq, "message.completed", run_id, {"message_id": "m1", "role": "assistant"})
        yield _frame(seq + 1, "run.completed", run_id, {})

    return StreamingResponse(body(), media_type="text/event-stream")


@app.post("/sync")
async def sync(request: SyncRequest) -> JSONResponse:
    now = datetime.now(timezone.utc).isoformat()
    return JSONResponse(
        {"run_id": uuid.uuid4().hex, "status": "completed", "output": request.input, "created_at": now, "finished_at": now}
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning", loop="asyncio", http="h11")
