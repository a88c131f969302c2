"""The native API's fork route (runengine.fork), beside the runs it forks:

    POST /runs/{run_id}/fork    {"at_seq": N, "input": ...}: a new run (201) whose log begins with
                                the run's events up to N, then goes on live; `input` replaces the
                                result of the event at N (a tool.result, a run.input, run.created)
"""

from __future__ import annotations

from collections.abc import Callable

from runengine.engine import RunEngine
from runengine.http import params
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import Request, Response, json_response
from runengine.http.limits import MAX_INPUT_BYTES
from runengine.http.openapi import Body, Operation, Reply
from runengine.http.router import Router

from .native_openapi import RUN_LINKS
from .native_shapes import run_to_json

FORK_BODY = params.BodySpec(
    (
        params.IntField("at_seq", minimum=1, required=True, description="the last event of the run copied into the fork"),
        params.JsonField(
            "input", max_bytes=MAX_INPUT_BYTES,
            description="another result for the event at at_seq: a tool.result's output, a run.input's content, "
            "run.created's input (seq 1); omitted or null: the event as recorded",
        ),
    )
)
FORK_RUN = Operation(
    "forkRun",
    "Fork the run at one of its events: a new run replays its log up to there, then goes on live",
    body=Body("ForkRun", FORK_BODY),
    replies={201: Reply("the new run, as created", "Run", links=RUN_LINKS)},
    errors=(400, 404, 408, 409, 413),
)


def add_fork_route(
    router: Router, engine: RunEngine, auth: AuthHook | None, owner_of: Callable[[Request], str | None],
    run_id_of: Callable[[Request], str],
) -> None:
    async def fork_run(request: Request) -> Response:
        source = run_id_of(request)
        fields = FORK_BODY.parse(request.json_object())
        at_seq = fields["at_seq"]
        assert at_seq is not None
        state = await engine.fork(source, at_seq, input=fields["input"], owner=owner_of(request))
        return json_response(run_to_json(state), status=201, headers=(("location", f"runs/{state.run_id}"),))

    router.route("POST", "/runs/{run_id}/fork", guarded(auth, fork_run), operation=FORK_RUN)


__all__ = ["FORK_BODY", "add_fork_route"]
