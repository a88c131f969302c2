"""The demo agents run in-process, with no server: every event printed as it is committed.

From the repository root (runengine is installed from this clone, not from a package index):

    $ pip install .
    $ python examples/demo.py               # (`make demo`) SQLite in ./demo.db when available
"""

import logging
import os

import anyio
import structlog

from runengine import RunEngine
from runengine.demo import default_store_url, register_demo_agents
from runengine.wire import event_to_json


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    engine = register_demo_agents(RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("demo.db")), delay=0.01)
    async with engine:
        print(f"store: {engine.store.__class__.__name__}")
        for agent, text in [("echo", "Hello, event log!"), ("pizza", "something with cheese")]:
            print(f"\n== {agent}: {text!r}")
            async for event in await engine.execute(agent, text, mode="stream"):
                print(event_to_json(event))

        print("\n== approval: asks, waits, resumes")
        waiting = await engine.execute("approval", "release v1.0")  # sync: returns when it waits for input
        print(f"status {waiting.status.value}, asks {waiting.await_request}")
        await engine.resume(waiting.run_id, "yes")
        async for event in engine.events(waiting.run_id):
            print(event_to_json(event))
        print(f"\nfinal output: {(await engine.status(waiting.run_id)).output}")


if __name__ == "__main__":
    anyio.run(main)
