"""The audit log: what is recorded (refusals, changes to tokens, tenants, agents,
policies and approvals, each with the token's name), read through ``/v1/audit`` with
filters by admins only, capped per actor and minute, and hash-chained so that an edited
or removed row is found. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for

from agentd.identity.audit import AuditLog


async def _rows(d: Daemon, **params: Any) -> list[dict[str, Any]]:
    out = await d.call("GET", "/v1/audit", ADMIN, params=params)
    assert out.status_code == 200, out.text
    rows: list[dict[str, Any]] = out.json()["rows"]
    return rows


async def test_changes_and_refusals_are_recorded_with_who_made_them(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex",
                                                          "quotas": {"agents": 5}})
        await d.call("PATCH", "/v1/tenants/globex", ADMIN, json={"quotas": {"agents": 6}})
        member = await d.mint("acme-ci", "member", tenant="acme")
        await d.call("POST", "/v1/tokens/acme-ci/rotate", ADMIN)
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "acme.bot", "settings": {"tenant": "acme"}})
        assert made.status_code == 201
        await d.call("PATCH", "/v1/agents/acme.bot", SCOPED, json={"instructions": "hi"})
        await d.call("POST", "/v1/agents/acme.bot/sessions/s/messages", SCOPED,
                     json={"content": "hello", "wait": True})
        policy = await d.call("PUT", "/v1/agents/acme.bot/sessions/s/policy", SCOPED,
                              json={"network": False})
        assert policy.status_code == 200, policy.text
        # Refusals: a bad token, an out-of-scope agent, an operator-only setting, a
        # role without the right.
        await d.call("GET", "/v1/agents", "not-a-token")
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "globex.x",
                                                         "settings": {"tenant": "globex"}})
        await d.call("GET", "/v1/agents/globex.x", SCOPED)
        await d.call("POST", "/v1/agents", SCOPED, json={
            "name": "steal", "settings": {"tenant": "acme", "base_url": "http://x/v1"}})
        await d.call("POST", "/v1/tenants", SCOPED, json={"name": "mine"})
        await d.call("DELETE", "/v1/agents/acme.bot", ADMIN)
        await d.call("DELETE", "/v1/tokens/acme-ci", ADMIN)
        await d.call("DELETE", "/v1/agents/globex.x", ADMIN)
        await d.call("DELETE", "/v1/tenants/globex", ADMIN)
        rows = await _rows(d)
        seen = [(r["actor"], r["action"], r["resource"], r["outcome"]) for r in rows]
        for wanted in [
                ("token-1", "tenant.create", "tenant:globex", "allowed"),
                ("token-1", "tenant.update", "tenant:globex", "allowed"),
                ("token-1", "token.create", "token:acme-ci", "allowed"),
                ("token-1", "token.rotate", "token:acme-ci", "allowed"),
                ("token-1", "agent.create", "agent:acme.bot", "allowed"),
                ("token-2", "agent.update", "agent:acme.bot", "allowed"),
                ("token-2", "session.policy", "agent:acme.bot/session:s", "allowed"),
                (None, "request.denied", "GET /v1/agents", "denied"),
                ("token-2", "request.denied", "GET /v1/agents/globex.x", "denied"),
                ("token-2", "settings.denied", "body.settings.base_url", "denied"),
                ("token-2", "request.denied", "POST /v1/tenants", "denied"),
                ("token-1", "agent.delete", "agent:acme.bot", "allowed"),
                ("token-1", "token.revoke", "token:acme-ci", "allowed"),
                ("token-1", "tenant.delete", "tenant:globex", "allowed")]:
            assert wanted in seen, (wanted, seen)
        assert len([s for s in seen if s[1] == "token.create"]) == 1
        # The token itself is in no row.
        assert member not in str(rows)
        # Filters: an actor, a family of actions, refusals only.
        assert {r["action"] for r in await _rows(d, action="token.*")} == {
            "token.create", "token.rotate", "token.revoke"}
        assert {r["actor"] for r in await _rows(d, actor="token-2")} == {"token-2"}
        assert {r["outcome"] for r in await _rows(d, outcome="denied")} == {"denied"}
        page = await _rows(d, limit=2)
        later = await _rows(d, after=page[-1]["seq"])
        assert [r["seq"] for r in page + later] == [r["seq"] for r in rows]
        # Only admins read it.
        for token in (SCOPED, member):
            assert (await d.call("GET", "/v1/audit", token)).status_code in (401, 403)
        verified = await d.call("GET", "/v1/audit/verify", ADMIN)
        assert verified.json()["ok"] is True and verified.json()["rows"] >= len(rows)


async def test_an_edited_or_removed_row_breaks_the_chain(tmp_path: Path,
                                                         store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        for n in range(6):
            await d.call("POST", "/v1/tenants", ADMIN, json={"name": f"t{n}"})
        good = (await d.call("GET", "/v1/audit/verify", ADMIN)).json()
        assert good["ok"] and good["rows"] == 6
        noted = f"{good['head']['seq']}:{good['head']['hash']}"
        engine = d.runtime.store.engine
        # The newest row cut off the end: the chain alone cannot tell; a head noted
        # before does.
        await engine.write(lambda tx: tx.execute("DELETE FROM audit_log WHERE seq = 6"))
        assert (await d.call("GET", "/v1/audit/verify", ADMIN)).json()["ok"]
        cut = (await d.call("GET", "/v1/audit/verify", ADMIN,
                            params={"head": noted})).json()
        assert not cut["ok"] and "cut off" in cut["problem"]["reason"], cut
        # Edited in place: found at that row.
        await engine.write(lambda tx: tx.execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3"))
        edited = (await d.call("GET", "/v1/audit/verify", ADMIN)).json()
        assert not edited["ok"] and edited["problem"]["seq"] == 3, edited
        assert "edited" in edited["problem"]["reason"]
        await engine.write(lambda tx: tx.execute(
            "UPDATE audit_log SET actor = 'token-1' WHERE seq = 3"))
        assert (await d.call("GET", "/v1/audit/verify", ADMIN)).json()["ok"]
        # Removed: the gap is named.
        await engine.write(lambda tx: tx.execute("DELETE FROM audit_log WHERE seq = 2"))
        removed = (await d.call("GET", "/v1/audit/verify", ADMIN)).json()
        assert not removed["ok"] and removed["problem"]["seq"] == 2, removed
        bad = await d.call("GET", "/v1/audit/verify", ADMIN, params={"head": "x:y"})
        assert bad.status_code == 422 and "query.head" in bad.text


async def test_a_flood_of_refusals_is_capped_per_actor_and_minute(
        tmp_path: Path, store_url: str) -> None:
    settings = settings_for(tmp_path, store_url, audit={"refusals_per_minute": 3})
    async with daemon(settings) as d:
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "globex.x",
                                                         "settings": {"tenant": "globex"}})
        audit: AuditLog = d.runtime.identity.audit
        now = [600.0]
        audit.clock = lambda: now[0]
        for _ in range(10):
            await d.call("GET", "/v1/agents/globex.x", SCOPED)
        for _ in range(4):
            await d.call("GET", "/v1/agents", "wrong-token")
        now[0] += 60  # the next minute: the earlier one is summed up
        assert audit.roll() == 2
        rows = [r for r in await _rows(d, outcome="denied")]
        by_scoped = [r for r in rows if r["actor"] == "token-2"]
        assert len(by_scoped) == 4, by_scoped  # three, then one that counts the rest
        assert by_scoped[-1]["details"]["suppressed"] == 7
        anonymous = [r for r in rows if r["actor"] is None]
        assert len(anonymous) == 4 and anonymous[-1]["details"]["suppressed"] == 1
