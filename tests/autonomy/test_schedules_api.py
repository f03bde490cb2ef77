"""/v1/agents/{name}/schedules and /v1/schedules through the app (ASGITransport), on
SQLite and PostgreSQL: the life of a schedule, and every bad request a clear 4xx
naming the field, with nothing created."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app
from agentd.testing import FakeClock


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    await runtime.schedules.stop()  # nothing fires while the test looks
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        for name in ("a", "b"):
            made = await c.post("/v1/agents", json={
                "name": name, "model": "scripted",
                "settings": {"schedules": {"min_interval_s": 300, "max_per_agent": 3}}})
            assert made.status_code == 201, made.text
        yield c


def error_of(response: httpx.Response) -> tuple[str, str | None]:
    error: dict[str, Any] = response.json()["error"]
    errors = error.get("details", {}).get("errors") or [{}]
    return error["code"], errors[0].get("field")


async def test_create_read_list_pause_resume_delete(client: httpx.AsyncClient) -> None:
    made = await client.post("/v1/agents/a/schedules", json={
        "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "session": "daily",
        "content": "Morning summary", "missed": "skip"})
    assert made.status_code == 201, made.text
    sched = made.json()
    assert sched["id"].startswith("sch_") and sched["agent"] == "a"
    assert sched["enabled"] is True and sched["paused_reason"] is None
    assert sched["overlap"] == "skip" and sched["missed"] == "skip"  # agent default, given
    assert sched["created_by"].startswith("api")
    first = datetime.fromisoformat(sched["next_fire_at"])
    local = first.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5

    got = await client.get(f"/v1/schedules/{sched['id']}", params={"next": 5})
    assert got.status_code == 200
    times = [datetime.fromisoformat(t) for t in got.json()["next"]]
    assert len(times) == 5 and times == sorted(times) and times[0] == first
    assert all(t.astimezone(local.tzinfo).weekday() < 5 for t in times)

    every = await client.post("/v1/agents/b/schedules", json={
        "every_s": 3600, "content": "hourly"})
    assert every.status_code == 201 and every.json()["session"] is None
    mine = await client.get("/v1/agents/a/schedules")
    assert [s["id"] for s in mine.json()["schedules"]] == [sched["id"]]
    everyone = await client.get("/v1/schedules")
    assert [s["agent"] for s in everyone.json()["schedules"]] == ["a", "b"]
    only_b = await client.get("/v1/schedules", params={"agent": "b"})
    assert [s["content"] for s in only_b.json()["schedules"]] == ["hourly"]
    page = await client.get("/v1/schedules", params={"limit": 1})
    assert page.json()["next_after"] == sched["id"]
    rest = await client.get("/v1/schedules", params={"limit": 1,
                                                     "after": page.json()["next_after"]})
    assert [s["agent"] for s in rest.json()["schedules"]] == ["b"]

    paused = await client.patch(f"/v1/schedules/{sched['id']}", json={"enabled": False})
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False and paused.json()["next_fire_at"] is None
    assert paused.json()["paused_reason"] == "paused by request"
    resumed = await client.patch(f"/v1/schedules/{sched['id']}", json={"enabled": True})
    assert resumed.json()["enabled"] is True and resumed.json()["paused_reason"] is None
    assert resumed.json()["next_fire_at"] == sched["next_fire_at"]

    changed = await client.patch(f"/v1/schedules/{sched['id']}", json={
        "every_s": 600, "content": "now every 10 minutes"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron"] is None and changed.json()["every_s"] == 600
    assert changed.json()["content"] == "now every 10 minutes"

    fires = await client.get(f"/v1/schedules/{sched['id']}/fires")
    assert fires.status_code == 200 and fires.json() == {"fires": []}
    gone = await client.delete(f"/v1/schedules/{sched['id']}")
    assert gone.status_code == 204
    missing = await client.get(f"/v1/schedules/{sched['id']}")
    assert missing.status_code == 404 and error_of(missing)[0] == "schedule_not_found"
    again = await client.delete(f"/v1/schedules/{sched['id']}")
    assert again.status_code == 404


_PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"cron": "0 25 * * *"}, 422, "invalid_input", "body.cron"),
    ({"cron": "every day"}, 422, "invalid_input", "body.cron"),
    ({"cron": "*/2 * * * *"}, 422, "invalid_input", "body.cron"),  # under 300 s
    ({"cron": "0 9 * * *", "timezone": "Europe/Atlantis"}, 422, "invalid_input",
     "body.timezone"),
    ({"every_s": 60}, 422, "invalid_input", "body.every_s"),
    ({"every_s": -5}, 422, "invalid_input", "body.every_s"),
    ({"every_s": 1e9}, 422, "invalid_input", "body.every_s"),
    ({"at": _PAST}, 422, "invalid_input", "body.at"),
    ({"at": "tomorrow"}, 422, "invalid_input", "body.at"),
    ({"every_s": 600, "at": "2099-01-01T00:00:00Z"}, 422, "invalid_input", None),
    ({}, 422, "invalid_input", "body.cron"),
    ({"every_s": 600, "overlap": "steer"}, 422, "invalid_input", "body.overlap"),
    ({"every_s": 600, "missed": "some"}, 422, "invalid_input", "body.missed"),
    ({"every_s": 600, "jitter_s": 900}, 422, "invalid_input", "body.jitter_s"),
    ({"every_s": 600, "session": "x/.."}, 422, "invalid_input", "body.session"),
    ({"every_s": 600, "ends_at": _PAST}, 422, "invalid_input", "body.ends_at"),
    ({"every_s": 600, "surprise": 1}, 422, "invalid_input", "body.surprise"),
    ({"every_s": 600, "enabled": "yes"}, 422, "invalid_input", "body.enabled"),
])
async def test_bad_schedules_are_refused_and_nothing_is_created(
        client: httpx.AsyncClient, body: dict[str, Any], status: int, code: str,
        field: str | None) -> None:
    answer = await client.post("/v1/agents/a/schedules", json={"content": "x", **body})
    assert answer.status_code == status, answer.text
    got_code, got_field = error_of(answer)
    assert got_code == code
    if field is not None:
        assert got_field == field, answer.text
    assert (await client.get("/v1/schedules")).json()["schedules"] == []


async def test_unknown_or_deleted_agents_limits_and_bad_patches(
        client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/agents/nobody/schedules",
                                json={"every_s": 600, "content": "x"})
    assert unknown.status_code == 404 and error_of(unknown)[0] == "agent_not_found"
    listed = await client.get("/v1/schedules", params={"agent": "nobody"})
    assert listed.status_code == 404
    made = [await client.post("/v1/agents/b/schedules", json={"every_s": 600,
                                                              "content": str(i)})
            for i in range(3)]
    assert all(m.status_code == 201 for m in made)
    over = await client.post("/v1/agents/b/schedules", json={"every_s": 600,
                                                             "content": "four"})
    assert over.status_code == 409 and error_of(over)[0] == "schedule_limit"
    sid = made[0].json()["id"]
    bad = await client.patch(f"/v1/schedules/{sid}", json={"cron": "* * * * *"})
    assert bad.status_code == 422 and error_of(bad) == ("invalid_input", "body.cron")
    assert (await client.get(f"/v1/schedules/{sid}")).json()["every_s"] == 600
    typo = await client.patch(f"/v1/schedules/{sid}", json={"enable": False})
    assert typo.status_code == 422 and error_of(typo)[1] == "body.enable"
    bad_id = await client.get("/v1/schedules/..%2Fetc")
    assert bad_id.status_code in (404, 422)
    too_many = await client.get(f"/v1/schedules/{sid}", params={"next": 1000})
    assert too_many.status_code == 422
    assert (await client.delete("/v1/agents/b")).status_code == 204
    gone = await client.get(f"/v1/schedules/{sid}")
    assert gone.status_code == 404
    again = await client.post("/v1/agents/b/schedules", json={"every_s": 600,
                                                              "content": "x"})
    assert again.status_code == 404
    assert (await client.get("/v1/schedules")).json()["schedules"] == []


async def test_a_fire_through_the_api_is_a_run_with_its_origin(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.schedules.clock = clock = FakeClock(2_000_000_000.0)
    made = await client.post("/v1/agents/a/schedules", json={
        "every_s": 300, "content": "tick", "session": "s"})
    sid = made.json()["id"]
    clock.now = 2_000_000_300.0
    assert await runtime.schedules.fire_due() == 1
    fires = (await client.get(f"/v1/schedules/{sid}/fires")).json()["fires"]
    assert [f["status"] for f in fires] == ["fired"]
    run = await runtime.wait(fires[0]["run_id"])
    assert run.status == "completed"
    events = await client.get("/v1/agents/a/sessions/s/events")
    message = events.json()["events"][0]
    assert message["kind"] == "message.user"
    assert message["data"]["schedule_id"] == sid
    assert message["data"]["fire_at"] == 2_000_000_300.0
    shown = (await client.get(f"/v1/schedules/{sid}")).json()
    assert shown["fires"] == 1 and shown["last_run_id"] == run.id


async def test_fire_times_missed_while_behind_show_in_the_fires(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.schedules.clock = clock = FakeClock(2_000_000_000.0)
    made = await client.post("/v1/agents/a/schedules", json={
        "every_s": 300, "content": "tick", "session": "s", "missed": "skip"})
    sid = made.json()["id"]
    # The daemon gets to it three periods late and then some: nothing fires.
    clock.now = 2_000_001_000.0
    await runtime.schedules.fire_due()
    fires = (await client.get(f"/v1/schedules/{sid}/fires")).json()["fires"]
    assert [(f["status"], f["run_id"], f["fire_at"]) for f in fires] == [
        ("missed", None, "2033-05-18T03:38:20Z")]
    assert fires[0]["reason"].startswith("3 fire times missed from this one on")
    assert "grace_s" in fires[0]["reason"]
    shown = (await client.get(f"/v1/schedules/{sid}")).json()
    assert (shown["missed_count"], shown["fires"]) == (3, 0)
