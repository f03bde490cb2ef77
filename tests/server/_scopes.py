"""A daemon with two tenants' agents and scoped tokens, for the token-scope tests
(tests/server/test_access*.py and the doors' tests).

``acme-bot`` (tenant ``acme``) and ``globex-bot`` (tenant ``globex``) each get a
completed run, a run waiting for an approval, a checkpoint, a schedule, a webhook
with a delivery, a memory entry and a memory block, a fork of the completed run, and
an eval suite with that run as its case and one eval run. Three tokens:

- ``token-1`` (ACME): ``tenants = ["acme"]``;
- ``token-2`` (GLOBEX): ``agents = ["globex-*"]``, ``namespaces = ["globex:*"]``;
- ``token-3`` (ADMIN): no scope, every agent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import PATIENCE_S, eventually, wait_for_run

from agentd.assembly import Runtime
from agentd.config import Settings, WebhooksConfig
from agentd.server.app import create_app
from agentd.store import open_store
from agentd.tools import tool

ACME, GLOBEX, ADMIN = "acme-token-0123456789", "globex-token-0123456789", "admin-token-01234"
TOKENS = {"acme": ACME, "globex": GLOBEX, "admin": ADMIN}
ACCESS = {"token-1": {"tenants": ["acme"]},
          "token-2": {"agents": ["globex-*"], "namespaces": ["globex:*"]}}
#: Each agent's tenant.
TENANT = {"acme-bot": "acme", "globex-bot": "globex"}
#: The token that may use each agent (and the one that may not).
OWNER = {"acme-bot": ACME, "globex-bot": GLOBEX}
STRANGER = {"acme-bot": GLOBEX, "globex-bot": ACME}


@tool(needs_approval=True)
def deploy(target: str) -> str:
    """Deploy somewhere (asks a person first)."""
    return f"deployed to {target}"


def settings_for(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    """Settings with the three tokens and their scopes (webhooks may reach 127.0.0.1);
    ``tokens`` and ``access`` in ``extra`` replace them (``ADMIN`` stays third)."""
    tokens = extra.pop("tokens", [ACME, GLOBEX, ADMIN])
    access = extra.pop("access", ACCESS)
    return Settings(home=tmp_path / "home", database_url=database_url, demo_agent=False,
                    shutdown_grace_s=2.0, tokens=tokens, access=access,
                    webhooks=WebhooksConfig(allow_hosts=["127.0.0.1"],
                                            allow_http=["127.0.0.1"]), **extra)


@asynccontextmanager
async def scoped_daemon(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """The runtime (with the ``deploy`` tool) and a client of the app over ASGI (it
    sends no token: each request says which)."""
    runtime = Runtime(settings, await open_store(settings.database_url))
    runtime.tools.register(deploy)
    await runtime.start()
    try:
        app = create_app(settings, runtime)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
            yield runtime, api
    finally:
        await runtime.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Seeded:
    """One agent's objects, by the path parameter that names them."""

    name: str
    ids: dict[str, str] = field(default_factory=dict)

    def values(self) -> list[str]:
        """Its name and ids (not the session key and block label every agent has)."""
        return [self.name, *(v for k, v in self.ids.items() if k not in ("key", "label"))]


async def _ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in (statuses or (200, 201)), (
        f"{response.request.method} {response.request.url}: {response.status_code} "
        f"{response.text}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def seed(api: httpx.AsyncClient, name: str, *,
               maker: dict[str, str] | None = None,
               settings: dict[str, Any] | None = None) -> Seeded:
    """``name``'s agent (made by the token in the headers ``maker``, the admin's by
    default, with ``settings``: its tenant in :data:`TENANT` by default) and one of
    each of its objects, made with the admin token."""
    h = auth(ADMIN)
    out = Seeded(name)
    await _ok(await api.post("/v1/agents", headers=maker or h, json={
        "name": name, "tools": ["deploy"],
        "settings": {"tenant": TENANT[name]} if settings is None else settings}), 201)
    sent = await _ok(await api.post(f"/v1/agents/{name}/sessions/chat/messages", headers=h,
                                    json={"content": f"hello from {name}", "wait": True}))
    assert sent["status"] == "completed", sent
    out.ids["run_id"] = sent["id"]
    out.ids["key"] = "chat"
    asked = await _ok(await api.post(
        f"/v1/agents/{name}/sessions/ask/messages", headers=h,
        json={"content": '/tool deploy {"target": "prod"}'}), 200, 202)
    await wait_for_run(_Authed(api, h), asked["id"], "waiting_approval")
    out.ids["waiting_run"] = asked["id"]
    pending = await _ok(await api.get("/v1/approvals", headers=h, params={"agent": name}))
    out.ids["approval_id"] = pending["approvals"][0]["approval_id"]
    checkpoint = await _ok(await api.post(f"/v1/agents/{name}/sessions/chat/checkpoints",
                                          headers=h, json={"name": "c1"}), 201)
    out.ids["checkpoint_id"] = checkpoint["id"]
    schedule = await _ok(await api.post(f"/v1/agents/{name}/schedules", headers=h, json={
        "every_s": 86400, "content": "tick", "session": "chat"}), 201)
    out.ids["schedule_id"] = schedule["id"]
    hook = await _ok(await api.post(f"/v1/agents/{name}/webhooks", headers=h, json={
        "url": "http://127.0.0.1:9/hook", "enabled": False}), 201)
    out.ids["webhook_id"] = hook["id"]
    ping = await _ok(await api.post(f"/v1/webhooks/{hook['id']}/ping", headers=h), 202)
    out.ids["delivery_id"] = ping["id"]
    entry = await _ok(await api.post(f"/v1/agents/{name}/memory/entries", headers=h,
                                     json={"content": f"the secret of {name}"}), 201)
    out.ids["entry_id"] = entry["id"]
    await _ok(await api.put(f"/v1/agents/{name}/memory/blocks/persona", headers=h,
                            json={"value": f"I am {name}"}))
    out.ids["label"] = "persona"
    fork = await _ok(await api.post(f"/v1/runs/{out.ids['run_id']}/fork", headers=h,
                                    json={"from_step": 1}), 200)
    out.ids["fork_id"] = fork["fork_id"]
    suite = await _ok(await api.post("/v1/evals/suites", headers=h,
                                     json={"agent": name, "name": "smoke"}), 201)
    out.ids["suite_id"] = suite["id"]
    case = await _ok(await api.post(f"/v1/evals/suites/{suite['id']}/cases", headers=h,
                                    json={"from_run": out.ids["run_id"]}), 201)
    out.ids["case_id"] = case["cases"][0]["id"]
    evaluated = await _ok(await api.post(f"/v1/evals/suites/{suite['id']}/runs", headers=h,
                                         json={"wait": True}), 200)
    out.ids["eval_run_id"] = evaluated["id"]
    return out


