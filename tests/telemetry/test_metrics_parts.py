"""The metrics' parts on their own: the bus's local feeds, bounded labels, route
labels, schedule lateness from a fire's message, and the store's commit hook."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentd.runtime.bus import EventBus, Lagged
from agentd.store import Store
from agentd.store.records import EventRecord
from agentd.telemetry.metrics import MAX_VALUES, Metrics, State, route_label


def event(kind: str, data: dict[str, object], *, seq: int = 1, at: float | None = None
          ) -> EventRecord:
    return EventRecord(session_id="s-1", seq=seq, kind=kind, data=data,
                       at=time.time() if at is None else at, run_id="r-1")


async def test_a_local_feed_skips_other_nodes_commits_and_asks_for_none() -> None:
    bus = EventBus()
    local = bus.subscribe_all(local=True)
    # Alone, a local feed does not make the log follower read other nodes' commits.
    assert bus.behind("s-1", 5) is None
    bus.publish([event("run.started", {}, seq=1)], remote=True)
    bus.publish([event("run.started", {}, seq=2)])
    got = await local.next(wait_s=0)
    assert not isinstance(got, Lagged) and got is not None and got.seq == 2
    assert await local.next(wait_s=0) is None
    every = bus.subscribe_all()
    assert bus.behind("s-1", 5) == 2  # a feed of every node's events wants them
    bus.publish([event("run.started", {}, seq=3)], remote=True)
    got = await every.next(wait_s=0)
    assert got is not None and not isinstance(got, Lagged) and got.seq == 3
    assert await local.next(wait_s=0) is None


def _metrics() -> Metrics:
    async def tenant(session_id: str) -> str | None:
        return "acme"

    async def state() -> State:
        return State(agents_by_state={}, awake=0, runs_by_state={}, node="n",
                     runs_here=0, queued_here=0, kernel={}, egress_held=0, egress_max=1)

    return Metrics(bus=EventBus(), tenant_of_session=tenant, state=state)


async def test_tool_names_past_the_bound_are_counted_as_other() -> None:
    metrics = _metrics()
    for n in range(MAX_VALUES + 5):
        await metrics.take(event("tool.finished", {
            "name": f"t{n}" + "x" * 500, "is_error": False, "duration_ms": 1.0}))
    families = {f.name: f for f in text_string_to_metric_families(
        (await metrics.render()).decode())}
    tools = {s.labels["tool"] for s in families["agentd_tool_calls"].samples
             if s.name == "agentd_tool_calls_total"}
    assert len(tools) == MAX_VALUES + 1 and "other" in tools
    assert max(len(t) for t in tools) == 120
    other = [s.value for s in families["agentd_tool_calls"].samples
             if s.name == "agentd_tool_calls_total" and s.labels["tool"] == "other"]
    assert other == [5.0]


async def test_a_schedule_fire_observes_how_late_it_was_accepted() -> None:
    metrics = _metrics()
    await metrics.take(event("message.user", {"content": "x", "schedule_id": "sch",
                                              "fire_at": 100.0}, at=102.5))
    await metrics.take(event("message.user", {"content": "not a fire"}, at=200.0))
    text = generate_latest(metrics.registry).decode()
    assert "agentd_schedule_lateness_seconds_count 1.0" in text
    assert "agentd_schedule_lateness_seconds_sum 2.5" in text


async def test_timed_steps_feed_the_duration_and_first_chunk_histograms() -> None:
    metrics = _metrics()
    await metrics.take(event("message.assistant", {
        "model": "openai:gpt-x", "usage": None, "duration_ms": 1500.0, "ttfc_ms": 200.0,
        "attempts": [{"model": "openai:gpt-x", "code": "model_unavailable"}]}))
    text = generate_latest(metrics.registry).decode()
    labels = 'gen_ai_provider_name="openai",gen_ai_request_model="gpt-x"'
    assert f"gen_ai_client_operation_duration_seconds_sum{{{labels}}} 1.5" in text
    assert f"gen_ai_client_operation_time_to_first_chunk_seconds_sum{{{labels}}} 0.2" in text
    assert f"agentd_model_step_retries_total{{{labels}}} 1.0" in text


def test_route_labels_of_the_request_layers_own_routes() -> None:
    assert route_label(r"^/a2a/([^/]+)$") == "/a2a/*"
    assert route_label(r"^/mcp$") == "/mcp"
    assert route_label(r"^/langgraph(?:/threads/(?P<t>[^/]+))?/runs/(?P<k>wait)$") == (
        "/langgraph*")


async def test_a_failing_commit_hook_does_not_fail_the_commit(store: Store) -> None:
    seen: list[tuple[float, int]] = []

    def hook(seconds: float, writes: int) -> None:
        seen.append((seconds, writes))
        raise RuntimeError("the hook is broken")

    store.engine.on_commit = hook
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    assert (await store.get_agent("a")).id == agent.id
    assert seen and seen[0][0] >= 0 and seen[0][1] >= 1
