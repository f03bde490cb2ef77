"""Sandbox settings: bad values are refused naming the field; a backend this machine
cannot run is refused for an agent and stops a daemon configured with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import InvalidInput
from agentd.sandbox.backends import detect


@pytest.mark.parametrize(("sandbox", "field"), [
    ({"backend": "docker"}, "body.settings.sandbox.backend"),
    ({"limits": {"wall_s": 0}}, "body.settings.sandbox.limits"),
    ({"limits": {"gpu": 1}}, "body.settings.sandbox.limits"),
    ({"persistent_shell": "yes please"}, "body.settings.sandbox.persistent_shell"),
    ({"colour": "red"}, "body.settings.sandbox.colour"),
])
async def test_bad_agent_sandbox_settings(runtime: Runtime, sandbox: dict[str, Any],
                                          field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await runtime.create_agent(name="a", model="scripted", settings={"sandbox": sandbox})
    assert caught.value.details["errors"][0]["field"].startswith(field)
    with pytest.raises(Exception):  # noqa: B017 - nothing was stored
        await runtime.get_agent("a")


async def test_agent_limits_above_the_daemons_are_refused(runtime: Runtime) -> None:
    # Above the daemon's cap: refused naming the limit (it was silently capped).
    with pytest.raises(InvalidInput) as caught:
        await runtime.create_agent(name="a", model="scripted", tools=["shell"], settings={
            "sandbox": {"limits": {"wall_s": 5, "memory_mb": 10_000_000}}})
    assert [e["field"] for e in caught.value.details["errors"]] == [
        "body.settings.sandbox.limits.memory_mb"]
    assert "above the daemon's limit" in caught.value.message
    await runtime.create_agent(name="a", model="scripted", tools=["shell"], settings={
        "sandbox": {"limits": {"wall_s": 5}}})
    agent = await runtime.get_agent("a")
    from agentd.settings import stored_settings

    limits = runtime.sandboxes.limits(stored_settings(agent.settings).sandbox)
    assert limits.wall_s == 5  # lowered by the agent
    assert limits.memory_mb == runtime.settings.sandbox.limits.memory_mb  # the daemon's


async def test_an_unusable_backend_is_refused(tmp_path: Path) -> None:
    unusable = [name for name, why in detect().items()
                if why is not None and name in ("gvisor", "bubblewrap")]
    if not unusable:
        pytest.skip("every backend works here")
    name = unusable[0]
    runtime = await Runtime.open(Settings(home=tmp_path / "h1", demo_agent=False))
    try:
        with pytest.raises(InvalidInput) as caught:
            await runtime.create_agent(name="a", model="scripted",
                                       settings={"sandbox": {"backend": name}})
        assert "does not work on this daemon" in caught.value.message
    finally:
        await runtime.close()
    with pytest.raises(InvalidInput) as stopped:
        await Runtime.open(Settings(home=tmp_path / "h2", demo_agent=False,
                                    sandbox={"backend": name}))
    assert stopped.value.message.startswith("sandbox.backend:")


async def test_a_sessions_persistent_shell_lives_and_dies_with_it(runtime: Runtime) -> None:
    call = {"tool_calls": [{"name": "shell", "arguments": {"command": "cd /tmp; export A=1",
                                                            "persistent": True}}]}
    again = {"tool_calls": [{"name": "shell", "arguments": {"command": "echo $A; pwd",
                                                             "persistent": True}}]}
    await runtime.create_agent(name="a", model="scripted", tools=["shell"], settings={
        "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
        "script": [call, again, {"text": "done"}]})
    sent = await runtime.send("a", "k", "go")
    assert (await runtime.wait(sent.run.id)).status == "completed"
    outputs = [e.data["output"] for e in await runtime.read_events(sent.session.id)
               if e.kind == "tool.finished"]
    assert outputs[1].splitlines()[1:] == ["1", "/tmp"]
    assert len(runtime.sandboxes.shells) == 1
    await runtime.delete_session("a", "k")
    assert len(runtime.sandboxes.shells) == 0


async def test_a_non_root_process_backend_refuses_commands_unless_allowed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without root the process backend would run a command as the daemon's own user,
    who can read the daemon's token and database: refused unless the operator says."""
    from agentd.config import SandboxConfig
    from agentd.runtime.sandboxes import Sandboxes
    from agentd.sandbox.backends import BubblewrapBackend, Limits, ProcessBackend
    from agentd.security.policy import Policy
    from agentd.tools import ToolContext
    from agentd.tools.commands import shell

    monkeypatch.setattr("agentd.runtime.sandboxes.os.geteuid", lambda: 1000)
    boxes = Sandboxes(SandboxConfig())
    why = boxes.unconfined(ProcessBackend())
    assert why is not None and "daemon's own user" in why and "unconfined_ok" in why
    assert boxes.unconfined(BubblewrapBackend()) is None
    assert Sandboxes(SandboxConfig(unconfined_ok=True)).unconfined(ProcessBackend()) is None

    boxes._backends["process"] = ProcessBackend()
    boxes._prepared.add(tmp_path)  # (prepare gives the tree away only under root)
    from agentd.config import AgentSandbox

    sandbox = await boxes.for_run(AgentSandbox(backend="process"), Limits(),
                                  workspace=tmp_path, permissions=Policy(), shell_key="k")
    assert sandbox.backend is None
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=tmp_path, sandbox=sandbox)
    with pytest.raises(Exception) as refused:
        await shell.call({"command": "cat ~/.agentd/token"}, ctx, 10.0)
    assert getattr(refused.value, "code", None) == "sandbox_unavailable"
    assert "daemon's own user" in str(refused.value)
