"""The concurrency contract under many concurrent clients, with every mode mixed.

48 clients send 12 messages each to 4 sessions, each message with a random mode
(enqueue, reject, interrupt, steer), while runs of a few model steps are under way.
Then the logs are checked: nothing acknowledged lost or duplicated, nothing refused
written, never two runs of one session at once, runs started in the order they were
queued, every run ended.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from agentd.assembly import Runtime
from agentd.errors import SessionBusy
from agentd.store.records import EventRecord

CLIENTS = 48
PER_CLIENT = 12
SESSIONS = 4
TERMINAL = {"run.completed", "run.failed", "run.cancelled", "run.interrupted"}


async def test_modes_hold_under_many_concurrent_clients(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["calculator"], settings={"script": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}],
         "delay_ms": 4},
        {"text": "done", "delay_ms": 6}]})
    accepted: dict[str, tuple[str, str, str]] = {}  # content -> (session, mode, run id)
    rejected: list[str] = []
    steered: dict[str, str] = {}  # content -> run id it joined

    async def client(n: int) -> None:
        rng = random.Random(n)
        for i in range(PER_CLIENT):
            key = f"s{rng.randrange(SESSIONS)}"
            mode = rng.choice(["enqueue", "enqueue", "reject", "interrupt", "steer"])
            content = f"c{n}-{i}"
            try:
                sent = await runtime.send("a", key, content, mode=mode)
            except SessionBusy:
                rejected.append(content)
            else:
                accepted[content] = (key, mode, sent.run.id)
                if any(e.data.get("steer") for e in sent.events):
                    steered[content] = sent.run.id
            await asyncio.sleep(rng.random() * 0.01)

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(CLIENTS))), 120)
    assert len(accepted) + len(rejected) == CLIENTS * PER_CLIENT
    assert rejected and steered and len(accepted) > len(steered)  # every path was taken

    runs = {run_id for _, _, run_id in accepted.values()}
    for run_id in runs:
        run = await asyncio.wait_for(runtime.wait(run_id), 60)
        assert run.terminal, run

    # Every session got messages (48 x 12 over 4): each log is read and checked; none
    # may be passed over.
    assert {key for key, _, _ in accepted.values()} == {f"s{s}" for s in range(SESSIONS)}
    for s in range(SESSIONS):
        _, session = await runtime.get_session("a", f"s{s}")
        log = await runtime.read_events(session.id)
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        _check_session(log, {c: v for c, v in accepted.items() if v[0] == f"s{s}"},
                       set(rejected), steered)


def _check_session(log: list[EventRecord], accepted: dict[str, tuple[str, str, str]],
                   rejected: set[str], steered: dict[str, str]) -> None:
    users = [e for e in log if e.kind == "message.user"]
    contents = Counter(e.data["content"] for e in users)
    # Every acknowledged message exactly once; nothing refused was written.
    assert set(contents) == set(accepted), set(contents) ^ set(accepted)
    assert max(contents.values()) == 1
    assert not rejected & set(contents)
    for event in users:
        content = event.data["content"]
        assert event.run_id == accepted[content][2]
        assert bool(event.data.get("steer")) == (content in steered)

    # One run at a time; each run's events only while it is the active one; runs
    # start in the order they were queued; every run queued here ends exactly once.
    active: str | None = None
    queued: list[str] = []
    started: list[str] = []
    ended: Counter[str] = Counter()
    for event in log:
        if event.kind == "run.queued":
            queued.append(event.run_id or "")
        elif event.kind == "run.started":
            assert active is None, f"run {event.run_id} started while {active} ran"
            active = event.run_id
            started.append(active or "")
        elif event.kind in TERMINAL:
            ended[event.run_id or ""] += 1
            if event.run_id == active:
                active = None
            else:
                # Only a run that never started may end while another is active.
                assert event.run_id not in started, event
        elif event.run_id is not None and event.kind != "message.user":
            assert event.run_id == active, f"{event.kind} of {event.run_id} while {active}"
    assert active is None
    assert set(ended) == set(queued) and set(ended.values()) == {1}
    assert started == [r for r in queued if r in started]  # FIFO
    for content, (_, mode, run_id) in accepted.items():
        if mode == "interrupt" and content not in steered:
            assert run_id in queued