class _Authed:
    """An ``api`` whose GETs carry ``headers`` (for wait_for_run)."""

    def __init__(self, api: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.api, self.headers = api, headers

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.api.get(url, headers=self.headers, **kwargs)


async def snapshot(runtime: Runtime) -> dict[str, list[str]]:
    """Every row of every table, to compare before and after refused requests."""
    store = runtime.store
    if store.dialect == "sqlite":
        listing = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    else:
        listing = ("SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = current_schema() ORDER BY table_name")
    tables = [r[0] for r in await store.engine.read(lambda tx: tx.all(listing))]
    out: dict[str, list[str]] = {}
    for table in tables:
        if table.startswith(("sqlite_", "memory_fts")) or table in VOLATILE:
            continue
        if store.dialect == "sqlite":
            columns = f"SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        else:
            columns = ("SELECT column_name FROM information_schema.columns WHERE "
                       f"table_schema = current_schema() AND table_name = '{table}' "
                       "ORDER BY ordinal_position")
        names = [r[0] for r in await store.engine.read(lambda tx, q=columns: tx.all(q))]
        kept = ", ".join(n for n in names if n not in VOLATILE_COLUMNS)
        rows = await store.engine.read(
            lambda tx, t=table, k=kept: tx.all(f"SELECT {k} FROM {t}"))
        out[table] = sorted(json.dumps([str(v) for v in row]) for row in rows)
    return out


#: Tables the daemon writes by itself while nothing is asked of it (leases, clocks).
VOLATILE = frozenset({"schema_migrations", "nodes", "node_liveness"})
#: Columns it renews by itself: a lease's expiry (a run waiting for approval keeps its
#: lease, renewed every third of ``lease_ttl_s``, whatever requests come).
VOLATILE_COLUMNS = frozenset({"lease_expires_at", "lease_until"})


async def settled(runtime: Runtime) -> dict[str, list[str]]:
    """The snapshot once the daemon's own work on what was just made is done: the
    memory entries' vectors (written after them) embedded, then two in a row the same.
    (Drained, not waited for: on a loaded machine the embedder's task may not have run
    within any pause, and its write then lands in the middle of the walk.)"""
    vectors = runtime.entries.vectors
    if vectors is not None:
        assert await vectors.drain(None, seconds=PATIENCE_S), "the embedder did not drain"
    last = await snapshot(runtime)

    async def same() -> bool:
        nonlocal last
        await asyncio.sleep(0.2)
        now = await snapshot(runtime)
        done, last = now == last, now
        return done

    await eventually(same, what="the store settling")
    return last


#: What a refusal is meant to write: its record (checked by the audit tests).
RECORDS = frozenset({"audit_log"})


async def unchanged(runtime: Runtime, before: dict[str, list[str]]) -> None:
    """Nothing but the audit log's record of the refusals changed since ``before``."""
    await runtime.identity.audit.flush()
    after = await snapshot(runtime)
    changed = {t: (sorted(set(after.get(t, [])) - set(rows))[:3],
                   sorted(set(rows) - set(after.get(t, [])))[:3])
               for t, rows in before.items() if after.get(t) != rows and t not in RECORDS}
    assert not changed, f"refused requests wrote: {str(changed)[:3000]}"


__all__ = ["ACCESS", "ACME", "ADMIN", "GLOBEX", "OWNER", "STRANGER", "TENANT", "TOKENS",
           "Seeded", "auth", "deploy", "eventually", "scoped_daemon", "seed", "settings_for",
           "settled", "snapshot", "unchanged"]
