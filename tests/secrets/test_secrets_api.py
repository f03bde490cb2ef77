"""Named secrets through the API: set, listed by name, replaced, deleted; sealed at rest
with a key made 0600; every bad input a clear 4xx with nothing written; a tenant's
token can neither see, overwrite, delete nor scope one to another tenant's secrets or
agents. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import logging
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for

VALUE = "s3cr3t-" + secrets.token_hex(16)


async def _rows(d: Daemon) -> list[tuple[Any, ...]]:
    return await d.runtime.store.engine.read(lambda tx: tx.all(
        "SELECT tenant, agent, name, value, key_id FROM secrets ORDER BY tenant, agent, name"))


async def _audit(d: Daemon) -> list[tuple[str, str, str]]:
    await d.runtime.identity.audit.flush()
    rows = await d.runtime.identity.audit.page(action="secret.*")
    return [(r.action, r.resource, r.outcome) for r in rows]


async def _agent(d: Daemon, name: str, tenant: str) -> None:
    made = await d.call("POST", "/v1/agents", ADMIN,
                        json={"name": name, "settings": {"tenant": tenant}})
    assert made.status_code == 201, made.text


async def test_a_secret_is_sealed_listed_by_name_replaced_and_deleted(
        tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/secrets", ADMIN,
                            json={"name": "GITHUB_TOKEN", "value": VALUE})
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["name"], body["tenant"], body["agent"]) == ("GITHUB_TOKEN", "default",
                                                                 None)
        assert VALUE not in made.text
        # The key was made at first use, for its owner's eyes only.
        key_file = tmp_path / "home" / "secrets.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # At rest: sealed, neither the value nor its base64 in the row.
        [row] = await _rows(d)
        assert row[:3] == ("default", "", "GITHUB_TOKEN")
        assert VALUE not in row[3] and base64.b64encode(VALUE.encode()).decode() not in row[3]
        # Listed by name, never by value.
        listed = await d.call("GET", "/v1/secrets", ADMIN)
        assert listed.status_code == 200 and VALUE not in listed.text
        assert [s["name"] for s in listed.json()["secrets"]] == ["GITHUB_TOKEN"]
        # Replaced: 200, one row, created_at kept.
        again = await d.call("POST", "/v1/secrets", ADMIN,
                             json={"name": "GITHUB_TOKEN", "value": VALUE + "-2"})
        assert again.status_code == 200, again.text
        assert again.json()["created_at"] == body["created_at"]
        assert len(await _rows(d)) == 1
        resolved = await d.runtime.secrets.resolve("GITHUB_TOKEN", tenant="default",
                                                   agent="bot", use="test")
        assert resolved == VALUE + "-2"
        # Deleted; a second delete is a clear 404.
        gone = await d.call("DELETE", "/v1/secrets/GITHUB_TOKEN", ADMIN)
        assert gone.status_code == 204, gone.text
        missing = await d.call("DELETE", "/v1/secrets/GITHUB_TOKEN", ADMIN)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "secret_not_found"
        assert await _rows(d) == []
        assert await _audit(d) == [
            ("secret.set", "secret:default/GITHUB_TOKEN", "allowed"),
            ("secret.set", "secret:default/GITHUB_TOKEN", "allowed"),
            ("secret.use", "secret:default/GITHUB_TOKEN", "allowed"),
            ("secret.delete", "secret:default/GITHUB_TOKEN", "allowed")]
        audit_text = str(await d.runtime.identity.audit.page())
    assert VALUE not in caplog.text and VALUE not in audit_text


async def test_an_agents_own_secret_wins_over_its_tenants(tmp_path: Path, store_url: str
                                                          ) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _agent(d, "acme.bot", "acme")
        await _agent(d, "acme.other", "acme")
        for extra, value in (({}, "tenant-wide-value"), ({"agent": "acme.bot"},
                                                          "the-bots-own-value")):
            made = await d.call("POST", "/v1/secrets", ADMIN, json={
                "name": "KEY", "value": value, "tenant": "acme", **extra})
            assert made.status_code == 201, made.text
        resolve = d.runtime.secrets.resolve
        assert await resolve("KEY", tenant="acme", agent="acme.bot", use="t") == \
            "the-bots-own-value"
        assert await resolve("KEY", tenant="acme", agent="acme.other", use="t") == \
            "tenant-wide-value"
        with pytest.raises(Exception, match="secret 'KEY' not found") as caught:
            await resolve("KEY", tenant="default", agent="acme.other", use="t")
        assert getattr(caught.value, "code", None) == "secret_not_found"
        listed = (await d.call("GET", "/v1/secrets?agent=acme.bot", ADMIN)).json()
        assert [(s["name"], s["agent"]) for s in listed["secrets"]] == [("KEY", "acme.bot")]
        # Deleted with the agent: the same name made again starts without it.
        assert (await d.call("DELETE", "/v1/agents/acme.bot", ADMIN)).status_code == 204
        assert [r[:3] for r in await _rows(d)] == [("acme", "", "KEY")]
        await _agent(d, "acme.bot", "acme")
        assert await resolve("KEY", tenant="acme", agent="acme.bot", use="t") == \
            "tenant-wide-value"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"name": "1BAD", "value": VALUE}, 422, "name"),
    ({"name": "has space", "value": VALUE}, 422, "name"),
    ({"name": "A" * 65, "value": VALUE}, 422, "name"),
    ({"name": "SHORT", "value": "1234567"}, 422, "value"),
    ({"name": "NUL", "value": "abcdefgh\x00"}, 422, "value"),
    ({"name": "X", "value": VALUE, "tenant": "nobody"}, 422, "tenant"),
    ({"name": "X", "value": VALUE, "agent": "ghost"}, 404, None),
    ({"name": "X", "value": VALUE, "agent": "acme.bot", "tenant": "default"}, 422, "tenant"),
    ({"name": "X", "value": VALUE, "extra": 1}, 422, "extra"),
    ({"name": "X"}, 422, "value"),
])
async def test_bad_input_is_a_clear_4xx_with_nothing_written(
        tmp_path: Path, store_url: str, body: dict[str, Any], status: int,
        field: str | None) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _agent(d, "acme.bot", "acme")
        answer = await d.call("POST", "/v1/secrets", ADMIN, json=body)
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        if field is not None:
            assert field in str(error.get("details", {})) + error["message"]
        assert VALUE not in answer.text
        assert await _rows(d) == []


async def test_a_tenants_token_cannot_touch_another_tenants_secrets(
        tmp_path: Path, store_url: str) -> None:
    """token-2 (configured, tenant acme) and a named token bound to acme try every
    door into globex's secrets and agents: refused, and globex's secret unchanged."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _agent(d, "acme.bot", "acme")
        await _agent(d, "globex.bot", "globex")
        await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        for extra in ({"tenant": "globex"}, {"agent": "globex.bot"}):
            made = await d.call("POST", "/v1/secrets", ADMIN,
                                json={"name": "GLOBEX_KEY", "value": VALUE, **extra})
            assert made.status_code == 201, made.text
        before = await _rows(d)
        named = await d.mint("acme-ci", "member", tenant="acme")
        for token in (SCOPED, named):
            # Its own tenant: allowed (the default tenant is the token's).
            own = await d.call("POST", "/v1/secrets", token,
                               json={"name": "ACME_KEY", "value": "acme-value-1"})
            if token == named:
                assert own.status_code in (200, 201) and own.json()["tenant"] == "acme"
            listed = await d.call("GET", "/v1/secrets", token)
            assert listed.status_code == 200
            assert {s["tenant"] for s in listed.json()["secrets"]} <= {"acme"}
            assert "GLOBEX_KEY" not in listed.text
            # Overwrite, delete, scope to another tenant's agent: refused.
            attempts = [
                ("POST", "/v1/secrets", {"json": {"name": "GLOBEX_KEY", "value": "x" * 9,
                                                  "tenant": "globex"}}, 403),
                ("POST", "/v1/secrets", {"json": {"name": "GLOBEX_KEY", "value": "x" * 9,
                                                  "agent": "globex.bot"}}, 404),
                ("POST", "/v1/secrets", {"json": {"name": "GLOBEX_KEY", "value": "x" * 9,
                                                  "agent": "globex.bot",
                                                  "tenant": "acme"}}, 404),
                ("DELETE", "/v1/secrets/GLOBEX_KEY?tenant=globex", {}, 403),
                ("DELETE", "/v1/secrets/GLOBEX_KEY?agent=globex.bot", {}, 404),
                ("GET", "/v1/secrets?tenant=globex", {}, 200),
                ("GET", "/v1/secrets?agent=globex.bot", {}, 404),
            ]
            for method, path, kwargs, status in attempts:
                answer = await d.call(method, path, token, **kwargs)
                assert answer.status_code == status, (method, path, answer.text)
                assert "GLOBEX_KEY" not in answer.text or answer.status_code != 200
                if status == 200:
                    assert answer.json()["secrets"] == []
            # An agent of another tenant that does not exist is answered alike.
            ghost = await d.call("POST", "/v1/secrets", token, json={
                "name": "K", "value": VALUE, "agent": "globex.ghost"})
            real = await d.call("POST", "/v1/secrets", token, json={
                "name": "K", "value": VALUE, "agent": "globex.bot"})
            assert ghost.status_code == real.status_code == 404
            assert ghost.json()["error"]["message"].replace("globex.ghost", "X") == \
                real.json()["error"]["message"].replace("globex.bot", "X")
            # Naming another tenant's secret from its own agent's settings: refused
            # as a name that exists nowhere is (no oracle), nothing written.
            answers = []
            for name in ("GLOBEX_KEY", "NO_SUCH_KEY"):
                answer = await d.call("PATCH", "/v1/agents/acme.bot", token, json={
                    "settings": {"tenant": "acme", "http_headers": {"api.example.com": {
                        "Authorization": f"Bearer secret:{name}"}}}})
                assert answer.status_code == 422, answer.text
                answers.append(answer.json()["error"]["message"].replace(name, "X"))
                assert answer.json()["error"]["details"]["errors"][0]["field"] == \
                    "body.settings.http_headers.api.example.com.Authorization"
            assert answers[0] == answers[1]
            agent = await d.call("GET", "/v1/agents/acme.bot", token)
            assert "http_headers" not in agent.json()["settings"]
        after = [r for r in await _rows(d) if r[0] == "globex"]
        assert after == [r for r in before if r[0] == "globex"]
        assert await d.runtime.secrets.resolve("GLOBEX_KEY", tenant="globex",
                                               agent="globex.bot", use="t") == VALUE
        denied = [a for a in await d.runtime.identity.audit.page(outcome="denied")]
        assert denied  # the refusals are in the audit log


