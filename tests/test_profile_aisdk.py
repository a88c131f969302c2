"""The /ai profile with the real AI SDK client: the `ai` npm package (pinned in tests/js) in Node drives
DefaultChatTransport, readUIMessageStream and useChat's AbstractChat against a real `runengine serve`
on SQLite and on PostgreSQL, with API keys on. Where Node or npm is absent the tests skip saying so,
except with CI=true, where they fail.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faultkit import ServeProcess
from jskit import JS, node_and_npm, npm_ci
from kit import until_sync

pytestmark = pytest.mark.server  # it serves over real sockets or starts processes

KEY = "sk-alice-1"
AUTH = {"authorization": f"Bearer {KEY}"}
#: The text the echo agent streams back, a word every 50 ms: long enough to be cut in the middle.
WORDS = " ".join(f"word{i}" for i in range(100))


@pytest.fixture(scope="module")
def js_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/js installed with `npm ci` (its lock pins `ai`) in a folder of its own."""
    _, npm = node_and_npm("the AI SDK client tests")
    folder = tmp_path_factory.mktemp("js")
    for name in ("package.json", "package-lock.json", "aisdk_driver.mjs"):
        shutil.copy(JS / name, folder / name)
    npm_ci(folder, npm)
    return folder


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`runengine serve` with an API key: the demo agents on SQLite, or (--app) on PostgreSQL."""
    folder = tmp_path_factory.mktemp(request.param)
    args = ["--api-key", f"alice={KEY}", "--log-level", "warning"]
    env: dict[str, str] = {}
    if request.param == "sqlite":
        args += ["--store", f"sqlite:///{folder / 'runs.db'}"]
    else:
        dsn = request.getfixturevalue("pg_dsn")
        env = {"RUNENGINE_TEST_STORE": f"{dsn}?schema=s_aisdk", "PYTHONPATH": str(Path(__file__).parent)}
        args += ["--app", "aisdk_agents:make_engine"]
    process = ServeProcess(args, folder / "serve.log", env=env)
    process.start()
    try:
        yield process
    finally:
        process.kill(signal.SIGTERM)


def options(server: ServeProcess, scenario: str, **extra: Any) -> str:
    return json.dumps({"scenario": scenario, "api": server.base + "/ai/chat", "headers": AUTH,
                       "chatId": f"chat-{uuid.uuid4().hex[:8]}", **extra})


def drive(js_client: Path, server: ServeProcess, scenario: str, **extra: Any) -> Any:
    """Run one scenario of tests/js/aisdk_driver.mjs; its result."""
    result = subprocess.run(
        ["node", "aisdk_driver.mjs", options(server, scenario, **extra)],
        cwd=js_client, capture_output=True, text=True, timeout=120,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and lines and "result" in lines[-1], f"{result.stdout}\n{result.stderr}"
    return lines[-1]["result"]


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def run_of(server: ServeProcess, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.base}/runs/{run_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def log_types(server: ServeProcess, run_id: str) -> list[str]:
    response = httpx.get(f"{server.base}/runs/{run_id}/events", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return [event["type"] for event in response.json()["events"]]


def test_a_turn_assembles_into_the_agents_text(js_client: Path, server: ServeProcess) -> None:
    result = drive(js_client, server, "send", text="hello from the AI SDK", agent="echo")
    message = result["message"]
    assert message["role"] == "assistant"
    assert text_of(message) == "hello from the AI SDK"
    assert result["errors"] == []
    assert result["types"][0] == "start" and result["types"][-1] == "finish"
    assert {"start-step", "text-start", "text-delta", "text-end", "finish-step"} <= set(result["types"])
    assert run_of(server, message["id"])["status"] == "completed"  # the message is the run


def test_thoughts_and_a_tool_call(js_client: Path, server: ServeProcess) -> None:
    message = drive(js_client, server, "send", text="something spicy", agent="pizza")["message"]
    kinds = [part["type"] for part in message["parts"]]
    tool = next(part for part in message["parts"] if part["type"] == "tool-get_menu")
    assert tool["state"] == "output-available"
    assert tool["input"] == {"restaurant": "Da Michele"} and tool["output"]["diavola"] == 9.5
    assert kinds.count("step-start") == 2  # the answer after the tool result is a step of its own
    assert kinds.index("tool-get_menu") < kinds.index("text")
    reasoning = [part["text"] for part in message["parts"] if part["type"] == "reasoning"]
    assert reasoning[0] == "The customer asks for: something spicy." and len(reasoning) == 3
    assert text_of(message) == "I recommend the diavola (9.50 EUR). Buon appetito!"


def test_a_server_killed_mid_stream_then_reconnect_gives_every_word_once(js_client: Path, server: ServeProcess) -> None:
    driver = subprocess.Popen(
        ["node", "aisdk_driver.mjs", options(server, "crash", text=WORDS, agent="echo", after=40)],
        cwd=js_client, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        ready = json.loads(driver.stdout.readline() or "{}")
        assert "ready" in ready, driver.stderr.read() if driver.stderr else ""
        server.kill(signal.SIGKILL)  # mid-stream: the run's message is half streamed
        server.start()
        driver.stdin.write("go\n")
        driver.stdin.flush()
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert "result" in result, f"{out}\n{err}"
    before, again = result["result"]["before"], result["result"]["reconnected"]
    cut = text_of(before["message"])
    assert 40 <= len(cut) < len(WORDS) and WORDS.startswith(cut)  # cut off in the middle
    assert again is not None, "the chat had no active run after the restart"
    assert text_of(again["message"]) == WORDS  # every word, once
    assert again["message"]["id"] == before["message"]["id"]  # the same message, replayed
    assert again["types"][0] == "start" and again["types"][-1] == "finish"
    run_id = before["message"]["id"]
    until_sync(lambda: run_of(server, run_id)["status"] == "completed", timeout=30)
    assert "message.discarded" in log_types(server, run_id)  # the half-streamed message was dropped


def test_stop_cancels_the_run(js_client: Path, server: ServeProcess) -> None:
    result = drive(js_client, server, "stop", text=WORDS, agent="echo")
    assert result["stopped"]["status"] == 200 and result["stopped"]["body"]["status"] == "cancelled"
    run_id = result["message"]["id"]
    assert result["stopped"]["body"]["run_id"] == run_id
    assert result["types"][-1] == "abort"
    assert run_of(server, run_id)["status"] == "cancelled"
    text = text_of(result["message"])
    assert text and WORDS.startswith(text) and text != WORDS


def test_an_approval_round_trip(js_client: Path, server: ServeProcess) -> None:
    result = drive(js_client, server, "approve", text="ship the release", agent="approval")
    asked = [part for part in result["before"][-1]["parts"] if part["type"] == "tool-ask"]
    assert [part["state"] for part in asked] == ["approval-requested"]
    assert asked[0]["input"] == {"question": "Approve: ship the release?", "options": ["yes", "no"]}
    messages = result["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"], messages  # the answer continues the message
    answered = [part for part in messages[-1]["parts"] if part["type"] == "tool-ask"]
    assert [part["state"] for part in answered] == ["output-available"]
    assert answered[0]["output"] == {"approved": True}
    assert text_of(messages[-1]) == "I am about to ship the release.Approved: done."
    assert result["error"] is None
    assert run_of(server, messages[-1]["id"])["status"] == "completed"


def test_reconnect_to_a_chat_without_an_active_run_is_nothing(js_client: Path, server: ServeProcess) -> None:
    assert drive(js_client, server, "reconnect") is None  # a new chat (useChat's resume on page load)
    chat = f"chat-{uuid.uuid4().hex[:8]}"
    done = drive(js_client, server, "send", text="short", agent="echo", chatId=chat)
    assert run_of(server, done["message"]["id"])["status"] == "completed"
    assert drive(js_client, server, "reconnect", chatId=chat) is None  # its run has ended
