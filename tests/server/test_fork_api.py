"""``POST /v1/runs/{id}/fork`` and ``GET /v1/forks/{id}`` over the HTTP API (ASGI),
SQLite and PostgreSQL: the report, the refusals (each writing nothing), and the attacks
a token may try through a fork: another tenant's run, a setting only an operator may
set (the same list the agents' own test tries: tests/identity/test_operator_only.py,
against a real stub model server that must hear nothing), another tenant, a memory
namespace outside its scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.identity import test_operator_only as operator_only
from tests.identity._daemon import ADMIN, SCOPED, daemon
from tests.identity._daemon import settings_for as identity_settings
from tests.server._scopes import (
    ACME,
    GLOBEX,
    auth,
    scoped_daemon,
    seed,
    settings_for,
    snapshot,
    unchanged,
)

from agentd.testing import StubLLMServer

SCRIPT = [{"tool_calls": [{"name": "deploy", "arguments": {"target": "prod"}}]},
          {"text": "shipped"}]


async def test_fork_over_http_and_its_refusals(tmp_path: Path, store_url: str) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        acme = await seed(api, "acme-bot")
        await seed(api, "globex-bot")
        run_id = acme.ids["run_id"]
        r = await api.post(f"/v1/runs/{run_id}/fork", headers=auth(ACME), json={
            "from_step": 1, "settings": {"script": [{"text": "forked answer"}]}})
        assert r.status_code == 200, r.text
        body = r.json()
        # (seed forked it once already)
        assert body["session"] == f"fork:{run_id}:2" and body["status"] == "completed"
        assert body["fork"]["output"] == "forked answer" and body["same_output"] is False
        assert body["first_divergence"]["step"] == 1
        assert body["original"]["output"] == "echo: hello from acme-bot"
        fork_id = body["fork_id"]
        got = await api.get(f"/v1/forks/{fork_id}", headers=auth(ACME))
        assert got.status_code == 200 and got.json() == body, got.text
        # Another tenant's token: 404, word for word what an unknown id gets.
        for path, ghost in ((f"/v1/forks/{fork_id}", "/v1/forks/fk_unknown"),):
            stolen, unknown = (await api.get(path, headers=auth(GLOBEX)),
                               await api.get(ghost, headers=auth(GLOBEX)))
            assert stolen.status_code == unknown.status_code == 404
            assert stolen.text.replace(fork_id, "<id>") == unknown.text.replace(
                "fk_unknown", "<id>")
        before = await snapshot(runtime)
        stolen = await api.post(f"/v1/runs/{run_id}/fork", headers=auth(GLOBEX),
                                json={"from_step": 1})
        unknown = await api.post("/v1/runs/r_unknown/fork", headers=auth(GLOBEX),
                                 json={"from_step": 1})
        assert stolen.status_code == unknown.status_code == 404
        assert stolen.text.replace(run_id, "<id>") == unknown.text.replace("r_unknown",
                                                                           "<id>")
        refusals: list[tuple[str, dict[str, Any], int, str]] = [
            (run_id, {"from_step": 2}, 422, "step_out_of_range"),
            (run_id, {"from_step": "1"}, 422, "invalid_input"),
            (run_id, {"from_step": 1, "tools": "sometimes"}, 422, "invalid_input"),
            (run_id, {"from_step": 1, "model": "nosuch:model"}, 422, "invalid_model"),
            (run_id, {"from_step": 1, "extra": True}, 422, "invalid_input"),
            (acme.ids["waiting_run"], {"from_step": 1}, 409, "run_in_flight"),
            # A token scoped to tenant acme cannot take the agent to globex's.
            (run_id, {"from_step": 1, "settings": {"tenant": "globex"}}, 403, "forbidden"),
        ]
        for target, payload, status, code in refusals:
            r = await api.post(f"/v1/runs/{target}/fork", headers=auth(ACME), json=payload)
            assert r.status_code == status and r.json()["error"]["code"] == code, (
                payload, r.text)
        assert "nosuch" in (await api.post(f"/v1/runs/{run_id}/fork", headers=auth(ACME),
                                           json={"from_step": 1, "model": "nosuch:model"})
                            ).json()["error"]["message"]
        await unchanged(runtime, before)


async def test_a_scoped_token_gains_no_namespace_through_a_fork(tmp_path: Path,
                                                               store_url: str) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        globex = await seed(api, "globex-bot")
        before = await snapshot(runtime)
        r = await api.post(f"/v1/runs/{globex.ids['run_id']}/fork", headers=auth(GLOBEX),
                           json={"from_step": 1, "settings": {
                               "memory": {"namespaces": ["acme:secrets"]}}})
        assert r.status_code == 403 and "namespace" in r.text, r.text
        await unchanged(runtime, before)


async def test_a_member_gains_no_operator_only_setting_through_a_fork(
        tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-operators-own-key")
    with StubLLMServer() as stub:
        async with daemon(identity_settings(tmp_path, store_url)) as d:
            member = await d.mint("acme-ci", "member", tenant="acme")
            made = await d.call("POST", "/v1/agents", ADMIN, json={
                "name": "acme.bot", "settings": {"tenant": "acme"}})
            assert made.status_code == 201, made.text
            sent = await d.call("POST", "/v1/agents/acme.bot/sessions/s/messages", member,
                                json={"content": "hi", "wait": True})
            run_id = sent.json()["id"]
            sessions = await d.call("GET", "/v1/agents/acme.bot/sessions", ADMIN)
            for token in (SCOPED, member):
                for target in (stub.base_url, "http://test/v1"):
                    for body, field, status in operator_only._attacks(target):
                        out = await d.call("POST", f"/v1/runs/{run_id}/fork", token, json={
                            "from_step": 1, **body})
                        assert out.status_code == status, (body, out.text)
                        details = out.json()["error"]["details"]
                        fields = [e["field"] for e in details.get("errors", [])] + [
                            details.get("field")]
                        assert f"body.{field}" in fields, (body, out.text)
            after = await d.call("GET", "/v1/agents/acme.bot/sessions", ADMIN)
            assert after.json() == sessions.json()
            # An operator's fork may hold them (the check is of the role).
            out = await d.call("POST", f"/v1/runs/{run_id}/fork", ADMIN, json={
                "from_step": 1, "model": "openai:gpt-4.1",
                "settings": {"base_url": stub.base_url, "api_key_env": "OPENAI_API_KEY"},
                "wait": False})
            assert out.status_code in (200, 202), out.text
            await d.call("GET", f"/v1/forks/{out.json()['fork_id']}", ADMIN,
                         params={"wait": "true"})
        # Only the operator's fork reached the stub.
        assert len(stub.requests) >= 1
        assert {h.get("authorization") for h in stub.headers} == {
            "Bearer sk-operators-own-key"}
