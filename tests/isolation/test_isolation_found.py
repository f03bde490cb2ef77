"""What the isolation property (test_isolation_property.py) found, shrunk to plain
tests: each failed on s27/core before its fix.

1. ``POST /v1/tokens`` told a tenant outside the maker's scope (403 "only within its
   own scope") from a tenant that does not exist (404 ``tenant_not_found``): a tenant
   the scope does not show is now answered as one that does not exist.
2. A named admin token bound to a tenant read every tenant's audit rows, changed other
   tenants' quotas and made itself an unscoped admin token: the daemon-wide rights
   (tenants, the audit log, tokens of any scope) now need a scope of every agent,
   whatever the role (``admin_tokens`` naming a scoped token included).
"""

from __future__ import annotations

from pathlib import Path

from tests.identity._daemon import ADMIN, SCOPED, daemon, settings_for


async def test_a_tenant_outside_the_makers_scope_is_a_tenant_that_does_not_exist(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        assert made.status_code == 201, made.text
        member = await d.mint("acme-ci", "member", tenant="acme")
        for maker in (member, SCOPED):  # a named token, a configured [access] one
            answers = []
            for tenant in ("globex", "no-such-tenant"):
                out = await d.call("POST", "/v1/tokens", maker, json={
                    "name": f"x-{tenant}", "role": "viewer", "tenant": tenant})
                answers.append((out.status_code, out.text.replace(tenant, "<T>")))
            assert answers[0] == answers[1], answers
            assert answers[0][0] == 404 and "tenant_not_found" in answers[0][1]
        # Its own tenant it may give (the check is of the scope, not of the call).
        own = await d.call("POST", "/v1/tokens", member, json={
            "name": "acme-viewer", "role": "viewer", "tenant": "acme"})
        assert own.status_code == 201, own.text


async def test_an_admin_bound_to_a_tenant_holds_no_daemon_wide_right(
        tmp_path: Path, store_url: str) -> None:
    settings = settings_for(tmp_path, store_url, admin_tokens=["token-1", "token-2"])
    async with daemon(settings) as d:
        made = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        assert made.status_code == 201, made.text
        bound = await d.mint("acme-admin", "admin", tenant="acme")
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "globex.bot", "settings": {"tenant": "globex"}})
        assert made.status_code == 201, made.text
        before = (await d.call("GET", "/v1/tenants/globex", ADMIN)).json()
        for token in (bound, SCOPED):  # named; configured and named in admin_tokens
            for method, path, body in (
                    ("GET", "/v1/audit", None), ("GET", "/v1/audit/verify", None),
                    ("PATCH", "/v1/tenants/globex", {"quotas": {"agents": 0}}),
                    ("POST", "/v1/tenants", {"name": "mine"}),
                    ("DELETE", "/v1/tenants/globex", None),
                    ("POST", "/v1/tokens", {"name": f"esc-{len(token)}", "role": "admin"})):
                out = await d.call(method, path, token, json=body)
                assert out.status_code == 403, (token, method, path, out.text)
            listed = (await d.call("GET", "/v1/tokens", token)).json()["tokens"]
            assert {t["tenant"] for t in listed} <= {"acme"}, listed
            tenants = (await d.call("GET", "/v1/tenants", token)).json()["tenants"]
            assert [t["name"] for t in tenants] == ["acme"]
        assert (await d.call("GET", "/v1/tenants/globex", ADMIN)).json() == before
        # Within its tenant it is still an admin: it makes an admin bound there.
        inside = await d.call("POST", "/v1/tokens", bound, json={
            "name": "acme-admin-2", "role": "admin", "tenant": "acme"})
        assert inside.status_code == 201, inside.text
        # The unscoped admin keeps every right.
        assert (await d.call("GET", "/v1/audit", ADMIN)).status_code == 200


async def test_a_token_bound_to_a_tenant_with_agent_patterns_confirms_no_name(
        tmp_path: Path, store_url: str) -> None:
    """3. A named token bound to a tenant *and* agent patterns created any name its
    patterns matched: one taken by another tenant's agent answered 409
    ``agent_exists``. Its agents are ``<tenant>.<name>`` too now."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        assert made.status_code == 201, made.text
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "bot-1", "settings": {"tenant": "globex"}})
        assert made.status_code == 201, made.text
        member = await d.mint("acme-bots", "member", tenant="acme", agents=["bot-*",
                                                                           "acme.bot-*"])
        answers = []
        for name in ("bot-1", "bot-2"):  # globex's, and no one's
            out = await d.call("POST", "/v1/agents", member, json={"name": name})
            answers.append((out.status_code, out.text.replace(name, "<N>")))
        assert answers[0] == answers[1] and answers[0][0] == 403, answers
        mine = await d.call("POST", "/v1/agents", member, json={"name": "acme.bot-1"})
        assert mine.status_code == 201, mine.text
        assert mine.json()["settings"]["tenant"] == "acme"
