"""runengine inside a FastAPI app: the native API and the live page under /runengine/.

    $ pip install . fastapi
    $ uvicorn examples.fastapi_app:app      # then open http://127.0.0.1:8000/runengine/

Run both from the repository root: runengine is installed from this clone (not from a package
index), and `examples` is imported as a package from there.
"""

import contextlib
import os

from fastapi import FastAPI

from runengine import RunEngine
from runengine.adapters.asgi import ASGIApp
from runengine.adapters.server import build_app
from runengine.demo import default_store_url, register_demo_agents

engine = register_demo_agents(RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("fastapi_example.db")))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    async with engine:  # the engine runs while the app serves
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/runengine", ASGIApp(build_app(engine)))


@app.get("/")
async def home() -> dict[str, str]:
    return {"runengine": "/runengine/"}
