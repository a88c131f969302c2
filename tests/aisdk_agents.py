"""The engine `runengine serve --app aisdk_agents:make_engine` serves in the /ai tests on PostgreSQL:
the demo agents on RUNENGINE_TEST_STORE, with a short lease, so that a run whose server was
SIGKILLed is taken over in seconds (the default lease is 30 s)."""

from __future__ import annotations

import os

from runengine import RunEngine
from runengine.demo import register_demo_agents
from runengine.worker import WorkerOptions

#: Seconds a killed server's claim on a run holds.
LEASE = 2.0


def make_engine() -> RunEngine:
    engine = RunEngine(os.environ["RUNENGINE_TEST_STORE"], worker=WorkerOptions(lease=LEASE))
    return register_demo_agents(engine, delay=float(os.environ.get("RUNENGINE_TEST_DELAY", "0.05")))
