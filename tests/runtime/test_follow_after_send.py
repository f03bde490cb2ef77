"""A sender that follows its run subscribes as soon as ``send`` returns, and passes the
accepted events as ``known`` instead of reading the log: so nothing of the run may be
committed between the hand-over and the return. It was, for the first message to a
new agent (its state change was awaited after the hand-over): on PostgreSQL a run
that failed at once ended in between, and its stream waited for ever (a 900 s
timeout in CI)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.events import TERMINAL_KINDS
from agentd.runtime.bus import Token


async def _follow_to_end(runtime: Runtime, sent: Any, *, subscription: Any) -> list[str]:
    after = sent.events[0].seq - 1
    kinds: list[str] = []
    # (A bound on a hang, not a timing: the run ends in milliseconds.)
    async with asyncio.timeout(60):
        async for item in runtime.follow(sent.session.id, after, known=sent.events,
                                         subscription=subscription):
            if item is None or isinstance(item, Token):
                continue
            kinds.append(item.kind)
            if item.run_id == sent.run.id and item.kind in TERMINAL_KINDS:
                return kinds
    raise AssertionError("the follow ended without the run's end")


@pytest.mark.parametrize("follow", [False, True])
async def test_the_first_run_of_a_new_agent_is_followed_to_its_end(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, follow: bool) -> None:
    await runtime.create_agent(name="fresh", settings={"script": [{"error": "boom"}]})
    real = runtime.agents.set_state_from

    async def slow_state_change(*args: Any, **kwargs: Any) -> Any:
        # The loop runs other tasks meanwhile (a busy store): a run handed over
        # before this returns gets to fail before the sender subscribes.
        for _ in range(200):
            await asyncio.sleep(0)
        return await real(*args, **kwargs)

    monkeypatch.setattr(runtime.agents, "set_state_from", slow_state_change)
    sent = await runtime.send("fresh", "k", "hi", stream=True, start=True, follow=follow)
    # As the native route does: subscribe with nothing awaited since the send.
    sub = sent.subscription if follow else runtime.subscribe(sent.session.id)
    kinds = await _follow_to_end(runtime, sent, subscription=sub)
    assert kinds[-1] == "run.failed", kinds
    assert (await runtime.get_run(sent.run.id))[0].status == "failed"
    assert (await runtime.get_agent("fresh")).state == "running"
