"""The native API's schedules (runengine.schedules), owned like runs: another principal's schedule
is answered exactly as a missing one (404), and schedule ids are one namespace per principal.

    POST   /schedules                       create (201): schedule_id, cron, agent, input, timezone,
                                            metadata, session_id, session_policy, missed
    GET    /schedules                       the caller's schedules, with their next fire time: limit, after
    GET    /schedules/{schedule_id}         one schedule
    POST   /schedules/{schedule_id}/pause   pause (idempotent): no run starts until it is resumed
    POST   /schedules/{schedule_id}/resume  resume (idempotent): the slots while paused are not started
    DELETE /schedules/{schedule_id}         delete (204); the runs it started stay
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from runengine.engine import SESSION_POLICIES, RunEngine
from runengine.errors import AgentNotFound
from runengine.http import params
from runengine.http.auth import AuthHook, guarded
from runengine.http.core import Request, Response, json_response
from runengine.http.limits import MAX_ID_LENGTH, MAX_INPUT_BYTES, MAX_METADATA_BYTES
from runengine.http.openapi import Body, Operation, Reply
from runengine.http.router import Router
from runengine.schedules import MISSED_POLICIES, Schedule
from runengine.wire import format_time


SCHEDULE_BODY = params.BodySpec(
    (
        params.TextField("schedule_id", max_length=MAX_ID_LENGTH, required=True, description="taken by the caller: 409"),
        params.TextField("cron", max_length=200, required=True,
                         description="a cron expression (croniter's: five fields, a sixth is seconds)"),
        params.TextField("agent", max_length=MAX_ID_LENGTH, required=True),
        params.JsonField("input", max_bytes=MAX_INPUT_BYTES),
        params.TextField("timezone", max_length=64, description="an IANA time zone the cron is read in; omitted: UTC"),
        params.ObjectField("metadata", max_bytes=MAX_METADATA_BYTES, description="given to every run it starts"),
        params.TextField("session_id", max_length=MAX_ID_LENGTH, description="its runs join this session of the caller's"),
        params.ChoiceField("session_policy", SESSION_POLICIES, description="overlapping runs in the session (default: the engine's)"),
        params.ChoiceField("missed", MISSED_POLICIES, default="skip", description="the slots missed while no engine ran"),
    )
)
SCHEDULES_LIMIT = params.QueryInt("limit", default=50, minimum=1, maximum=200)
SCHEDULES_AFTER = params.QueryText("after", max_length=MAX_ID_LENGTH)
TIME = params.nullable({"type": "string", "format": "date-time"})
SCHEDULE: dict[str, Any] = {
    "type": "object",
    "required": ["schedule_id", "cron", "timezone", "agent", "input", "metadata", "session_id", "session_policy",
                 "missed", "paused", "created_at", "last_slot", "next_fire_at"],
    "properties": {
        "schedule_id": {"type": "string"},
        "cron": {"type": "string"},
        "timezone": {"type": "string"},
        "agent": {"type": "string"},
        "input": {},
        "metadata": {"type": "object"},
        "session_id": params.nullable({"type": "string"}),
        "session_policy": params.nullable({"type": "string", "enum": list(SESSION_POLICIES)}),
        "missed": {"type": "string", "enum": list(MISSED_POLICIES)},
        "paused": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "last_slot": {**TIME, "description": "the latest slot handled (its run started, or skipped)"},
        "next_fire_at": {**TIME, "description": "when its next run starts; null while paused"},
    },
}
SCHEDULE_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["schedules", "next_after"],
    "properties": {"schedules": {"type": "array", "items": SCHEDULE}, "next_after": params.nullable({"type": "string"})},
}

CREATE_SCHEDULE = Operation(
    "createSchedule", "Start a run of an agent at each slot of a cron expression",
    body=Body("CreateSchedule", SCHEDULE_BODY), replies={201: Reply("the new schedule", SCHEDULE)},
    errors=(400, 404, 408, 409, 413),
)
LIST_SCHEDULES = Operation(
    "listSchedules", "The caller's schedules by id, with their next fire time",
    parameters=(SCHEDULES_LIMIT, SCHEDULES_AFTER), replies={200: Reply("a page of schedules", SCHEDULE_LIST)},
    errors=(400,),
)
GET_SCHEDULE = Operation("getSchedule", "The schedule", replies={200: Reply("the schedule", SCHEDULE)}, errors=(404,))
PAUSE_SCHEDULE = Operation(
    "pauseSchedule", "Pause the schedule (idempotent)", replies={200: Reply("the schedule", SCHEDULE)}, errors=(404,)
)
RESUME_SCHEDULE = Operation(
    "resumeSchedule", "Resume the schedule (idempotent): the slots while it was paused are not started",
    replies={200: Reply("the schedule", SCHEDULE)}, errors=(404,),
)
DELETE_SCHEDULE = Operation(
    "deleteSchedule", "Delete the schedule; the runs it started stay", replies={204: Reply("deleted")}, errors=(404,)
)


def schedule_to_json(schedule: Schedule, engine: RunEngine) -> dict[str, Any]:
    next_fire = schedule.next_fire(engine.clock(), engine.schedules.grace)
    return {
        "schedule_id": schedule.schedule_id,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "agent": schedule.agent,
        "input": schedule.input,
        "metadata": schedule.metadata,
        "session_id": schedule.session_id,
        "session_policy": schedule.session_policy,
        "missed": schedule.missed,
        "paused": schedule.paused,
        "created_at": format_time(schedule.created_at),
        "last_slot": format_time(schedule.last_slot) if schedule.last_slot is not None else None,
        "next_fire_at": format_time(next_fire) if next_fire is not None else None,
    }


def add_schedule_routes(
    router: Router, engine: RunEngine, auth: AuthHook | None, owner_of: Callable[[Request], str | None],
    is_internal: Callable[[Any], bool],
) -> None:
    def answer(schedule: Schedule, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return json_response(schedule_to_json(schedule, engine), status=status, headers=headers)

    async def create(request: Request) -> Response:
        fields = SCHEDULE_BODY.parse(request.json_object())
        agent = fields["agent"]
        spec = engine.agents.find(agent)
        if spec is None or is_internal(spec):
            raise AgentNotFound(agent, [s.name for s in engine.agents if not is_internal(s)])
        schedule = await engine.schedule(
            fields["schedule_id"], cron=fields["cron"], agent=agent, input=fields["input"],
            timezone=fields["timezone"] or "UTC", owner=owner_of(request), session_id=fields["session_id"],
            session_policy=fields["session_policy"], metadata=fields["metadata"], missed=fields["missed"],
        )
        location = f"schedules/{quote(schedule.schedule_id, safe='')}"
        return answer(schedule, 201, (("location", location),))

    async def listing(request: Request) -> Response:
        limit = SCHEDULES_LIMIT.parse(request.query)
        page = await engine.schedules.list(owner=owner_of(request), after=SCHEDULES_AFTER.parse(request.query), limit=limit)
        return json_response({
            "schedules": [schedule_to_json(s, engine) for s in page],
            "next_after": page[-1].schedule_id if len(page) == limit else None,
        })

    async def get(request: Request) -> Response:
        return answer(await engine.schedules.get(request.params["schedule_id"], owner=owner_of(request)))

    async def pause(request: Request) -> Response:
        return answer(await engine.schedules.pause(request.params["schedule_id"], owner=owner_of(request)))

    async def resume(request: Request) -> Response:
        return answer(await engine.schedules.resume(request.params["schedule_id"], owner=owner_of(request)))

    async def delete(request: Request) -> Response:
        await engine.schedules.delete(request.params["schedule_id"], owner=owner_of(request))
        return Response(status=204)

    for method, pattern, handler, operation in (
        ("POST", "/schedules", create, CREATE_SCHEDULE),
        ("GET", "/schedules", listing, LIST_SCHEDULES),
        ("GET", "/schedules/{schedule_id}", get, GET_SCHEDULE),
        ("POST", "/schedules/{schedule_id}/pause", pause, PAUSE_SCHEDULE),
        ("POST", "/schedules/{schedule_id}/resume", resume, RESUME_SCHEDULE),
        ("DELETE", "/schedules/{schedule_id}", delete, DELETE_SCHEDULE),
    ):
        router.route(method, pattern, guarded(auth, handler), operation=operation)


__all__ = ["SCHEDULE_BODY", "add_schedule_routes", "schedule_to_json"]
