"""Every example, run as its docstring says, against a normal (non-editable) install in a fresh
virtualenv, from the repository root; and the install prints no warning of the project's packaging.

The documented commands are read from each example's docstring, never restated here: a line
starting with `$ ` is a command, in order; `$ pip install ...` names what the example needs
(`.` or `.[extras]` there is this repository, as run from a clone's root: runengine is on no
package index, so a line naming `runengine` would fail as written and fails the test), the last
`$ ` line runs the example. When that line's
comment names a URL (`# then open http://127.0.0.1:8000/prefix/`), the example is a server: the
test gives it a free port ($PORT, and $UVICORN_PORT for uvicorn), then completes a run over HTTP
at that prefix. A command may start with environment assignments (`OPENAI_API_KEY=sk-...`);
an example whose agent calls a model gets an offline one instead (OFFLINE_MODELS: a local
OpenAI-compatible server, or Pydantic AI's TestModel). An example without a `$ ` line fails the test.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import threading
from collections.abc import Iterator

import attrs
import httpx
import pytest
import uvicorn

from kit import free_port, until_sync
from openai_server import FakeOpenAI, text

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
COMMAND = re.compile(r"^\s*\$ (?P<command>[^#]+?)\s*(?:#(?P<comment>.*))?$", re.MULTILINE)
URL = re.compile(r"http://127\.0\.0\.1:\d+(?P<prefix>/\S*)")
#: pip's words about itself (its version, this machine's index configuration), not the project's.
PIP_OWN = re.compile(r"\[notice\]|^WARNING: Location '[^']*' is ignored", re.IGNORECASE)
#: What a copy of the repository to install leaves out: virtualenvs, caches, build leftovers.
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "*.db", "*.db-*", "results")


@attrs.frozen
class Example:
    path: Path
    installs: tuple[tuple[str, ...], ...]  # the arguments of each `$ pip install`
    command: str  # the `$ ` line that runs it
    url_prefix: str | None  # where its API is, for a server

    @classmethod
    def read(cls, path: Path) -> Example:
        docstring = _docstring(path)
        lines = [(m["command"], m["comment"] or "") for m in COMMAND.finditer(docstring)]
        if not lines:
            pytest.fail(f"{path.name}: its docstring has no documented command (a line starting with '$ ')")
        installs = tuple(tuple(shlex.split(c)[2:]) for c, _ in lines if shlex.split(c)[:2] == ["pip", "install"])
        command, comment = lines[-1]
        url = URL.search(comment)
        return cls(path, installs, command, url["prefix"] if url else None)


@contextlib.contextmanager
def openai_compatible_server() -> Iterator[dict[str, str]]:
    """A local OpenAI-compatible server (tests/openai_server.py) answering every request with a text."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(FakeOpenAI(text("Hello ", "from a local model.")).app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the local OpenAI-compatible server did not start"
            time.sleep(0.05)
        yield {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "offline", "OPENAI_MODEL": "local"}
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def pydantic_ai_test_model() -> Iterator[dict[str, str]]:
    yield {"PYDANTIC_AI_MODEL": "test"}  # Pydantic AI's TestModel: calls every tool, then answers


#: The model each LLM example is given here in place of its documented API key (the tests are offline).
OFFLINE_MODELS = {
    "openai_agent": openai_compatible_server,
    "openai_agents_agent": openai_compatible_server,
    "pydantic_ai_agent": pydantic_ai_test_model,
}


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


#: The repository itself in a `pip install` run from its root: `.` or `.[extra,...]`.
THIS_CLONE = re.compile(r"^\.(?:\[(?P<extras>[^\]]*)\])?$")


