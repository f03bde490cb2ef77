"""termo-agent's own bundled adapters (termo_agent.adapters.*, unmodified), served by a
real `agentd serve --adapter` process.

The model is agentd.testing.StubLLMServer, scripted to ask for one of the adapter's own
tools and then to answer: the adapter's framework (the OpenAI Agents SDK, or the Claude
Agent SDK and its Claude Code CLI) runs the tool and sends its result back, which the
stub records; the adapter's stream reaches the client as termo's frames and agentd's
session log as ``tool.started`` / ``tool.finished``. ``openai_agents`` has no tools at
all, so what is checked for it is how a model's tool call fails its turn
(docs/termo.md, "termo-agent's bundled adapters").
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon, read_events
from tests.protocols.termo.conftest import TOKEN, agentd_env, frames

from agentd.testing import StubLLMServer

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The adapter's agent, as `agentd serve --adapter` names it (docs/termo.md).
AGENT = "agent"


class WrappedDaemon(Daemon):
    """A daemon whose command runs under ``prefix`` (bwrap, for the platform adapter)."""

    def __init__(self, *args: Any, prefix: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def _spawn(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "agentd", "serve",
                 "--port", str(self.port), *self.args],
                env=self.env, cwd=self.home.parent, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


def serve(tmp_path: Path, adapter: str, env: dict[str, str], *,
          prefix: list[str] | None = None) -> Daemon:
    home = tmp_path / "home"
    full_env = {**agentd_env(home), **env}
    args = ("--adapter", adapter)
    if prefix:
        daemon: Daemon = WrappedDaemon(home, tmp_path / "agentd.log", env=full_env,
                                       args=args, prefix=prefix)
    else:
        daemon = Daemon(home, tmp_path / "agentd.log", env=full_env, args=args)
    return daemon


def send_stream(daemon: Daemon, message: str, key: str) -> list[dict[str, Any]]:
    answer = httpx.post(f"{daemon.url}/api/send", headers=AUTH, timeout=120,
                        json={"message": message, "session_key": key, "stream": True})
    assert answer.status_code == 200, answer.text
    return frames(answer.text)


def tool_events(daemon: Daemon, key: str) -> list[dict[str, Any]]:
    with daemon.client() as api:
        events = read_events(api, AGENT, key)
    return [e for e in events if e["kind"] in ("tool.started", "tool.finished",
                                               "run.completed", "run.failed")]


def openai_tool_results(stub: StubLLMServer) -> list[str]:
    """The tool results the adapter sent back to the stub (OpenAI Chat format)."""
    return [m["content"] for body in stub.requests for m in body.get("messages", [])
            if isinstance(m, dict) and m.get("role") == "tool"]


def assert_logged_call(logged: list[dict[str, Any]], name: str,
                       arguments: dict[str, Any], in_output: str) -> None:
    """agentd's log holds the call as the adapter reported it: one id for its start
    and end, its arguments, its output, not an error."""
    started, finished = logged[0]["data"], logged[1]["data"]
    assert started["call_id"] == finished["call_id"]
    assert started["name"] == finished["name"] == name
    assert started["arguments"] == arguments
    assert in_output in finished["output"] and finished["is_error"] is False


def anthropic_tool_results(stub: StubLLMServer) -> list[dict[str, Any]]:
    """The tool_result blocks the adapter sent back to the stub (Anthropic format), once
    each (a later request repeats the conversation)."""
    seen: dict[str, dict[str, Any]] = {}
    for body in stub.requests:
        for message in body.get("messages", []):
            content = message.get("content") if isinstance(message, dict) else None
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    seen.setdefault(block["tool_use_id"], block)
    return list(seen.values())


# --- platform_adapter: the OpenAI Agents SDK over the OpenAI client ---------------

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed")


@needs_bwrap
def test_platform_adapter_runs_its_read_file_tool(tmp_path: Path,
                                                  stub: StubLLMServer) -> None:
    # platform_adapter makes /home/sprite/workspace when imported (a Sprite's layout):
    # the daemon runs in a mount namespace where /home is a tmpfs holding a directory
    # of the test's as /home/sprite and the real /home's entries (a CI checkout and
    # its venv may live there), so the real /home is not touched.
    sprite = tmp_path / "sprite"
    (sprite / "agent").mkdir(parents=True)
    (sprite / "agent" / "config.json").write_text(json.dumps({"model": "stub-model"}))
    notes = tmp_path / "notes.txt"
    notes.write_text("the launch code is 4711\n")
    # --die-with-parent: killing bwrap (the test's cleanup) kills the daemon too.
    prefix = ["bwrap", "--die-with-parent", "--dev-bind", "/", "/", "--tmpfs", "/home"]
    for entry in sorted(os.listdir("/home")):
        if entry != "sprite":
            prefix += ["--bind", f"/home/{entry}", f"/home/{entry}"]
    prefix += ["--bind", str(sprite), "/home/sprite", "--"]
    daemon = serve(tmp_path, "termo_agent.adapters.platform_adapter:Adapter", {
        "TERMO_AGENT_DIR": "/home/sprite/agent",
        "TERMO_API_BASE": stub.base_url, "TERMO_API_KEY": "stub-key",
    }, prefix=prefix).start()
    try:
        stub.enqueue(tool_calls=[{"name": "read_file",
                                  "arguments": {"path": str(notes)}}])
        stub.enqueue(text="The code is 4711.")
        got = send_stream(daemon, "What is the code?", "p")
        kinds = [f["type"] for f in got]
        assert kinds[-1] == "done", got
        assert got[-1]["content"] == "The code is 4711."
        start = next(f for f in got if f["type"] == "tool_start")
        end = next(f for f in got if f["type"] == "tool_end")
        assert start["name"] == "read_file" and start["input"] == {"path": str(notes)}
        assert end["name"] == "read_file" and "4711" in end["content"]
        assert kinds.index("tool_start") < kinds.index("tool_end")
        # The SDK ran the tool: its result went back to the model.
        assert openai_tool_results(stub) == ["the launch code is 4711\n"]
        logged = tool_events(daemon, "p")
        assert [e["kind"] for e in logged] == ["tool.started", "tool.finished",
                                               "run.completed"], logged
        assert_logged_call(logged, "read_file", {"path": str(notes)}, "4711")
        assert logged[2]["data"]["output"] == "The code is 4711."
    finally:
        daemon.cleanup()


# --- claude_agents: the Claude Agent SDK driving the Claude Code CLI --------------


def claude_code_cli() -> Path | None:
    """The Claude Code CLI the Claude Agent SDK would run: the one its wheel carries
    (platform wheels do), else one on PATH."""
    spec = importlib.util.find_spec("claude_agent_sdk")  # (found, not imported)
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "_bundled" / "claude"
    if bundled.is_file():
        return bundled
    found = shutil.which("claude")
    return Path(found) if found else None


@pytest.mark.skipif(claude_code_cli() is None,
                    reason="claude-agent-sdk, or the Claude Code CLI it runs, is missing")
def test_claude_agents_adapter_runs_claude_codes_read_tool(tmp_path: Path,
                                                           stub: StubLLMServer) -> None:
    data = tmp_path / "termo-agent"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({
        "model": "claude-sonnet-4-5", "allowed_tools": ["Read"], "max_turns": 4}))
    notes = tmp_path / "notes.txt"
    notes.write_text("the launch code is 4711\n")
    daemon = serve(tmp_path, "termo_agent.adapters.claude_agents:Adapter", {
        "AGENT_DATA_DIR": str(data), "HOME": str(tmp_path / "claude-home"),
        "ANTHROPIC_BASE_URL": stub.root_url, "ANTHROPIC_API_KEY": "stub-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }).start()
    try:
        stub.enqueue(tool_calls=[{"name": "Read", "arguments": {"file_path": str(notes)}}])
        stub.enqueue(text="The code is 4711.")
        got = send_stream(daemon, "What is the code?", "c")
        kinds = [f["type"] for f in got]
        assert kinds[-1] == "done", got
        assert got[-1]["content"] == "The code is 4711."
        start = next(f for f in got if f["type"] == "tool_start")
        end = next(f for f in got if f["type"] == "tool_end")
        assert start["name"] == "Read" and start["input"] == {"file_path": str(notes)}
        assert end["name"] == "Read" and "4711" in end["content"]
        assert end["tool_use_id"] == start["tool_use_id"]
        # Claude Code ran the tool: its result went back to the model, for that call.
        results = anthropic_tool_results(stub)
        assert [r["tool_use_id"] for r in results] == [start["tool_use_id"]]
        assert "the launch code is 4711" in json.dumps(results[0]["content"])
        logged = tool_events(daemon, "c")
        assert [e["kind"] for e in logged] == ["tool.started", "tool.finished",
                                               "run.completed"], logged
        assert_logged_call(logged, "Read", {"file_path": str(notes)}, "4711")
        assert logged[1]["data"]["metadata"]["tool_use_id"] == start["tool_use_id"]
        assert logged[2]["data"]["output"] == "The code is 4711."

        # The adapter keeps one SDK client (one Claude Code process) per session,
        # connected during the first turn's run: the next turn, another run of the
        # daemon's, goes on with it, the model seeing the whole conversation.
        stub.enqueue(text="Still 4711.")
        again = httpx.post(f"{daemon.url}/api/send", headers=AUTH, timeout=120,
                           json={"message": "And now?", "session_key": "c"})
        assert again.status_code == 200, again.text
        assert again.json() == {"response": "Still 4711.", "session_key": "c"}
        assert "The code is 4711." in json.dumps(stub.requests[-1]["messages"])
        # Stopping the daemon shuts the adapter down, which closes its clients.
        assert daemon.signal_and_wait(signal.SIGTERM) == 0
        assert "Claude Agents adapter shut down" in daemon.log()
    finally:
        daemon.cleanup()


# --- openai_agents: the OpenAI Agents SDK over LiteLLM ----------------------------


def test_openai_agents_adapter_has_no_tools_so_a_tool_call_fails_its_turn(
        tmp_path: Path, stub: StubLLMServer) -> None:
    # openai_agents builds Agent(name, instructions, model) with no tools, and nothing
    # in its config adds one (list_tools() is []): it cannot run a tool call, whatever
    # the model asks. What it does with one is checked here: the SDK raises, agentd
    # ends the turn with an error frame and run.failed, and the session goes on.
    data = tmp_path / "termo-agent"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({
        "model": "openai/stub-model", "api_key": "stub-key", "api_base": stub.base_url}))
    daemon = serve(tmp_path, "termo_agent.adapters.openai_agents:Adapter", {
        "AGENT_DATA_DIR": str(data),
        # LiteLLM fetches its model price list from GitHub when imported, unless told
        # to use the copy it ships.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }).start()
    try:
        stub.enqueue(text="Hello there.")
        answer = httpx.post(f"{daemon.url}/api/send", headers=AUTH, timeout=120,
                            json={"message": "Hi", "session_key": "o"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"response": "Hello there.", "session_key": "o"}
        assert stub.requests[-1]["model"] == "stub-model"  # LiteLLM's openai/ route

        stub.enqueue(tool_calls=[{"name": "read_file", "arguments": {"path": "x"}}])
        got = send_stream(daemon, "What is the code?", "o")
        assert got[-1]["type"] == "error" and got[-1]["code"] == "adapter_error", got
        assert "Tool read_file not found in agent Assistant" in got[-1]["content"]
        assert not [f for f in got if f["type"] in ("tool_start", "tool_end")]
        assert openai_tool_results(stub) == []  # no tool ran

        stub.enqueue(text="Still here.")
        assert [f["type"] for f in send_stream(daemon, "Still there?", "o")][-1] == "done"
        logged = tool_events(daemon, "o")
        assert [e["kind"] for e in logged] == ["run.completed", "run.failed",
                                               "run.completed"], logged
        assert logged[1]["data"]["error"]["code"] == "adapter_error"
    finally:
        daemon.cleanup()
