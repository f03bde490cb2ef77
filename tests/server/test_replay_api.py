"""``POST /v1/runs/{id}/replay`` over the HTTP API (ASGI), SQLite and PostgreSQL: the
answer, the bad inputs (409 in flight, 404 unknown) and a tenant-scoped token asking
about another tenant's run (404, the same answer as for a run that does not exist)."""

from __future__ import annotations

from pathlib import Path

from tests.server._scopes import ACME, ADMIN, GLOBEX, auth, scoped_daemon, seed, settings_for


async def test_replay_over_http_and_its_refusals(tmp_path: Path, store_url: str) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (_runtime, api):
        acme = await seed(api, "acme-bot")
        await seed(api, "globex-bot")
        run_id = acme.ids["run_id"]
        r = await api.post(f"/v1/runs/{run_id}/replay", headers=auth(ACME))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["matches"] is True and body["first_divergence"] is None, body
        assert (body["model_calls"], body["tools_executed"]) == (0, 0)
        assert body["session"] == f"replay:{run_id}:1" and body["status"] == "completed"
        # The scratch session is the agent's (its owner sees it), marked by its key.
        r = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ACME))
        assert f"replay:{run_id}:1" in [s["key"] for s in r.json()["sessions"]]
        # Another tenant's token: 404, word for word what an unknown run gets.
        stolen = await api.post(f"/v1/runs/{run_id}/replay", headers=auth(GLOBEX))
        unknown = await api.post("/v1/runs/r_unknown/replay", headers=auth(GLOBEX))
        assert stolen.status_code == unknown.status_code == 404
        assert stolen.text.replace(run_id, "<id>") == unknown.text.replace("r_unknown",
                                                                           "<id>")
        # A run still waiting for its approval is in flight: 409, nothing written.
        waiting = acme.ids["waiting_run"]
        before = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ADMIN))
        r = await api.post(f"/v1/runs/{waiting}/replay", headers=auth(ACME))
        assert r.status_code == 409 and r.json()["error"]["code"] == "run_in_flight", r.text
        after = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ADMIN))
        assert before.json()["sessions"] == after.json()["sessions"]
        # The original's log is untouched by its replay.
        events = await api.get("/v1/agents/acme-bot/sessions/chat/events",
                               headers=auth(ACME))
        assert [e for e in events.json()["events"] if e["run_id"] == body["run_id"]] == []


async def test_scratch_sessions_count_against_the_tenants_quota(tmp_path: Path,
                                                                store_url: str) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (_runtime, api):
        acme = await seed(api, "acme-bot")
        run_id = acme.ids["run_id"]
        r = await api.post(f"/v1/runs/{run_id}/replay", headers=auth(ACME))
        assert r.status_code == 200, r.text
        sessions = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ADMIN))
        held = len(sessions.json()["sessions"])
        r = await api.patch("/v1/tenants/acme", headers=auth(ADMIN),
                            json={"quotas": {"sessions": held}})
        assert r.status_code == 200, r.text
        r = await api.post(f"/v1/runs/{run_id}/replay", headers=auth(ACME))
        assert r.status_code == 403 and r.json()["error"]["code"] == "quota_exceeded", r.text
        after = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ADMIN))
        assert len(after.json()["sessions"]) == held
