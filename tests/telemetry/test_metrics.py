"""GET /metrics (agentd.telemetry.metrics): a real runtime and app on SQLite (and
PostgreSQL with AGENTD_TEST_POSTGRES_URL), turns of the offline ``scripted`` model
with a tool, the figures read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.conftest import asgi_client, eventually

from agentd.assembly import Runtime
from agentd.config import Settings

#: The catalog's price of the test model (per million tokens).
PRICED = ('[models."scripted:priced"]\ncontext_window = 100000\nmax_output_tokens = 1000\n'
          "input = 2\noutput = 4\n")
TOOL_TURN = '/tool calculator {"expression": "6 * 7"}'
#: The labels any metric may carry (never an id).
ALLOWED_LABELS = {"gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type",
                  "tenant", "lane", "tool", "outcome", "state", "method", "route",
                  "status", "node", "version", "le", "backend", "reason"}


def parse(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


async def scrape(api: httpx.AsyncClient) -> list[Sample]:
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def settings_with(settings: Settings, store_url: str, **extra: Any) -> Settings:
    return Settings(**{**settings.model_dump(exclude_unset=True),
                       "database_url": store_url, **extra})


@pytest.fixture
def priced(settings: Settings, store_url: str) -> Settings:
    """The test's settings with tenant ``acme`` and the priced model."""
    settings = settings_with(settings, store_url, tenants={"acme": {}})
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text(PRICED)
    return settings


@pytest.fixture
async def rt(priced: Settings) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(priced)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
async def api(priced: Settings, rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(priced, rt) as client:
        yield client


async def turn(api: httpx.AsyncClient, agent: str, key: str, content: str
               ) -> dict[str, Any]:
    response = await api.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                              json={"content": content, "wait": True})
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def test_turns_move_the_metrics_by_exactly_the_turns_done(
        api: httpx.AsyncClient, rt: Runtime) -> None:
    made = await api.post("/v1/agents", json={
        "name": "calc", "model": "scripted:priced", "tools": ["calculator"],
        "settings": {"tenant": "acme"}})
    assert made.status_code == 201, made.text
    before = await scrape(api)

    runs = [await turn(api, "calc", "s1", TOOL_TURN), await turn(api, "calc", "s2", "hi"),
            await turn(api, "calc", "s1", TOOL_TURN)]
    assert all(r["status"] == "completed" for r in runs), runs
    # What the log says the turns did: the figures must agree exactly.
    steps: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] = []
    ids: set[str] = {(await rt.stored_agent("calc")).id}
    ids |= {run.id for run, _, _ in (await rt.list_runs(agent="calc")).runs}
    for key in ("s1", "s2"):
        _, session = await rt.get_session("calc", key)
        ids.add(session.id)
        events = await rt.read_events(session.id)
        steps += [e.data for e in events if e.kind == "message.assistant"]
        tools += [e.data for e in events if e.kind == "tool.finished"]
    assert len(ids) == 6
    assert (len(steps), len(tools)) == (5, 2)  # a tool turn is two model calls

    async def caught_up() -> list[Sample] | None:
        samples = await scrape(api)
        done = value(samples, "agentd_runs_finished_total", tenant="acme") - value(
            before, "agentd_runs_finished_total", tenant="acme")
        return samples if done == 3 else None

    after = await eventually(caught_up)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    genai = {"gen_ai_provider_name": "scripted", "gen_ai_request_model": "priced"}
    assert moved("agentd_runs_finished_total", tenant="acme", outcome="completed") == 3
    assert moved("agentd_runs_started_total", tenant="acme") == 3
    assert moved("agentd_tool_calls_total", tool="calculator", outcome="ok") == 2
    assert moved("gen_ai_execute_tool_duration_seconds_count", tool="calculator") == 2
    assert moved("gen_ai_execute_tool_duration_seconds_sum", tool="calculator") == (
        pytest.approx(sum(t["duration_ms"] for t in tools) / 1000.0))
    for kind in ("input", "output"):
        assert moved("gen_ai_client_token_usage_count", **genai,
                     gen_ai_token_type=kind) == 5
        tokens = sum(s["usage"][f"{kind}_tokens"] for s in steps)
        assert moved("gen_ai_client_token_usage_sum", **genai,
                     gen_ai_token_type=kind) == tokens
        assert moved("agentd_model_tokens_total", tenant="acme", **genai,
                     gen_ai_token_type=kind) == tokens
    cost = sum(s["usage"]["cost_usd"] for s in steps)
    assert cost > 0
    assert moved("agentd_model_cost_usd_total", tenant="acme", **genai) == (
        pytest.approx(cost))
    lane = steps[0]["queue"]["lane"]
    assert moved("agentd_lane_wait_seconds_count", lane=lane) == 5
    # The model call's duration and first chunk: only when the steps carry them.
    timed = [s for s in steps if "duration_ms" in s]
    assert moved("gen_ai_client_operation_duration_seconds_count", **genai) == len(timed)
    assert moved("agentd_http_requests_total", method="POST",
                 route="/v1/agents/{name}/sessions/{key}/messages") == 3
    assert moved("agentd_http_requests_total", method="POST", route="/v1/agents",
                 status="201") == 0  # (made before the first scrape)
    assert moved("agentd_http_requests_total", method="GET", route="/metrics",
                 status="200") >= 1
    assert moved("agentd_store_commit_seconds_count") > 0
    assert value(after, "agentd_model_calls_total") >= 5
    assert value(after, "agentd_agents") == 1
    assert value(after, "agentd_agents_awake") + value(after, "agentd_agents_asleep") == 1
    assert value(after, "agentd_runs", state="running") == 0
    assert value(after, "agentd_approvals_waiting") == 0
    assert value(after, "agentd_leases_held", node=rt.node_id) == 0
    assert value(after, "agentd_lane_queue_depth", lane=lane) == 0
    # No label is an id, and only the low-cardinality labels are used.
    for sample in after:
        assert set(sample.labels) <= ALLOWED_LABELS, sample
        assert not ids & set(sample.labels.values()), sample


