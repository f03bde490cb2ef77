"""Token scopes on the native API, route by route: every path of the OpenAPI document
is called by a token whose scope leaves the agent out, and must answer exactly what it
answers for an agent (or id) that does not exist, list nothing of it, and write
nothing. A route added later without a check fails here (its template must fall in a
class below, and then it is called). SQLite and PostgreSQL.

Two tenants' agents (``acme-bot``, ``globex-bot``) and three tokens: ``acme`` (scope:
tenant ``acme``), ``globex`` (scope: agents ``globex-*``) and ``admin`` (no scope).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.server._scopes import (
    ACME,
    ADMIN,
    GLOBEX,
    OWNER,
    STRANGER,
    TENANT,
    Seeded,
    auth,
    scoped_daemon,
    seed,
    settings_for,
    settled,
    unchanged,
)

from agentd.assembly import Runtime

#: Path parameters naming an object that belongs to one agent.
ID_PARAMS = ("run_id", "checkpoint_id", "schedule_id", "webhook_id", "delivery_id",
             "approval_id", "fork_id", "suite_id", "eval_run_id")
#: Values of ids that name nothing.
GHOST_IDS = {"run_id": "run_0ghost0000000", "checkpoint_id": "ck_0ghost0000000",
             "schedule_id": "sch_0ghost00000", "webhook_id": "wh_0ghost000000",
             "delivery_id": "whd_0ghost00000", "approval_id": "ap_0ghost000000",
             "fork_id": "fk_0ghost0000000", "suite_id": "es_0ghost0000000",
             "eval_run_id": "er_0ghost0000000"}
GHOST_AGENT = "nobody-bot"
#: Operations no agent scope applies to, and where they are tested instead.
NOT_PER_AGENT = {
    ("GET", "/health"): "public; daemon-wide counts (docs/security.md)",
    ("POST", "/v1/agents"): "creating: test_a_scoped_token_creates_only_inside_its_scope",
    ("GET", "/v1/events"): "the live feed (SSE): test_access_feed.py",
    ("GET", "/v1/tools/{name}"): "a tool of the daemon's catalogue (no agent's)",
    ("GET", "/v1/skills/{skill}"): "a skill of the daemon's registry (no agent's)",
    ("POST", "/v1/skills"): "daemon-wide: test_daemon_wide_writes_need_an_unscoped_token",
    ("DELETE", "/v1/skills/{skill}"): "daemon-wide: test_daemon_wide_writes_...",
    ("POST", "/v1/channels/telegram/{name}/webhook"): "public: Telegram's own secret "
                                                      "authenticates it, not a token",
    ("POST", "/v1/tokens"): "tokens are not agents': tests/identity/test_tokens.py",
    ("POST", "/v1/tokens/{name}/rotate"): "tests/identity/test_tokens.py",
    ("DELETE", "/v1/tokens/{name}"): "tests/identity/test_tokens.py",
    ("POST", "/v1/tenants"): "admins only: tests/identity/test_quotas.py",
    ("GET", "/v1/tenants/{name}"): "a tenant outside the scope is not found: test_quotas",
    ("PATCH", "/v1/tenants/{name}"): "admins only: tests/identity/test_quotas.py",
    ("DELETE", "/v1/tenants/{name}"): "admins only: tests/identity/test_quotas.py",
    ("GET", "/v1/audit"): "admins only (403 to these members): tests/identity/test_audit.py",
    ("GET", "/v1/audit/verify"): "admins only: tests/identity/test_audit.py",
    ("GET", "/metrics"): "every tenant's figures: an unscoped operator's (403 to a "
                         "scoped token): tests/telemetry/test_metrics.py",
    ("POST", "/v1/admin/reload"): "the daemon's configuration: an unscoped admin's (403 "
                                  "to a scoped one): tests/server/test_reload.py",
    ("POST", "/v1/secrets"): "a tenant's (403 outside the scope) or an agent's (body: "
                             "404 outside it): tests/secrets/test_secrets_api.py",
    ("DELETE", "/v1/secrets/{name}"): "as POST, by query: tests/secrets/test_secrets_api.py",
    ("GET", "/v1/mcp/oauth/callback"): "public: a login's state is its credential, bound "
                                       "to the agent and token that started it: "
                                       "tests/oauth/test_mcp_login_attacks.py",
    ("POST", "/v1/evals/suites"): "the agent is in the body: tests/server/test_eval_api.py "
                                  "(and the isolation property)",
}
#: Bodies that get past validation, so that the handler's own check is what answers.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/runs/{run_id}/decide"): {"action": "retry"},
    ("POST", "/v1/approvals/{approval_id}"): {"action": "deny"},
    ("PATCH", "/v1/schedules/{schedule_id}"): {"enabled": False},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"description": "mine now"},
    ("POST", "/v1/checkpoints/{checkpoint_id}/fork"): {"key": "stolen"},
    ("PATCH", "/v1/agents/{name}"): {"instructions": "obey me"},
    ("POST", "/v1/agents/{name}/sessions/{key}/messages"): {"content": "hi"},
    ("POST", "/v1/agents/{name}/memory/search"): {"query": "secret"},
    ("POST", "/v1/agents/{name}/memory/entries"): {"content": "planted"},
    ("PUT", "/v1/agents/{name}/memory/blocks/{label}"): {"value": "planted"},
    ("POST", "/v1/agents/{name}/schedules"): {"every_s": 86400, "content": "x"},
    ("POST", "/v1/agents/{name}/webhooks"): {"url": "http://127.0.0.1:9/x"},
    ("POST", "/v1/runs/{run_id}/fork"): {"from_step": 1},
    ("POST", "/v1/evals/suites/{suite_id}/cases"): {"from_run": "r_0ghost0000000"},
    ("POST", "/v1/evals/suites/{suite_id}/runs"): {},
}
#: List routes and, for each, a query showing every agent's items grouped by agent.
LISTS = {"/v1/agents": {}, "/v1/runs": {}, "/v1/approvals": {}, "/v1/schedules": {},
         "/v1/webhooks": {}, "/v1/usage": {"by": "agent,tenant"}, "/v1/export/runs": {},
         "/v1/evals/suites": {}}
#: List routes taking ``?agent=``: an agent outside the scope is unknown there.
AGENT_FILTERS = ("/v1/runs", "/v1/approvals", "/v1/schedules", "/v1/webhooks",
                 "/v1/export/runs", "/v1/evals/suites")


@pytest.fixture
async def daemon(tmp_path: Path, store_url: str
                 ) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]]:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        seeded = {name: await seed(api, name) for name in ("acme-bot", "globex-bot")}
        yield runtime, api, seeded


def operations(api_doc: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, item in api_doc["paths"].items()
                  for method in item)


def fill(template: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, f"unknown-{name}")

    return re.sub(r"\{(\w+)\}", value, template)


async def call(api: httpx.AsyncClient, method: str, path: str, token: str,
               body: Any = None, **params: str) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": auth(token), "params": params}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {} if body is None else body
    return await api.request(method, path, **kwargs)


def normalised(response: httpx.Response, *values: str) -> tuple[int, str]:
    text = response.text
    for value in values:
        text = text.replace(value, "<X>")
    return response.status_code, text


def classify(method: str, template: str) -> str:
    if (method, template) in NOT_PER_AGENT:
        return "skip"
    if template.startswith("/v1/agents/{name}"):
        return "agent"
    if any(f"{{{p}}}" in template for p in ID_PARAMS):
        return "owned"
    if "{" not in template and method == "GET":
        return "list"
    return "unclassified"


async def test_every_route_answers_an_agent_outside_the_scope_as_one_that_does_not_exist(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    runtime, api, seeded = daemon
    document = (await api.get("/openapi.json", headers=auth(ADMIN))).json()
    ops = operations(document)
    unclassified = [op for op in ops if classify(*op) == "unclassified"]
    assert not unclassified, (f"routes with no scope rule in this test: {unclassified}; "
                              "check the scope in the route and add it here")
    before = await settled(runtime)
    failures: list[str] = []
    checked = {"agent": 0, "owned": 0, "list": 0}
    for victim_name, victim in seeded.items():
        attacker = STRANGER[victim_name]
        values = {"name": victim.name, "key": "chat", "label": "persona",
                  "skill": "no-such-skill", **victim.ids}
        for method, template in ops:
            kind = classify(method, template)
            if kind == "skip":
                continue
            body = BODIES.get((method, template))
            if kind == "agent":
                ghost = {**values, "name": GHOST_AGENT}
                out = await call(api, method, fill(template, values), attacker, body)
                none = await call(api, method, fill(template, ghost), attacker, body)
                if out.status_code != 404 or normalised(out, victim.name) != normalised(
                        none, GHOST_AGENT):
                    failures.append(f"{method} {template} on {victim.name}: "
                                    f"{out.status_code} {out.text[:200]} vs no agent: "
                                    f"{none.status_code} {none.text[:200]}")
            elif kind == "owned":
                param = next(p for p in ID_PARAMS if f"{{{p}}}" in template)
                ghost = {**values, param: GHOST_IDS[param]}
                out = await call(api, method, fill(template, values), attacker, body)
                none = await call(api, method, fill(template, ghost), attacker, body)
                if out.status_code != 404 or normalised(out, values[param]) != normalised(
                        none, GHOST_IDS[param]):
                    failures.append(f"{method} {template} on {victim.name}'s "
                                    f"{values[param]}: {out.status_code} {out.text[:200]}"
                                    f" vs none: {none.status_code} {none.text[:200]}")
            else:  # a list, or a daemon-wide read: nothing of the victim's in it
                out = await call(api, method, template, attacker,
                                 **LISTS.get(template, {}))
                leaked = [v for v in (*victim.values(), TENANT[victim_name])
                          if v in out.text]
                if out.status_code != 200 or leaked:
                    failures.append(f"GET {template} by {victim.name}'s stranger: "
                                    f"{out.status_code}, shows {leaked}")
            checked[kind] += 1
    assert not failures, "\n".join(failures)
    assert min(checked.values()) > 0, checked
    await unchanged(runtime, before)


async def test_the_owner_and_the_unscoped_token_still_see_the_agent(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    """The other side of the walk above: the same reads succeed for the token whose
    scope holds the agent, and for the unscoped one (so the walk can fail)."""
    _, api, seeded = daemon
    document = (await api.get("/openapi.json", headers=auth(ADMIN))).json()
    gets = [t for m, t in operations(document) if m == "GET"
            and classify(m, t) in ("agent", "owned")]
    assert len(gets) > 20
    for victim_name, victim in seeded.items():
        values = {"name": victim.name, "key": "chat", "label": "persona", **victim.ids}
        for token in (OWNER[victim_name], ADMIN):
            for template in gets:
                if set(re.findall(r"\{(\w+)", template)) - set(values):
                    continue  # a parameter this daemon has no object for (a skill)
                out = await call(api, "GET", fill(template, values), token)
                assert out.status_code == 200, (template, token, out.text[:300])
        for template, query in LISTS.items():
            for token in (OWNER[victim_name], ADMIN):
                out = await call(api, "GET", template, token, **query)
                assert victim.name in out.text, (template, token, out.text[:300])
            stranger = await call(api, "GET", template, STRANGER[victim_name], **query)
            assert victim.name not in stranger.text


async def test_list_filters_naming_an_agent_outside_the_scope_answer_as_for_none(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    runtime, api, seeded = daemon
    before = await settled(runtime)
    for victim_name in seeded:
        stranger = STRANGER[victim_name]
        for template in AGENT_FILTERS:
            out = await call(api, "GET", template, stranger, agent=victim_name)
            none = await call(api, "GET", template, stranger, agent=GHOST_AGENT)
            assert out.status_code == 404, (template, out.text)
            assert normalised(out, victim_name) == normalised(none, GHOST_AGENT)
            owner = await call(api, "GET", template, OWNER[victim_name], agent=victim_name)
            assert owner.status_code == 200 and victim_name in owner.text
        feed = await call(api, "GET", "/v1/events", stranger, agent=victim_name)
        none = await call(api, "GET", "/v1/events", stranger, agent=GHOST_AGENT)
        assert feed.status_code == 404
        assert normalised(feed, victim_name) == normalised(none, GHOST_AGENT)
        # Usage outlives agents: a name outside the scope is an empty report, as an
        # unknown one; the tenant filter too.
        usage = await call(api, "GET", "/v1/usage", stranger, agent=victim_name)
        assert usage.json()["usage"] == [{"calls": 0, "input_tokens": 0,
                                          "output_tokens": 0, "cached_tokens": 0,
                                          "cache_write_tokens": 0, "cost_usd": 0.0}]
        by_tenant = await call(api, "GET", "/v1/usage", stranger,
                               tenant=TENANT[victim_name], by="agent")
        assert by_tenant.json()["usage"] == []
    await unchanged(runtime, before)


async def test_usage_is_the_scopes_share(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    _, api, _ = daemon
    everything = (await call(api, "GET", "/v1/usage", ADMIN, by="agent")).json()
    acme = (await call(api, "GET", "/v1/usage", ACME, by="agent")).json()
    totals = (await call(api, "GET", "/v1/usage", ACME)).json()
    rows = {r["agent"]: r for r in everything["usage"]}
    assert set(rows) == {"acme-bot", "globex-bot"} and rows["acme-bot"]["calls"] > 0
    assert acme["usage"] == [rows["acme-bot"]]
    assert totals["usage"] == [{k: v for k, v in rows["acme-bot"].items()
                                if k != "agent"}]
    assert totals["totals"]["calls"] == rows["acme-bot"]["calls"]


async def test_a_scoped_token_creates_only_inside_its_scope(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    runtime, api, _ = daemon
    before = await settled(runtime)
    refused = [
        (ACME, {"name": "acme-2", "settings": {"tenant": "globex"}}, "tenant"),
        # (a scope of one tenant puts agents there when they name none: below)
        (ACME, {"name": "acme-2", "settings": {"tenant": "default"}}, "tenant"),
        (GLOBEX, {"name": "evil-bot"}, "name"),
        (GLOBEX, {"name": "globex-2", "settings": {"memory": {"namespaces": ["acme:x"]}}},
         "namespaces"),
        (ACME, {"name": "acme-2", "settings": {"tenant": "acme",
                                               "memory": {"namespaces": ["acme:x"]}}},
         "namespaces"),
    ]
    for token, body, field in refused:
        out = await api.post("/v1/agents", headers=auth(token), json=body)
        assert out.status_code == 403, (body, out.text)
        error = out.json()["error"]
        assert error["code"] == "forbidden" and field in error["message"] + str(
            error.get("details")), error
    # Changing an agent's tenant out of the scope, or joining it to another's shared
    # memory, is refused the same way; the agent is untouched.
    moved = await api.patch("/v1/agents/acme-bot", headers=auth(ACME),
                            json={"settings": {"tenant": "globex"}})
    assert moved.status_code == 403, moved.text
    joined = await api.patch("/v1/agents/globex-bot", headers=auth(GLOBEX), json={
        "settings": {"tenant": "globex", "memory": {"namespaces": ["acme:shared"]}}})
    assert joined.status_code == 403, joined.text
    # A scoped token is a member: a stdio MCP command off the operator's list is
    # refused (the unscoped token, an admin by default, is not asked here).
    mcp = await api.post("/v1/agents", headers=auth(ACME), json={
        "name": "acme-mcp", "settings": {"tenant": "acme",
                                         "mcp": [{"name": "x", "command": ["sh"]}]}})
    assert mcp.status_code == 403 and "operator" in mcp.text, mcp.text
    await unchanged(runtime, before)
    made = await api.post("/v1/agents", headers=auth(ACME), json={"name": "acme-2"})
    assert made.status_code == 201, made.text
    assert made.json()["settings"]["tenant"] == "acme"
    made = await api.post("/v1/agents", headers=auth(GLOBEX), json={
        "name": "globex-2", "settings": {"memory": {"namespaces": ["globex:shared"]}}})
    assert made.status_code == 201, made.text
    names = {a["name"] for a in (await api.get("/v1/agents", headers=auth(ACME))).json()[
        "agents"]}
    assert names == {"acme-bot", "acme-2"}
    kept = await api.patch("/v1/agents/acme-bot", headers=auth(ACME),
                           json={"settings": {"tenant": "acme"}, "instructions": "hi"})
    assert kept.status_code == 200, kept.text


async def test_daemon_wide_writes_need_an_unscoped_token(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    runtime, api, _ = daemon
    before = await settled(runtime)
    for token in (ACME, GLOBEX):
        install = await api.post("/v1/skills", headers={
            **auth(token), "content-type": "application/zip"}, content=b"PK\x05\x06" +
            b"\x00" * 18)
        assert install.status_code == 403, install.text
        remove = await api.delete("/v1/skills/anything", headers=auth(token))
        assert remove.status_code == 403, remove.text
    await unchanged(runtime, before)
    # The unscoped token gets past the scope (to the archive's own check).
    install = await api.post("/v1/skills", headers={
        **auth(ADMIN), "content-type": "application/zip"}, content=b"PK\x05\x06" +
        b"\x00" * 18)
    assert install.status_code == 422, install.text


async def test_an_attach_to_an_agent_outside_the_scope_is_refused(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    runtime, api, _ = daemon
    before = await settled(runtime)
    out = await api.post("/v1/agents/acme-bot/memory/blocks/persona/attach",
                         headers=auth(ACME), json={"agent": "globex-bot"})
    none = await api.post("/v1/agents/acme-bot/memory/blocks/persona/attach",
                          headers=auth(ACME), json={"agent": GHOST_AGENT})
    assert out.status_code == 404
    assert normalised(out, "globex-bot") == normalised(none, GHOST_AGENT)
    await unchanged(runtime, before)


async def test_the_kernel_names_no_agent_or_tenant(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    """What a scoped token sees of the daemon-wide state (docs/security.md)."""
    _, api, seeded = daemon
    text = (await api.get("/v1/kernel", headers=auth(ACME))).text
    for name in seeded:
        assert name not in text and TENANT[name] not in text


async def test_pages_of_a_scope_with_several_agents(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    """Lists filtered in the store's query keep their pages: a scope of two agents
    pages through exactly their runs, newest first, as the unscoped token sees them."""
    _, api, _ = daemon
    admin = auth(ADMIN)
    made = await api.post("/v1/agents", headers=admin,
                          json={"name": "acme-2", "settings": {"tenant": "acme"}})
    assert made.status_code == 201, made.text
    for i in range(3):
        for name in ("acme-2", "globex-bot", "acme-bot"):
            sent = await api.post(f"/v1/agents/{name}/sessions/p/messages", headers=admin,
                                  json={"content": f"page {i}", "wait": True})
            assert sent.status_code == 200, sent.text
    schedule = await api.post("/v1/agents/acme-2/schedules", headers=admin,
                              json={"every_s": 86400, "content": "x"})
    assert schedule.status_code == 201, schedule.text

    async def pages(token: str) -> list[str]:
        out: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await api.get("/v1/runs", headers=auth(token), params=params)).json()
            assert len(page["runs"]) <= 2
            out += [f"{r['agent']}:{r['id']}" for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return out

    everything = await pages(ADMIN)
    mine = await pages(ACME)
    assert mine == [r for r in everything if r.split(":")[0] in ("acme-bot", "acme-2")]
    assert len(mine) == 3 + 2 * 3  # acme-bot: 3 seeded (one a fork's) + 3, acme-2: 3
    schedules = (await api.get("/v1/schedules", headers=auth(ACME))).json()["schedules"]
    assert sorted(s["agent"] for s in schedules) == ["acme-2", "acme-bot"]


async def test_the_overview_and_agent_pages_are_the_scopes(
        daemon: tuple[Runtime, httpx.AsyncClient, dict[str, Seeded]]) -> None:
    _, api, _ = daemon
    mine = (await api.get("/v1/overview", headers=auth(ACME))).json()
    everything = (await api.get("/v1/overview", headers=auth(ADMIN))).json()
    assert everything["agents"]["total"] == 2 and mine["agents"]["total"] == 1
    assert sum(mine["agents"]["by_state"].values()) == 1
    assert everything["runs"]["waiting_approval"] == 2
    assert mine["runs"]["waiting_approval"] == mine["approvals_waiting"] == 1
    # What the runs under way here are doing: the scope's only.
    assert {b["agent"] for b in everything["busy"]} == {"acme-bot", "globex-bot"}
    assert [(b["agent"], b["waiting_for"]["doing"], b["waiting_for"]["detail"])
            for b in mine["busy"]] == [("acme-bot", "approval", "deploy")]
    usage = (await call(api, "GET", "/v1/usage", ADMIN, by="agent")).json()["usage"]
    acme_calls = next(r["calls"] for r in usage if r["agent"] == "acme-bot")
    assert mine["usage_today"]["calls"] == acme_calls > 0
    assert everything["usage_today"]["calls"] > acme_calls
    for query in ({"limit": "10"}, {"q": "bot"}, {"state": "created,running,paused"},
                  {"after": "a"}):
        page = await call(api, "GET", "/v1/agents", GLOBEX, **query)
        assert [a["name"] for a in page.json()["agents"]] == ["globex-bot"], query
        both = await call(api, "GET", "/v1/agents", ADMIN, **query)
        assert {a["name"] for a in both.json()["agents"]} == {"acme-bot", "globex-bot"}
