"""Fuzz: schemathesis drives the native API from its own /openapi.json; 0 responses 5xx.

`runengine serve` runs in its own process on SQLite. Schemathesis generates requests
that fit the published document and requests that break it (negative mode: wrong
types, missing fields, bad values), for every operation. Every response must be below
500, and every 4xx must be in the one error format {"error": {"code", "message",
"details"}}.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote
from pathlib import Path

import pytest
import schemathesis
from collections import Counter
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from faultkit import ServeProcess
from kit import SERVERS

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

TESTS = Path(__file__).resolve().parent
EXAMPLES = 60  # per operation and mode
RAW_EXAMPLES = 1500


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    server = ServeProcess(
        ["--app", "fault_apps:fuzz", "--log-level", "warning"],
        folder / "serve.log",
        env={"RUNENGINE_FAULT_STORE": f"sqlite:///{folder / 'fuzz.db'}"},
        cwd=TESTS,
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


def one_error_format(response: schemathesis.Response) -> None:
    """A 4xx carries the one error format."""
    if 400 <= response.status_code < 500:
        body = json.loads(response.content)
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"], body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["details"], dict), body


def known_runs(base: str) -> tuple[list[str], str]:
    """A few real runs (completed, failed, in a session) for the fuzzer to aim at."""
    # A fresh session each time: the fuzzer may end the previous one (DELETE /sessions/{id}).
    session = f"fuzz-session-{uuid.uuid4().hex[:8]}"
    ids = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for agent in ("echo", "tools", "fails"):
            response = client.post("/runs", json={"agent": agent, "input": "hello fuzz", "session_id": session})
            assert response.status_code == 200, response.text
            ids.append(response.json()["run_id"])
    return ids, session


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_5xx_and_errors_in_one_format(served: ServeProcess, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    run_ids, session_id = known_runs(served.base)
    agents = st.sampled_from(["echo", "tools", "fails"])
    statuses: dict[str, Counter[int]] = {}
    no_invalid_form: list[str] = []
    for operation in operations:
        seen = statuses[operation.label] = Counter()
        # Aim half the cases at things that exist, so the fuzzer gets past "not found".
        strategies = [operation.as_strategy(generation_mode=mode)]
        if "{run_id}" in operation.path:
            strategies += [operation.as_strategy(generation_mode=mode, path_parameters={"run_id": r}) for r in run_ids]
        if "{session_id}" in operation.path:
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters={"session_id": session_id}))

        @settings(SERVERS, max_examples=EXAMPLES, database=None, derandomize=True)
        @given(case=st.one_of(strategies), data=st.data())
        def call(case: schemathesis.Case, data: st.DataObject) -> None:
            if isinstance(case.body, dict) and "agent" in case.body and data.draw(st.booleans()):
                case.body["agent"] = data.draw(agents)
            response = case.call(base_url=served.base, timeout=60)
            seen[response.status_code] += 1
            case.validate_response(response, checks=[not_a_server_error])
            one_error_format(response)

        try:
            call()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE and not seen, operation.label
            no_invalid_form.append(operation.label)
    print(f"\n{mode.value} requests, responses by status:")
    for label, seen in statuses.items():
        print(f"  {label:<40} {dict(sorted(seen.items()))}")
    if no_invalid_form:
        print(f"  (no invalid form exists for: {', '.join(no_invalid_form)})")
    assert all(status < 500 for seen in statuses.values() for status in seen)


# -- every mounted profile, with hypothesis-generated raw requests --------------------------

ROUTES = {
    "": ["/", "/runs", "/runs/{run}", "/runs/{run}/events", "/runs/{run}/cancel", "/runs/{run}/input", "/agents",
         "/sessions", "/sessions/{session}", "/sessions/{session}/history", "/openapi.json"],
    "/acp": ["/ping", "/agents", "/agents/{agent}", "/runs", "/runs/{run}", "/runs/{run}/events",
             "/runs/{run}/cancel", "/sessions/{session}", "/sessions/{session}/history/{n}"],
    "/platform": ["/apps/{agent}/execute", "/apps/{agent}/execute/stream", "/apps/{agent}/sessions",
                  "/apps/{agent}/sessions/{session}", "/apps/{agent}/sessions/{session}/history",
                  "/apps/{agent}/traces/{run}/stream"],
    "/kore": ["/apps/{agent}/environments/{env}/runs/execute", "/apps/{agent}/environments/{env}/runs/{run}/status"],
}
KEYS = [
    "agent", "agent_name", "input", "mode", "session_id", "session", "metadata", "timeout", "parts", "content",
    "content_type", "role", "await_resume", "query", "stream", "sessionIdentity", "type", "value", "tokens",
    "messages", "reason", "limit", "after_seq", "idempotency_key", "session_policy", "debug", "name",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.sampled_from(["echo", "tools", "fails", "sync", "async", "stream", "user", "text/plain"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)


def no_urls(value: object) -> object:
    """Drop anything that could name a URL: the server must never be sent to call out of this machine."""
    if isinstance(value, dict):
        return {k: no_urls(v) for k, v in value.items() if "url" not in k.lower() and "webhook" not in k.lower()}
    if isinstance(value, list):
        return [no_urls(v) for v in value]
    if isinstance(value, str) and ("://" in value or value.lower().startswith(("http", "www"))):
        return "x"
    return value


@st.composite
def raw_requests(draw: st.DrawFn, ids: dict) -> dict[str, object]:
    prefix = draw(st.sampled_from(sorted(ROUTES)))
    # Mostly routes the mount has, sometimes another mount's (they must be refused cleanly too).
    routes = ROUTES[prefix] if draw(st.integers(0, 9)) else [r for rs in ROUTES.values() for r in rs]
    path = prefix + draw(st.sampled_from(routes))
    junk = st.text(min_size=1, max_size=12) | st.just("x" * 300)
    known = {"run": st.sampled_from(ids["run"]), "agent": st.sampled_from(ids["agent"]),
             "session": st.just(ids["session"]), "env": st.sampled_from(["dev", "prod"]),
             "n": st.integers(-2, 5).map(str)}
    for name, values in known.items():
        while "{" + name + "}" in path:
            value = draw(st.one_of(values, values, values, junk))
            path = path.replace("{" + name + "}", quote(value, safe=""), 1)
    body_kind = draw(st.sampled_from(["none", "json", "object", "bytes"]))
    body: bytes | None = None
    if body_kind == "json":
        body = json.dumps(no_urls(draw(json_values))).encode()
    elif body_kind == "object":
        body = json.dumps(no_urls(draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)))).encode()
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=64))
    headers = {}
    if draw(st.booleans()):
        headers["accept"] = "text/event-stream"
    if draw(st.booleans()):
        headers["last-event-id"] = draw(st.sampled_from(["0", "1", "-1", "abc", "99999999999999999999", "3"]))
    if body is not None:
        headers["content-type"] = draw(st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    query = draw(st.dictionaries(st.sampled_from(["after_seq", "limit", "status", "before", "session_id", "mode"]),
                                 st.sampled_from(["0", "-1", "1", "abc", "10000000", "", "running", "%00"]), max_size=3))
    likely = "POST" if path.endswith(("/execute", "/stream", "/cancel", "/input", "/sessions", "/runs")) else "GET"
    if path.endswith("/runs") and draw(st.booleans()):
        likely = "GET"
    method = draw(st.one_of(st.just(likely), st.just(likely), st.just(likely), st.sampled_from(["GET", "POST", "DELETE", "PUT"])))
    return {"method": method, "path": path, "body": body, "headers": headers, "query": query}


def test_raw_requests_to_every_profile_never_get_5xx(served: ServeProcess) -> None:
    run_ids, session_id = known_runs(served.base)
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=served.base, timeout=60) as client:

        @settings(SERVERS, max_examples=RAW_EXAMPLES, database=None, derandomize=True)
        @given(request=raw_requests({"run": run_ids, "session": session_id, "agent": ["echo", "tools", "fails"]}))
        def call(request: dict) -> None:
            response = client.request(
                request["method"], request["path"], content=request["body"], headers=request["headers"],
                params=request["query"],
            )
            statuses[response.status_code] += 1
            assert response.status_code < 500, (request, response.status_code, response.text[:500])
            if 400 <= response.status_code < 500 and response.headers.get("content-type", "").startswith("application/json"):
                assert "error" in response.json(), (request, response.text[:500])

        call()
    print(f"\nraw requests over {len(ROUTES)} mounts, responses by status: {dict(sorted(statuses.items()))}")