async def test_a_hostile_tool_name_does_not_break_the_format(
        api: httpx.AsyncClient, rt: Runtime) -> None:
    from agentd.llm.scripted import enqueue

    evil = 'x"} 1\nevil_metric{a="\\'
    made = await api.post("/v1/agents", json={"name": "odd", "model": "scripted"})
    assert made.status_code == 201, made.text
    enqueue({"tool_calls": [{"name": evil, "arguments": {}}]}, {"text": "done"},
            agent="odd")
    await turn(api, "odd", "k", "go")

    async def counted() -> list[Sample] | None:
        samples = await scrape(api)
        return samples if value(samples, "agentd_tool_calls_total", tool=evil) == 1 else None

    samples = await eventually(counted)
    assert not any(s.name.startswith("evil") for s in samples)


async def test_who_may_read_the_metrics(priced: Settings, rt: Runtime) -> None:
    async with asgi_client(priced, rt) as api:
        async def mint(name: str, role: str, **scope: Any) -> dict[str, str]:
            made = await api.post("/v1/tokens", json={"name": name, "role": role, **scope})
            assert made.status_code == 201, made.text
            return {"Authorization": f"Bearer {made.json()['token']}"}

        operator = await mint("ops", "operator")
        member = await mint("member", "member")
        scoped = await mint("acme-ops", "operator", tenant="acme")
        assert (await api.get("/metrics", headers=operator)).status_code == 200
        refused = await api.get("/metrics", headers=member)
        assert refused.status_code == 403
        assert "operator" in refused.json()["error"]["message"]
        refused = await api.get("/metrics", headers=scoped)
        assert refused.status_code == 403
        assert "every agent" in refused.json()["error"]["message"]
        assert (await api.get("/metrics", headers={"Authorization": ""})).status_code == 401
        assert (await api.get("/metrics", headers={
            "Authorization": "Bearer nope"})).status_code == 401


