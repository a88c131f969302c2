"""runengine inside an aiohttp app: the native API and the live page under /runengine/.

From the repository root (runengine is installed from this clone, not from a package index):

    $ pip install '.[aiohttp]'
    $ python examples/aiohttp_app.py        # then open http://127.0.0.1:8080/runengine/

`PORT=9000 python examples/aiohttp_app.py` listens on another port.
"""

import os

from aiohttp import web

from runengine import RunEngine
from runengine.adapters.aiohttp_app import engine_aiohttp_app
from runengine.demo import default_store_url, register_demo_agents

engine = register_demo_agents(RunEngine(os.environ.get("RUNENGINE_STORE") or default_store_url("aiohttp_example.db")))

app = web.Application()
app.add_subapp("/runengine", engine_aiohttp_app(engine))  # enters `async with engine` while serving


async def home(request: web.Request) -> web.Response:
    return web.json_response({"runengine": "/runengine/"})


app.router.add_get("/", home)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")), handler_cancellation=True)
