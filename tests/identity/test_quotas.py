"""Tenants and their quotas: made and changed by admins only, enforced on every write
that adds to one (through the API, the agents' own tools and the schedules), counted in
the write's own transaction so that concurrent writers cannot pass a limit together.
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for
from tests.media.images import png


async def _tenant(d: Daemon, name: str, **quotas: Any) -> dict[str, Any]:
    made = await d.call("POST", "/v1/tenants", ADMIN, json={"name": name,
                                                             "quotas": quotas})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def _quota_error(response: Any, quota: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded", error
    assert error["details"]["quota"] == quota, error


async def test_only_admins_make_and_change_tenants_and_bad_quotas_are_named(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        operator = await d.mint("ops", "operator")
        for token in (SCOPED, operator):
            out = await d.call("POST", "/v1/tenants", token, json={"name": "x"})
            assert out.status_code == 403, out.text
        for quotas, field in (({"agents": -1}, "body.quotas.agents"),
                              ({"sessions": 10**12}, "body.quotas.sessions"),
                              ({"spend_usd_per_day": -0.5}, "body.quotas.spend_usd_per_day"),
                              ({"agents": "10"}, "body.quotas.agents"),
                              ({"cpus": 2}, "body.quotas.cpus")):
            out = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "x",
                                                                    "quotas": quotas})
            assert out.status_code == 422 and field in out.text, (quotas, out.text)
        for name in ("Bad", "a.b", "-x", "", "acme2\n"):
            out = await d.call("POST", "/v1/tenants", ADMIN, json={"name": name})
            assert out.status_code == 422, (name, out.text)
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "odd",
                                                         "settings": {"tenant": "legacy"}})
        listed = await d.call("GET", "/v1/tenants", ADMIN)
        assert [(t["name"], t["source"]) for t in listed.json()["tenants"]] == [
            ("acme", "config"), ("default", "implicit"), ("legacy", "implicit")]
        made = await _tenant(d, "globex", agents=2)
        assert made["quotas"] == {"agents": 2} and made["source"] == "api"
        again = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        assert again.status_code == 409
        config = await d.call("PATCH", "/v1/tenants/acme", ADMIN, json={"quotas": {
            "agents": 1}})
        assert config.status_code == 409 and "agentd.toml" in config.text
        lifted = await d.call("PATCH", "/v1/tenants/globex", ADMIN, json={"quotas": {
            "agents": None, "sessions": 5}})
        assert lifted.json()["quotas"] == {"sessions": 5}, lifted.text
        # An implicit tenant (default, a name agents use) takes quotas too.
        default = await d.call("PATCH", "/v1/tenants/default", ADMIN, json={"quotas": {
            "agents": 100}})
        assert default.status_code == 200, default.text
        assert default.json()["quotas"] == {"agents": 100}
        assert (await d.call("DELETE", "/v1/tenants/default", ADMIN)).status_code == 204
        again = await d.call("DELETE", "/v1/tenants/default", ADMIN)
        assert again.status_code == 409 and "always there" in again.text
        # A scoped token sees its own tenant only; another's is not found.
        mine = await d.call("GET", "/v1/tenants", SCOPED)
        assert [t["name"] for t in mine.json()["tenants"]] == ["acme"]
        assert (await d.call("GET", "/v1/tenants/globex", SCOPED)).status_code == 404
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "globex.a",
                                                         "settings": {"tenant": "globex"}})
        busy = await d.call("DELETE", "/v1/tenants/globex", ADMIN)
        assert busy.status_code == 409 and "agent" in busy.text
        await d.call("DELETE", "/v1/agents/globex.a", ADMIN)
        assert (await d.call("DELETE", "/v1/tenants/globex", ADMIN)).status_code == 204


async def test_each_quota_refuses_the_write_that_would_pass_it(tmp_path: Path,
                                                               store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _tenant(d, "small", agents=2, sessions=2, schedules=1, memory_entries=2)
        token = await d.mint("small", "member", tenant="small")
        for name in ("small.a", "small.b"):
            assert (await d.call("POST", "/v1/agents", token, json={"name": name})
                    ).status_code == 201
        _quota_error(await d.call("POST", "/v1/agents", token, json={"name": "small.c"}),
                     "agents")
        _quota_error(await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "small.d", "settings": {"tenant": "small"}}), "agents")
        # Moving an agent into the tenant counts too.
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "outsider"})
        _quota_error(await d.call("PATCH", "/v1/agents/outsider", ADMIN, json={
            "settings": {"tenant": "small"}}), "agents")
        # Sessions: a message to a new session, and a fork.
        for key in ("one", "two"):
            sent = await d.call("POST", f"/v1/agents/small.a/sessions/{key}/messages",
                                token, json={"content": "hi", "wait": True})
            assert sent.status_code == 200, sent.text
        _quota_error(await d.call("POST", "/v1/agents/small.b/sessions/three/messages",
                                  token, json={"content": "hi"}), "sessions")
        again = await d.call("POST", "/v1/agents/small.a/sessions/one/messages", token,
                             json={"content": "more", "wait": True})
        assert again.status_code == 200, again.text  # (an existing session is not new)
        _quota_error(await d.call("POST", "/v1/agents/small.a/sessions/one/fork", token,
                                  json={"key": "copy", "seq": 1}), "sessions")
        # Schedules, through the API.
        made = await d.call("POST", "/v1/agents/small.a/schedules", token, json={
            "every_s": 3600, "content": "tick", "session": "one"})
        assert made.status_code == 201, made.text
        _quota_error(await d.call("POST", "/v1/agents/small.b/schedules", token, json={
            "every_s": 3600, "content": "tick", "session": "one"}), "schedules")
        # Memory entries, through the API (an exact duplicate adds nothing).
        first = await d.call("POST", "/v1/agents/small.a/memory/entries", token, json={
            "entries": [{"content": "one"}, {"content": "two"}]})
        assert first.status_code == 201, first.text
        dup = await d.call("POST", "/v1/agents/small.a/memory/entries", token,
                           json={"content": "one"})
        assert dup.status_code in (200, 201), dup.text
        _quota_error(await d.call("POST", "/v1/agents/small.b/memory/entries", token,
                                  json={"content": "three"}), "memory_entries")
        # Storage: the bytes of images kept (each once), in an existing session.
        image = base64.b64encode(png(8, 8)).decode()
        await d.call("PATCH", "/v1/tenants/small", ADMIN, json={"quotas": {
            "storage_bytes": len(png(8, 8)) + 10}})
        for _ in range(2):  # (the same image again costs nothing more)
            kept = await d.call("POST", "/v1/agents/small.a/sessions/one/messages", token,
                                json={"content": [{"type": "image", "data": image}]})
            assert kept.status_code == 200, kept.text
        _quota_error(await d.call("POST", "/v1/agents/small.a/sessions/one/messages", token,
                                  json={"content": [{"type": "image", "data": base64.b64encode(
                                      png(9, 9)).decode()}]}), "storage_bytes")
        usage = (await d.call("GET", "/v1/tenants/small", token)).json()["usage"]
        assert usage == {"agents": 2, "sessions": 2, "schedules": 1,
                         "memory_entries": 2, "storage_bytes": len(png(8, 8))}, usage
        # Lifting a quota lets the write through; nothing refused was kept.
        await d.call("PATCH", "/v1/tenants/small", ADMIN, json={"quotas": {"agents": 3}})
        assert (await d.call("POST", "/v1/agents", token, json={"name": "small.c"})
                ).status_code == 201


async def test_an_agents_own_tools_are_held_to_its_tenants_quotas(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _tenant(d, "tools", memory_entries=1, schedules=0)
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "tools.a", "tools": ["remember", "schedule_create"],
            "settings": {"tenant": "tools", "script": [
                {"tool_calls": [{"name": "remember", "arguments": {"content": "a"}}]},
                {"tool_calls": [{"name": "remember", "arguments": {"content": "b"}}]},
                {"tool_calls": [{"name": "schedule_create", "arguments": {
                    "every_s": 3600, "content": "x"}}]},
                {"text": "done"}]}})
        assert made.status_code == 201, made.text
        sent = await d.call("POST", "/v1/agents/tools.a/sessions/s/messages", ADMIN,
                            json={"content": "go", "wait": True})
        assert sent.json()["status"] == "completed", sent.text
        log = (await d.call("GET", "/v1/agents/tools.a/sessions/s/events", ADMIN)).json()
        finished = [e["data"] for e in log["events"] if e["kind"] == "tool.finished"]
        assert [(f["is_error"], "quota" in f["output"]) for f in finished] == [
            (False, False), (True, True), (True, True)], finished
        usage = (await d.call("GET", "/v1/tenants/tools", ADMIN)).json()["usage"]
        assert usage["memory_entries"] == 1 and usage["schedules"] == 0


async def test_concurrent_writers_never_pass_a_quota_together(tmp_path: Path,
                                                              store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _tenant(d, "race", agents=3, sessions=4)
        made = await asyncio.gather(*(d.call("POST", "/v1/agents", ADMIN, json={
            "name": f"race.a{i}", "settings": {"tenant": "race"}}) for i in range(12)))
        assert sorted(r.status_code for r in made) == [201] * 3 + [403] * 9
        sent = await asyncio.gather(*(d.call(
            "POST", f"/v1/agents/{r.json()['name']}/sessions/k{i}/messages", ADMIN,
            json={"content": "hi"}) for i in range(12)
            for r in made if r.status_code == 201))
        assert sum(1 for r in sent if r.status_code in (200, 202)) == 4, [
            r.status_code for r in sent]
        usage = (await d.call("GET", "/v1/tenants/race", ADMIN)).json()["usage"]
        assert (usage["agents"], usage["sessions"]) == (3, 4)


async def test_the_days_spend_quota_stops_the_tenants_runs(tmp_path: Path,
                                                           store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _tenant(d, "thrifty", spend_usd_per_day=0)
        await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "thrifty.a", "settings": {"tenant": "thrifty"}})
        sent = await d.call("POST", "/v1/agents/thrifty.a/sessions/s/messages", ADMIN,
                            json={"content": "hi", "wait": True})
        run = sent.json()
        assert run["status"] == "failed" and run["error"]["code"] == "budget_exceeded", run
        # Raised, the next run goes (the change reaches agents already awake).
        await d.call("PATCH", "/v1/tenants/thrifty", ADMIN, json={"quotas": {
            "spend_usd_per_day": 100}})
        again = await d.call("POST", "/v1/agents/thrifty.a/sessions/s/messages", ADMIN,
                             json={"content": "hi", "wait": True})
        assert again.json()["status"] == "completed", again.text


async def test_the_sandboxs_own_quotas_come_from_the_tenants(tmp_path: Path,
                                                             store_url: str) -> None:
    """``sandbox_uids`` and ``egress_connections`` are enforced by the sandbox itself
    (tests/runtime/test_uid_reclaim.py, tests/sandbox/test_egress_caps.py, with caps
    given directly); here: the tenants' quotas are what it is given, changed live."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _tenant(d, "boxed", sandbox_uids=2, egress_connections=5)
        caps = d.runtime.sandboxes.caps_of
        assert (caps("boxed").sandbox_uids, caps("boxed").egress_connections) == (2, 5)
        assert (caps("other").sandbox_uids, caps("other").egress_connections) == (None,
                                                                                  None)
        await d.call("PATCH", "/v1/tenants/boxed", ADMIN, json={"quotas": {
            "egress_connections": None}})
        assert caps("boxed").egress_connections is None
        if os.geteuid() == 0:  # (uids are given only by a root daemon)
            for name in ("boxed.a", "boxed.b"):
                made = await d.call("POST", "/v1/agents", ADMIN, json={
                    "name": name, "settings": {"tenant": "boxed"}})
                assert made.status_code == 201, made.text
            _quota_error(await d.call("POST", "/v1/agents", ADMIN, json={
                "name": "boxed.c", "settings": {"tenant": "boxed"}}), "sandbox_uids")
            listed = await d.call("GET", "/v1/agents", ADMIN)
            assert [a["name"] for a in listed.json()["agents"]] == ["boxed.a", "boxed.b"]