async def test_metrics_off_is_a_404_and_nothing_runs(settings: Settings,
                                                     store_url: str) -> None:
    settings = settings_with(settings, store_url, telemetry={"metrics": False})
    runtime = await Runtime.open(settings)
    try:
        assert runtime.metrics is None
        assert runtime.store.engine.on_commit is None
        assert not any(feed.local for feed in runtime.bus._feeds)
        async with asgi_client(settings, runtime) as api:
            response = await api.get("/metrics")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
    finally:
        await runtime.close()


async def test_metrics_listen_serves_without_a_token(settings: Settings,
                                                     store_url: str) -> None:
    settings = settings_with(settings, store_url,
                             telemetry={"metrics_listen": "127.0.0.1:0"})
    runtime = await Runtime.open(settings)
    try:
        assert runtime.metrics is not None and runtime.metrics.listening is not None
        port = runtime.metrics.listening[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            response = await plain.get("/metrics")
            assert response.status_code == 200
            names = {f.name for f in text_string_to_metric_families(response.text)}
            assert {"agentd_runs", "gen_ai_client_token_usage"} <= names
            assert (await plain.head("/metrics")).status_code == 200
            assert (await plain.get("/v1/agents")).status_code == 404
            assert (await plain.post("/metrics")).status_code == 405
        # A client that sends half a request is dropped, and the next is answered.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metr")
        await writer.drain()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            assert (await plain.get("/metrics")).status_code == 200
        writer.close()
    finally:
        await runtime.close()


async def test_a_listen_address_in_use_is_refused_saying_so(
        settings: Settings, store_url: str, tmp_path: Path) -> None:
    from agentd.errors import InvalidInput

    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = settings_with(settings, store_url,
                             telemetry={"metrics_listen": f"127.0.0.1:{port}"})
    try:
        with pytest.raises(InvalidInput, match="metrics_listen"):
            await Runtime.open(settings)
    finally:
        server.close()
        await server.wait_closed()


async def test_sandbox_starts_and_kills_are_counted(api: httpx.AsyncClient, rt: Runtime
                                                    ) -> None:
    def shell(command: str, **more: Any) -> dict[str, Any]:
        return {"tool_calls": [{"name": "shell", "arguments": {"command": command,
                                                               **more}}]}

    for name, persistent in (("one-shot", False), ("kept", True)):
        made = await api.post("/v1/agents", json={
            "name": name, "model": "scripted", "tools": ["shell"], "settings": {
                "sandbox": {"persistent_shell": persistent},
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [shell("true"), shell("sleep 30", timeout_s=1), {"text": "ok"}]}})
        assert made.status_code == 201, made.text
    before = await scrape(api)
    for name in ("one-shot", "kept"):
        assert (await turn(api, name, "k", "go"))["status"] == "completed"
    after = await scrape(api)
    backend = rt.sandboxes.stats.starts and next(iter(rt.sandboxes.stats.starts))
    assert backend, "no sandbox start was counted"

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The one-shot agent: a sandbox per command (2); the kept one: a shell, then a new
    # one after the kill ends it (it starts again at the next command, if any: 1).
    assert moved("agentd_sandbox_start_seconds_count", backend=backend) >= 3
    assert moved("agentd_sandbox_start_seconds_sum", backend=backend) > 0
    assert moved("agentd_sandbox_kills_total", backend=backend, reason="wall_time") == 2
    # Each call's event says where its command ran, and why it was killed; so does
    # its trace span.
    events = (await api.get("/v1/agents/kept/sessions/k/events")).json()["events"]
    done = [e["data"] for e in events if e["kind"] == "tool.finished"]
    assert [d["sandbox"] for d in done] == [{"backend": backend},
                                            {"backend": backend, "killed": "wall_time"}]
    run_id = events[-1]["run_id"]
    trace = (await api.get(f"/v1/runs/{run_id}/trace")).json()
    tools = [{a["key"]: a["value"] for a in s["attributes"]}
             for s in trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
             if s["name"] == "execute_tool shell"]
    assert [t.get("agentd.sandbox.killed") for t in tools] == [
        None, {"stringValue": "wall_time"}]
    assert all(t["agentd.sandbox.backend"] == {"stringValue": backend} for t in tools)
