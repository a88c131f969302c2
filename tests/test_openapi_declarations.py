"""The OpenAPI documents are generated from the routes' declarations (runengine.http.openapi): every
route is declared, the documents are valid OpenAPI 3.1, and a declared request rule and the
handler's check agree (requests drawn from the schema, and arbitrary ones, answered alike)."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from httpkit import demo_engine
from runengine import RunEngine
from runengine.http.limits import MAX_TIMEOUT
from runengine.adapters.profiles.native import LIST_RUNS, MODES, ON_DISCONNECT, RUN_BODY, SESSION_POLICIES, NativeAPI
from runengine.adapters.profiles.aisdk import CHAT, AiSdkProfile
from runengine.adapters.profiles.langgraph import LangGraphProfile
from runengine.adapters.profiles.threads import ThreadsProfile
from runengine.http import params
from runengine.http.core import HttpError, Request
from runengine.http.cursor import LAST_EVENT_ID_PARAMETER, last_event_id
from runengine.http.router import Router
from runengine.wire import dumps

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


#: Each API whose routes carry declarations, and how to make it over an engine (with an auth hook or none).
APIS: dict[str, Any] = {"native": NativeAPI, "v1": ThreadsProfile, "ai": AiSdkProfile, "langgraph": LangGraphProfile}


@pytest.mark.parametrize("name", list(APIS))
def test_every_route_is_declared_and_documented(name: str) -> None:
    api = APIS[name](demo_engine())
    router = api.router
    undeclared = [(method, pattern) for method, pattern, op in router.declared() if op is None]
    assert undeclared == [], f"routes registered without an Operation: {undeclared}"
    response = anyio.run(api, Request(method="GET", path="/openapi.json"))
    doc = json.loads(response.body)
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert documented == {(method, pattern) for method, pattern, _ in router.declared()}


def test_an_undeclared_route_is_seen() -> None:
    router = Router()

    async def handler(request: Request) -> Any:
        raise AssertionError

    router.route("GET", "/declared", handler, operation=LIST_RUNS)
    router.route("GET", "/forgotten", handler)
    assert [(m, p) for m, p, op in router.declared() if op is None] == [("GET", "/forgotten")]


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("name", list(APIS))
def test_the_documents_are_valid_openapi_3_1(name: str, auth: bool) -> None:
    hook = (lambda headers: "alice") if auth else None
    api = APIS[name](demo_engine(), auth=hook)
    response = anyio.run(api, Request(method="GET", path="/openapi.json", headers={"authorization": "Bearer alice"}))
    doc = json.loads(response.body)
    assert doc["openapi"] == "3.1.0" and ("security" in doc) is auth
    validate(doc)


# -- the create-run body: the declared schema and the handler agree -----------------------------

CREATE_RUN = RUN_BODY.schema()
VALIDATOR = Draft202012Validator(CREATE_RUN)
#: An engine with no agents: a body the handler accepts is answered 404 (no such agent), one it
#: refuses 400, and nothing ever runs.
NO_AGENTS = NativeAPI(RunEngine("memory://", clock=lambda: NOW))


def answer(body: Any) -> int:
    response = anyio.run(NO_AGENTS, Request(method="POST", path="/runs", body=dumps(body).encode()))
    return response.status


def drawable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema less what JSON Schema cannot say and the handler checks: `start_at` relative to the
    clock (drawn apart, in `times`); sizes in encoded bytes are far above what is drawn."""
    out = copy.deepcopy(schema)
    out["properties"]["start_at"] = {"type": "null"}
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a schema accepts, for the keywords the request specs use (hypothesis-jsonschema does
    not run on today's Hypothesis)."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 20)
        text = st.text(min_size=low, max_size=min(high, 20)) | st.sampled_from([low, high]).map(lambda n: "x" * n)
        if "not" in schema:
            text = text.filter(lambda value: not re.search(schema["not"]["pattern"], value))
        return text
    if kind == "number":
        top = schema["maximum"]
        return st.floats(min_value=0, max_value=top, exclude_min=True) | st.sampled_from([top, int(top), 1e-9])
    if kind == "integer":
        low, high = schema["minimum"], schema["maximum"]
        return st.integers(min_value=low, max_value=high) | st.sampled_from([low, high])
    if kind == "object" and "properties" in schema:
        required = {name: from_schema(schema["properties"][name]) for name in schema.get("required", ())}
        optional = {name: from_schema(s) for name, s in schema["properties"].items() if name not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "object":
        return st.dictionaries(st.text(max_size=5), json_values, max_size=3)
    if schema.get("not") == {"type": "null"}:
        return json_values.filter(lambda value: value is not None)
    assert set(schema) <= {"description"}, f"no strategy for {schema}"
    return json_values


@FAST
@given(body=from_schema(drawable(CREATE_RUN)))
def test_a_body_the_schema_accepts_the_handler_accepts(body: dict[str, Any]) -> None:
    assert answer(body) == 404, body


#: start_at values: RFC 3339 inside the clock's window (the schema states format and window in
#: words: JSON Schema asserts neither), the only start_at drawn.
TIMES = ("2026-01-01T12:00:00Z", "2026-01-02T00:00:00+02:00", "2026-01-01T00:00:01.5+00:00")
times = st.sampled_from(TIMES)
short_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**7),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
    st.text(st.sampled_from("ab\n\x00\x85"), min_size=0, max_size=3),
    st.sampled_from([1, 199, 200, 201, 1000, 1001]).map(lambda n: "x" * n),  # around the length limits
    st.sampled_from([0, 0.0, -1e-9, 1e-9, MAX_TIMEOUT, MAX_TIMEOUT + 1]),  # around the number limits
    st.sampled_from([*MODES, *SESSION_POLICIES, *ON_DISCONNECT]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(short_text, st.integers(), max_size=2),
)
field_names = st.sampled_from([*(name for name in RUN_BODY.names if name != "start_at"), "colour"])
#: A valid agent and up to two fields of any value: one rule at a time decides most answers.
bodies = st.builds(
    lambda fields, when: {"agent": "a", **fields, **({"start_at": when} if when else {})},
    st.dictionaries(field_names, values, max_size=2),
    st.none() | times,
)


@FAST
@given(body=bodies)
def test_the_schema_and_the_handler_refuse_the_same_bodies(body: dict[str, Any]) -> None:
    assert (answer(body) != 400) is VALIDATOR.is_valid(body), (body, answer(body))


# -- the list query parameters: the declared parameter and the parser agree ------------------------


def accepted(parameter: dict[str, Any], raw: str) -> bool:
    """What the parameter's schema says of a raw query value (integers read as JSON numbers would)."""
    schema = parameter["schema"]
    value: Any = int(raw) if schema["type"] == "integer" and re.fullmatch(r"[0-9]+", raw) else raw
    return Draft202012Validator(schema).is_valid(value)


raw_values = st.one_of(
    st.integers(-5, 300).map(str),
    st.text(st.sampled_from("0123456789ab\n\x01-+"), max_size=20),
    st.sampled_from(["completed", "running", "nope", "", "1" * 19]),
)


@FAST
@given(query=st.dictionaries(st.sampled_from([p.name for p in LIST_RUNS.parameters]), raw_values, max_size=3))
def test_the_list_parameters_and_the_parser_agree(query: dict[str, str]) -> None:
    declared = {p.name: p.parameter() for p in LIST_RUNS.parameters}
    response = anyio.run(NO_AGENTS, Request(method="GET", path="/runs", query_string=urlencode(query)))
    expected = all(accepted(declared[name], raw) for name, raw in query.items())
    assert (response.status == 200) is expected, (query, response.body)


def test_a_rule_is_read_from_its_declaration() -> None:
    """The spec a handler parses with is the one the schema comes from: a changed limit moves both."""
    field = params.TextField("agent", max_length=3, required=True)
    spec = params.BodySpec((field,))
    assert spec.schema()["properties"]["agent"]["maxLength"] == 3
    with pytest.raises(HttpError) as refused:
        spec.parse({"agent": "four"})
    assert refused.value.status == 400
    assert spec.parse({"agent": "thr"}) == {"agent": "thr"}


@FAST
@given(raw=st.text(st.sampled_from("0123456789 \t-+a"), max_size=22))
def test_the_last_event_id_parameter_and_the_parser_agree(raw: str) -> None:
    try:
        last_event_id(Request(method="GET", path="/", headers={"last-event-id": raw}))
        parsed = True
    except HttpError:
        parsed = False
    assert parsed is Draft202012Validator(LAST_EVENT_ID_PARAMETER["schema"]).is_valid(raw), raw


# -- the /ai chat body: the declared schema and the handler agree -----------------------------------

CHAT_VALIDATOR = Draft202012Validator(CHAT.body.json_schema() if CHAT.body else {})
#: No agents (the default one, "a", missing too): a chat body the handler accepts is answered 404,
#: one it refuses 400.
NO_AGENTS_AI = AiSdkProfile(RunEngine("memory://", clock=lambda: NOW), default_agent="a")
USER_MESSAGE = {"id": "m", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
chat_fields = st.sampled_from(["id", "trigger", "messageId", "agent"])
chat_values = values | st.sampled_from(["submit-message", "regenerate-message", "resume-stream", "c1"])


@FAST
@given(fields=st.dictionaries(chat_fields, chat_values, max_size=2))
def test_the_chat_schema_and_the_handler_refuse_the_same_bodies(fields: dict[str, Any]) -> None:
    body = {"id": "c1", "agent": "a", "messages": [USER_MESSAGE], **fields}
    response = anyio.run(NO_AGENTS_AI, Request(method="POST", path="/chat", body=dumps(body).encode()))
    assert (response.status != 400) is CHAT_VALIDATOR.is_valid(body), (body, response.body)


# -- /langgraph's run body: the declared schema and the handler agree --------------------------------

from runengine.adapters.profiles.langgraph_openapi import RUN_BODY as LANGGRAPH_RUN_BODY  # noqa: E402

LANGGRAPH_VALIDATOR = Draft202012Validator(LANGGRAPH_RUN_BODY.json_schema())
#: No agents: a body the handler accepts is a 404 (no such assistant), one it refuses a 400.
NO_ASSISTANTS = LangGraphProfile(RunEngine("memory://", clock=lambda: NOW))
MODES_DRAWN = st.sampled_from(["values", "messages-tuple", "updates", "custom", "events", "debug", "messages", "x"])
LANGGRAPH_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "assistant_id": st.sampled_from(["agent", "", "x" * 200, "x" * 201, "a\nb"]) | json_values,
        "input": json_values,
        "command": st.fixed_dictionaries({}, optional={"resume": json_values, "goto": json_values}) | json_values,
        "metadata": st.dictionaries(st.sampled_from(["k", "langgraph"]), json_values, max_size=2) | json_values,
        "stream_mode": MODES_DRAWN | st.lists(MODES_DRAWN, max_size=3) | json_values,
        "multitask_strategy": st.sampled_from(["reject", "interrupt", "rollback", "enqueue", "x"]) | json_values,
        "if_not_exists": st.sampled_from(["create", "reject", "x"]) | json_values,
        "on_disconnect": st.sampled_from(["cancel", "continue", "x"]) | json_values,
        "after_seconds": st.sampled_from([0, 1.5, -1, 30 * 24 * 3600, 30 * 24 * 3600 + 1, True]) | json_values,
        "checkpoint_id": st.none() | json_values,
        "interrupt_before": st.none() | json_values,
        "config": json_values,
        "stream_resumable": json_values,
        "unknown_field": json_values,
    },
)


@FAST
@given(body=LANGGRAPH_BODIES)
def test_langgraph_run_body_schema_and_handler_agree(body: dict[str, Any]) -> None:
    request = Request(method="POST", path="/threads/t/runs", body=dumps(body).encode())
    status = anyio.run(NO_ASSISTANTS, request).status
    assert (status != 400) == LANGGRAPH_VALIDATOR.is_valid(body), (status, body)
    assert status in (400, 404)
