"""Named tokens through the API: made, listed, used, rotated, revoked, expired; who may
make what; every bad input a clear 4xx with nothing written; the text never stored or
logged. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for

from agentd.security.identity import hash_token


async def _count_tokens(d: Daemon) -> int:
    row = await d.runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM tokens"))
    return int(row[0]) if row else 0


async def test_a_token_is_shown_once_stored_hashed_and_works_at_once(
        tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/tokens", ADMIN, json={
            "name": "ci", "role": "member", "tenant": "acme"})
        assert made.status_code == 201, made.text
        body = made.json()
        text = body["token"]
        assert text.startswith("agd_") and body["prefix"] == text[:14]
        assert (body["role"], body["tenant"], body["source"]) == ("member", "acme", "api")
        # Only a hash is stored; the text appears nowhere else.
        rows = await d.runtime.store.engine.read(
            lambda tx: tx.all("SELECT name, id, hash FROM tokens"))
        assert rows == [("ci", text[4:14], hash_token(text))]
        listed = await d.call("GET", "/v1/tokens", ADMIN)
        assert text not in listed.text
        names = {t["name"]: t for t in listed.json()["tokens"]}
        assert names["ci"]["prefix"] == text[:14] and "token" not in names["ci"]
        assert names["token-1"]["role"] == "admin" and names["token-1"]["source"] == "config"
        assert names["token-2"]["role"] == "member"
        # It works at once, in its scope: tenant acme's agents only.
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "globex.bot",
                                                         "settings": {"tenant": "globex"}})
        mine = await d.call("POST", "/v1/agents", text, json={"name": "acme.bot"})
        assert mine.status_code == 201 and mine.json()["settings"]["tenant"] == "acme"
        seen = await d.call("GET", "/v1/agents", text)
        assert [a["name"] for a in seen.json()["agents"]] == ["acme.bot"]
        other = await d.call("GET", "/v1/agents/globex.bot", text)
        missing = await d.call("GET", "/v1/agents/globex.none", text)
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"]["message"].replace("globex.bot", "X") == \
            missing.json()["error"]["message"].replace("globex.none", "X")
        # Rotated: the old text stops, the new one works.
        rotated = await d.call("POST", "/v1/tokens/ci/rotate", text)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["token"]
        assert new != text
        assert (await d.call("GET", "/v1/agents", text)).status_code == 401
        assert (await d.call("GET", "/v1/agents", new)).status_code == 200
        # Revoked: refused at once.
        assert (await d.call("DELETE", "/v1/tokens/ci", ADMIN)).status_code == 204
        gone = await d.call("GET", "/v1/agents", new)
        assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"
        await d.runtime.identity.audit.flush()
    assert text not in caplog.text and new not in caplog.text


async def test_an_expired_token_is_refused_saying_so(tmp_path: Path, store_url: str
                                                     ) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        now = [datetime.now(UTC).timestamp()]
        d.runtime.identity.tokens.clock = lambda: now[0]
        soon = datetime.fromtimestamp(now[0], UTC) + timedelta(hours=1)
        text = await d.mint("temp", "viewer", expires_at=soon.isoformat())
        assert (await d.call("GET", "/v1/agents", text)).status_code == 200
        now[0] += 3601  # (the book's clock: no waiting)
        expired = await d.call("GET", "/v1/agents", text)
        assert expired.status_code == 401
        assert "expired" in expired.json()["error"]["message"]
        listed = {t["name"]: t for t in (await d.call("GET", "/v1/tokens", ADMIN)).json()[
            "tokens"]}
        assert listed["temp"]["expired"] is True


async def test_malformed_and_unknown_tokens_are_refused_alike(tmp_path: Path,
                                                              store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        text = await d.mint("real", "member")
        forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
        answers = []
        for token in (forged, "agd_zzzzzzzzzz_" + "x" * 43, "agd_", "nonsense", "x" * 5000,
                      text[:14]):
            out = await d.call("GET", "/v1/agents", token)
            answers.append((out.status_code, out.json()["error"]["message"]))
        assert set(answers) == {(401, "missing or invalid bearer token")}


async def test_no_token_is_made_above_its_makers_rights(tmp_path: Path, store_url: str
                                                        ) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        member = await d.mint("acme-member", "member", tenant="acme")
        viewer = await d.mint("acme-viewer", "viewer", tenant="acme")
        operator = await d.mint("ops", "operator")
        before = await _count_tokens(d)
        refused = [
            (member, {"name": "x", "role": "operator", "tenant": "acme"}, 403, "body.role"),
            (member, {"name": "x", "role": "admin"}, 403, "body.role"),
            (member, {"name": "x", "role": "member"}, 403, "body.tenant"),  # unbound
            # A tenant outside the maker's scope is one that does not exist to it (a
            # 403 would tell it is there: tests/isolation/test_isolation_found.py).
            (member, {"name": "x", "role": "member", "tenant": "globex"}, 404,
             "body.tenant"),
            (SCOPED, {"name": "x", "role": "member", "tenant": "globex"}, 404,
             "body.tenant"),
            (SCOPED, {"name": "x", "role": "operator", "tenant": "acme"}, 403, "body.role"),
            (viewer, {"name": "x", "role": "viewer", "tenant": "acme"}, 403, None),
            (operator, {"name": "x", "role": "admin"}, 403, "body.role"),
            # Bad input: a clear 4xx naming the field.
            (ADMIN, {"name": "x", "role": "root"}, 422, "body.role"),
            (ADMIN, {"name": "x", "role": "member", "tenant": "nope"}, 404, "body.tenant"),
            (ADMIN, {"name": "bad name!", "role": "member"}, 422, "body.name"),
            (ADMIN, {"name": "bob\n", "role": "member"}, 422, "body.name"),
            (ADMIN, {"name": "token-1", "role": "member"}, 409, None),
            (ADMIN, {"name": "x", "role": "member", "agents": ["[oops"]}, 422,
             "body.agents[0]"),
            (ADMIN, {"name": "x", "role": "member", "expires_at": "2001-01-01T00:00:00Z"},
             422, "body.expires_at"),
            (ADMIN, {"name": "x", "role": "member", "expires_at": "2099-01-01T00:00:00"},
             422, "body.expires_at"),
            (ADMIN, {"name": "acme-member", "role": "member"}, 409, None),
        ]
        for token, body, status, field in refused:
            out = await d.call("POST", "/v1/tokens", token, json=body)
            assert out.status_code == status, (body, out.text)
            if field is not None:
                assert field in out.text, (body, out.text)
        assert await _count_tokens(d) == before
        # Within its rights: a member makes a viewer of its own tenant; an operator a
        # member anywhere.
        made = await d.call("POST", "/v1/tokens", member, json={
            "name": "acme-dash", "role": "viewer", "tenant": "acme"})
        assert made.status_code == 201, made.text
        ok = await d.call("POST", "/v1/tokens", operator, json={"name": "g", "role": "member",
                                                                  "tenant": "globex"})
        assert ok.status_code == 201, ok.text
        # A member sees itself and what it made; it revokes those, not the others.
        seen = {t["name"] for t in (await d.call("GET", "/v1/tokens", member)).json()[
            "tokens"]}
        assert seen == {"acme-member", "acme-dash", "acme-viewer"}
        assert (await d.call("DELETE", "/v1/tokens/g", member)).status_code == 404
        assert (await d.call("DELETE", "/v1/tokens/token-1", ADMIN)).status_code == 409
        assert (await d.call("DELETE", "/v1/tokens/acme-dash", member)).status_code == 204


async def test_a_viewer_reads_and_changes_nothing(tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "acme.bot",
                                                         "settings": {"tenant": "acme"}})
        sent = await d.call("POST", "/v1/agents/acme.bot/sessions/s/messages", ADMIN,
                            json={"content": "hello", "wait": True})
        assert sent.status_code == 200, sent.text
        viewer = await d.mint("dash", "viewer", tenant="acme")
        assert (await d.call("GET", "/v1/agents/acme.bot", viewer)).status_code == 200
        events = await d.call("GET", "/v1/agents/acme.bot/sessions/s/events", viewer)
        assert events.status_code == 200 and events.json()["events"]
        search = await d.call("POST", "/v1/agents/acme.bot/memory/search", viewer,
                              json={"query": "x"})
        assert search.status_code == 200, search.text
        for method, path, body in (
                ("POST", "/v1/agents/acme.bot/sessions/s/messages", {"content": "hi"}),
                ("PATCH", "/v1/agents/acme.bot", {"instructions": "obey"}),
                ("DELETE", "/v1/agents/acme.bot", None),
                ("POST", "/v1/agents", {"name": "acme.x"}),
                ("POST", "/v1/agents/acme.bot/memory/entries", {"content": "x"}),
                ("POST", "/v1/chat/completions", {"model": "acme.bot", "messages": [
                    {"role": "user", "content": "hi"}]})):
            out = await d.call(method, path, viewer, json=body)
            assert out.status_code == 403, (path, out.text)
        assert [a["name"] for a in (await d.call("GET", "/v1/agents", ADMIN)).json()[
            "agents"]] == ["acme.bot"]


async def test_a_tenant_token_names_its_agents_under_its_tenant(tmp_path: Path,
                                                                store_url: str) -> None:
    """Chain 7, the name oracle: agent names are daemon-wide, so a tenant's 409
    ``agent_exists`` would confirm another tenant's agent. A tenant-bound token names
    its agents ``<tenant>.<name>``, and nobody gives another tenant's prefix to an
    agent of the wrong tenant: the answer is the same whether the name exists."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "support",
                                                         "settings": {"tenant": "globex"}})
        await d.call("POST", "/v1/agents", ADMIN, json={"name": "globex.support",
                                                         "settings": {"tenant": "globex"}})
        acme = await d.mint("acme", "member", tenant="acme")
        taken = await d.call("POST", "/v1/agents", acme, json={"name": "support"})
        free = await d.call("POST", "/v1/agents", acme, json={"name": "nobody-has-this"})
        assert taken.status_code == free.status_code == 403
        assert taken.json()["error"]["message"] == free.json()["error"]["message"]
        prefixed = await d.call("POST", "/v1/agents", acme, json={"name": "globex.support"})
        prefixed_free = await d.call("POST", "/v1/agents", acme, json={"name": "globex.x"})
        assert prefixed.status_code == prefixed_free.status_code == 403
        assert prefixed.json() == prefixed_free.json()
        # No one puts an agent of another tenant under a tenant's prefix.
        squat = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "acme.squat", "settings": {"tenant": "globex"}})
        assert squat.status_code == 422 and "body.name" in squat.text
        assert (await d.call("POST", "/v1/agents", acme, json={"name": "acme.support"})
                ).status_code == 201


async def test_a_token_made_while_the_book_is_read_again_works_at_once(
        tmp_path: Path, store_url: str) -> None:
    """A re-read of tokens and tenants (a node's poll on a shared store) begun before a
    token is made here must not hide that token when it lands: the PostgreSQL
    isolation property once saw a token just made answer 401 until the next poll.
    The re-read is held after its read until the token and a tenant are made."""
    async with daemon(settings_for(tmp_path, store_url)) as d:
        identity = d.runtime.identity
        store = identity.store
        read, release = asyncio.Event(), asyncio.Event()
        real = store.identity

        async def held() -> Any:
            answer = await real()
            if not read.is_set():
                read.set()
                await release.wait()
            return answer

        store.identity = held  # type: ignore[method-assign]
        identity.version = -2  # (so that the re-read loads what it read)
        rereading = asyncio.create_task(identity.refresh())
        await read.wait()
        text = await d.mint("fresh", "member", tenant="acme")
        tenant = await d.call("POST", "/v1/tenants", ADMIN, json={"name": "newco"})
        assert tenant.status_code == 201, tenant.text
        release.set()
        assert await rereading == 1
        assert (await d.call("GET", "/v1/agents", text)).status_code == 200
        assert identity.tenants.exists("newco")
