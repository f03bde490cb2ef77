"""Isolation in termo mode (``agentd serve --adapter``: termo-agent's routes for one
agent), as a property: hypothesis puts the door's agent in a tenant (or none) and
draws named tokens of every role, bound to a tenant, to agent patterns or both; every
token (the configuration's ``[access]`` ones too, and none) calls every route of the
door. A token that may use the agent (and, for a write, is no viewer) gets what the
door's own token gets; any other gets exactly what a request without a token gets.

The door's app is made once (its agent and adapter are made at start); each example
moves the agent and makes its tokens, named after the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.isolation._world import CONFIGURED, ROLES, SETTINGS, Caller
from tests.isolation.test_isolation_property import EXAMPLES, PHASES
from tests.server._scopes import ADMIN, auth, settings_for

from agentd.assembly import Runtime
from agentd.server.app import create_app
from agentd.store import open_store

MINIMAL = "agentd.testing.termo_adapter:Minimal"
AGENT = "bot"
TERMO = "termo-door-token-0123"
#: (method, path, body, whether it writes).
ROUTES: tuple[tuple[str, str, Any, bool], ...] = (
    ("GET", "/api/sessions", None, False),
    ("GET", "/api/sessions/s/history", None, False),
    ("GET", "/api/config", None, False),
    ("GET", "/api/tools", None, False),
    ("GET", "/api/memory", None, False),
    ("GET", "/api/heartbeat", None, False),
    # (a POST: a viewer's is refused, as every POST but the native memory search)
    ("POST", "/api/memory/search", {"query": "owls"}, True),
    ("POST", "/api/send", {"message": "hi", "session_key": "s"}, True),
    ("PATCH", "/api/memory", {"content": "likes owls"}, True),
)
_TOKEN = st.tuples(st.sampled_from(ROLES), st.sampled_from((None, "t0", "t1")),
                   st.one_of(st.none(), st.lists(st.sampled_from(
                       (AGENT, "b*", "t0.*", "other")), min_size=1, max_size=2,
                       unique=True).map(tuple)))
_TOKENS = st.lists(_TOKEN, min_size=1, max_size=4).filter(
    lambda ts: all(t[1] is not None or t[2] is not None for t in ts))


async def _answer(api: httpx.AsyncClient, method: str, path: str, body: Any,
                  token: str | None) -> tuple[int, str]:
    out = await api.request(method, path, json=body,
                            headers=auth(token) if token is not None else {})
    return out.status_code, out.text


async def check(api: httpx.AsyncClient, example: int, tenant: str | None,
                tokens: list[tuple[str, str | None, tuple[str, ...] | None]]) -> None:
    moved = await api.patch(f"/v1/agents/{AGENT}", headers=auth(ADMIN), json={
        "settings": {} if tenant is None else {"tenant": tenant}})
    assert moved.status_code == 200, moved.text
    callers = list(CONFIGURED)
    for n, (role, bound, agents) in enumerate(tokens):
        body: dict[str, Any] = {"name": f"e{example}-{n}", "role": role}
        if bound is not None:
            body["tenant"] = bound
        if agents is not None:
            body["agents"] = list(agents)
        made = await api.post("/v1/tokens", headers=auth(ADMIN), json=body)
        assert made.status_code == 201, made.text
        callers.append(Caller(body["name"], made.json()["token"], role,
                              None if bound is None else (bound,), agents, "api"))
    failures = []
    for method, path, body, write in ROUTES:
        nobody = await _answer(api, method, path, body, None)
        assert nobody[0] == 401, nobody
        for caller in callers:
            out = await _answer(api, method, path, body, caller.text)
            allowed = caller.may(AGENT, tenant) and not (write and caller.role == "viewer")
            if not allowed and out != nobody:
                failures.append(f"{method} {path} by {caller}: {out} (no token: {nobody})")
            elif allowed and not write:
                door = await _answer(api, method, path, body, TERMO)
                if out != door:
                    failures.append(f"{method} {path} by {caller}: {out} (the door's "
                                    f"token: {door})")
            elif allowed and out[0] >= 300:
                failures.append(f"{method} {path} by {caller}: refused {out}")
    assert not failures, f"agent in tenant {tenant}:\n" + "\n".join(failures)


def test_termo_answers_a_token_without_its_agent_as_no_token(tmp_path: Path) -> None:
    config = settings_for(tmp_path, f"sqlite:///{tmp_path / 'termo.db'}",
                          termo={"adapter": MINIMAL, "agent": AGENT, "token": TERMO},
                          **SETTINGS)
    counter = itertools.count()

    async def serve(stack: contextlib.AsyncExitStack) -> httpx.AsyncClient:
        runtime = Runtime(config, await open_store(config.database_url))
        await runtime.start()
        stack.push_async_callback(runtime.close)
        app = create_app(config, runtime)
        await stack.enter_async_context(app.router.lifespan_context(app))
        api = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60))
        for tenant in ("t0", "t1"):
            made = await api.post("/v1/tenants", headers=auth(ADMIN), json={"name": tenant})
            assert made.status_code == 201, made.text
        return api

    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        api = runner.run(serve(stack))
        try:
            @settings(max_examples=max(5, EXAMPLES // 2), deadline=None, derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck),
                      phases=PHASES, report_multiple_bugs=False)
            @given(tenant=st.sampled_from((None, "t0", "t1")), tokens=_TOKENS)
            def example(tenant: str | None,
                        tokens: list[tuple[str, str | None, tuple[str, ...] | None]]
                        ) -> None:
                runner.run(check(api, next(counter), tenant, tokens))

            example()
        finally:
            runner.run(stack.aclose())
