"""The seam new services use: tools see where their run's message came from
(``ToolContext.origin``) and the services registered for tools
(``ToolContext.services``); a service's context section reaches the instructions."""

from __future__ import annotations

from typing import Any

from agentd.assembly import Runtime
from agentd.store.records import AgentRecord
from agentd.tools import ToolContext, tool


class Clock:
    """A service of the test's (tools find services by their class)."""

    def __repr__(self) -> str:
        return "the clock service"


class Calendar:
    """A service nobody provided."""


async def test_a_tool_sees_its_runs_origin_and_the_registered_services(
        runtime: Runtime) -> None:
    seen: list[tuple[dict[str, Any], Any]] = []
    clock = Clock()

    @tool
    def probe(ctx: ToolContext) -> str:
        """Report what the call knows."""
        assert ctx.service(Calendar) is None
        seen.append((dict(ctx.origin), ctx.service(Clock)))
        return "ok"

    runtime.tools.register(probe)
    runtime.executors.provide(clock)
    await runtime.create_agent(name="a", tools=["probe"])
    plain = await runtime.send("a", "k", "/tool probe {}")
    await runtime.wait(plain.run.id)
    fired = await runtime.send("a", "k", "/tool probe {}",
                               origin={"schedule_id": "sch_x", "fire_at": 12.5})
    await runtime.wait(fired.run.id)
    assert seen == [({}, clock), ({"schedule_id": "sch_x", "fire_at": 12.5}, clock)]


async def test_a_context_section_is_added_to_every_runs_instructions(
        runtime: Runtime, systems: list[str]) -> None:
    async def skills(agent: AgentRecord, plan: Any) -> str | None:
        return f"<skills of {agent.name}>" if agent.name == "a" else None

    runtime.executors.sections.append(skills)
    await runtime.create_agent(name="a", instructions="Be brief.")
    await runtime.create_agent(name="b", instructions="Be long.")
    for name in ("a", "b"):
        result = await runtime.send(name, "k", "hi")
        await runtime.wait(result.run.id)
    assert "Be brief.\n\n<skills of a>" in systems[0]
    assert "<skills" not in systems[1] and "Be long." in systems[1]