def requirements(examples: list[Example], source: Path) -> list[str]:
    """One `pip install` for every example: `.[...]` (run from the repository root) becomes the
    copy of this repository."""
    extras: set[str] = set()
    others: set[str] = set()
    for example in examples:
        for argument in (a for install in example.installs for a in install):
            name = THIS_CLONE.match(argument)
            if name:
                extras.update(e.strip() for e in (name["extras"] or "").split(",") if e.strip())
            else:
                others.add(argument)
    project = f"{source}[{','.join(sorted(extras))}]" if extras else str(source)
    return [project, *sorted(others)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with this repository installed (not editable) with what the examples need;
    fails on any warning the project's packaging prints while installing."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # no build/ leftovers of the working tree
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    python = work / "venv" / "bin" / "python"
    # A current pip (as `make install` does): the one a venv bundles may hide what the build backend prints.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], check=True, capture_output=True, timeout=300)
    examples = [Example.read(path) for path in EXAMPLES]
    install = subprocess.run(
        [str(python), "-m", "pip", "install", *requirements(examples, source)],
        cwd=work, capture_output=True, text=True, timeout=900,
    )
    output = install.stdout + install.stderr
    assert install.returncode == 0, output
    warnings = [line for line in output.splitlines() if "warning" in line.lower() and not PIP_OWN.search(line.strip())]
    assert warnings == [], "\n".join(warnings)
    return work / "venv"


def test_every_example_documents_its_command() -> None:
    assert EXAMPLES, "no examples found"
    for path in EXAMPLES:
        example = Example.read(path)
        assert example.command.split()[0] != "pip", f"{path.name}: its last '$ ' line must run it, not install"
        for argument in (a for install in example.installs for a in install):
            # runengine is on no package index: `pip install runengine...` fails as written.
            assert not argument.startswith("runengine"), f"{path.name}: install {argument!r} from the clone: '.[...]'"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_documented_command_works_with_a_normal_install(path: Path, venv: Path, tmp_path: Path) -> None:
    example = Example.read(path)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PORT": str(port),
        "UVICORN_PORT": str(port),
        "RUNENGINE_STORE": f"sqlite:///{tmp_path / 'example.db'}",  # nothing written into the repository
    }
    env.pop("PYTHONPATH", None)  # only what the fresh virtualenv holds
    argv = shlex.split(example.command)
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):  # the command's own environment
        name, _, value = argv.pop(0).partition("=")
        env[name] = value
    env["RUNENGINE_PORT"] = str(port)  # `runengine serve`'s --port
    with contextlib.ExitStack() as stack:
        if path.stem in OFFLINE_MODELS:
            env.update(stack.enter_context(OFFLINE_MODELS[path.stem]()))
        run_example(example, argv, env, port, venv)


def run_example(example: Example, argv: list[str], env: dict[str, str], port: int, venv: Path) -> None:
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    assert argv[0].startswith(str(venv)), f"{example.path.name}: {argv[0]!r} is not the fresh virtualenv's"
    if example.url_prefix is None:  # a script: it runs to its end
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}{example.url_prefix}"
        with httpx.Client(base_url=base, timeout=30.0) as client:
            agents = wait_for_agents(client, process)
            agent = "echo" if "echo" in agents else agents[0]
            response = client.post("runs", json={"agent": agent, "input": "from a normal install"})
            assert response.status_code == 200, response.text
            run = response.json()
            if run["status"] == "waiting_for_input":  # an agent that asks first (an approval): say yes
                assert client.post(f"runs/{run['run_id']}/input", json={"content": True}).status_code == 200
                run = wait_until_ended(client, run["run_id"])
            assert run["status"] == "completed", run
            assert client.get(f"runs/{run['run_id']}/events").json()["ended"] is True
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Traceback" not in output, output


def wait_until_ended(client: httpx.Client, run_id: str) -> dict:
    def ended() -> dict | None:
        run = client.get(f"runs/{run_id}").json()
        return None if run["status"] in ("pending", "running") else run

    return until_sync(ended, timeout=60.0, every=0.1)


def wait_for_agents(client: httpx.Client, process: subprocess.Popen[str], timeout: float = 60.0) -> list[str]:
    """The served agents' names, once the server answers (fails at once if the process ended)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the example exited with {process.returncode}:\n{process.stdout.read() if process.stdout else ''}")
        try:
            response = client.get("agents")
            if response.status_code == 200:
                return [a["name"] for a in response.json()["agents"]]
        except httpx.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, "the example never answered"
        time.sleep(0.1)


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_the_installed_server_runs_from_the_root_and_from_another_folder(where: str, venv: Path, tmp_path: Path) -> None:
    """`runengine serve` of a normal install, started in the repository root (where ./runengine,
    without the adapters/ folder that installs as runengine.adapters, comes first on the path of
    `python -m`) and in another folder, serves the demo agents and completes a run."""
    port = free_port()
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    store = f"sqlite:///{tmp_path / 'served.db'}"
    argv = [str(venv / "bin" / "python"), "-m", "runengine.adapters.cli", "serve", "--store", store, "--port", str(port)]
    cwd = ROOT if where == "root" else tmp_path
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=30.0) as client:
            assert "echo" in wait_for_agents(client, process)
            run = client.post("runs", json={"agent": "echo", "input": f"served from the {where}"}).json()
            assert run["status"] == "completed", run
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, f"{' '.join(argv)}:\n{output}"
    assert "Traceback" not in output, output