async def test_narrower_tokens_and_viewers(tmp_path: Path, store_url: str) -> None:
    """A token scoped to some agents of a tenant may set their secrets, not the
    tenant's (its other agents use those); a viewer lists but does not write."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _agent(d, "acme.support", "acme")
        await _agent(d, "acme.billing", "acme")
        made = await d.call("POST", "/v1/secrets", ADMIN,
                            json={"name": "SHARED", "value": VALUE, "tenant": "acme"})
        assert made.status_code == 201
        narrow = await d.mint("support", "member", tenant="acme", agents=["acme.support"])
        own = await d.call("POST", "/v1/secrets", narrow, json={
            "name": "MINE", "value": "support-value", "agent": "acme.support"})
        assert own.status_code == 201, own.text
        for body in ({"name": "SHARED", "value": "x" * 9},
                     {"name": "SHARED", "value": "x" * 9, "tenant": "acme"}):
            answer = await d.call("POST", "/v1/secrets", narrow, json=body)
            assert answer.status_code == 403, answer.text
            assert "whole tenant" in answer.json()["error"]["message"]
        other = await d.call("POST", "/v1/secrets", narrow, json={
            "name": "B", "value": VALUE, "agent": "acme.billing"})
        assert other.status_code == 404
        listed = (await d.call("GET", "/v1/secrets", narrow)).json()["secrets"]
        assert [(s["name"], s["agent"]) for s in listed] == [("MINE", "acme.support")]
        viewer = await d.mint("watcher", "viewer")
        assert (await d.call("GET", "/v1/secrets", viewer)).status_code == 200
        for method, path, kwargs in (
                ("POST", "/v1/secrets", {"json": {"name": "V", "value": VALUE}}),
                ("DELETE", "/v1/secrets/SHARED?tenant=acme", {})):
            answer = await d.call(method, path, viewer, **kwargs)
            assert answer.status_code == 403, answer.text
        assert await d.runtime.secrets.resolve("SHARED", tenant="acme",
                                               agent="acme.billing", use="t") == VALUE
