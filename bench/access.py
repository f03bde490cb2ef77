"""What token scopes (``access``) cost a request, in one process over ASGI.

One SQLite home with N agents (default 200: half in tenant ``acme``, half in
``globex``), each with a session holding one completed run. The same requests are
timed with four tokens:

- ``none``: a daemon with no scopes configured (the check returns at once);
- ``unscoped``: scopes configured, the token has none (every agent);
- ``names``: a scope of name patterns only (decided without a read);
- ``tenants``: a scope of tenants (a read of the agent, or of every agent for a list);
- ``named``: a named token (``POST /v1/tokens``, issue 27) bound to tenant ``acme``,
  a member: the same scope as ``tenants``, found by its id and hash.

Routes: ``GET /v1/agents/{name}``, ``GET .../sessions/{key}/events``, ``POST
.../messages`` (``wait=true``: the turn is in the request), ``GET /v1/runs?limit=50``
and ``GET /v1/agents``. Reported per route and token: the process's CPU microseconds
per request (client included: httpx over ASGI, one request at a time; CPU rather than
wall time, so that a loaded machine skews it less), the median of ``--rounds`` rounds
taken in turns, and its difference from ``none``. Then the check alone
(``require_agent``, the call every ``/v1/agents/{name}`` route makes) per token, and
the bearer check alone (``TokenCheck.principal``: who a request is) for a configured
and a named token, in microseconds. stdout gets one JSON line; progress goes to
stderr.

    PYTHONPATH=src .venv/bin/python bench/access.py [--agents 200] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app

TOKENS = {"names": "bench-names-token", "tenants": "bench-tenants-token",
          "unscoped": "bench-unscoped-token"}
ACCESS = {"token-1": {"agents": ["acme-*"]}, "token-2": {"tenants": ["acme"]}}


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _daemon(home: Path, agents: int, scoped: bool) -> tuple[Runtime, Any]:
    settings = Settings(home=home, demo_agent=False, shutdown_grace_s=2.0,
                        tokens=[TOKENS["names"], TOKENS["tenants"], TOKENS["unscoped"]],
                        access=ACCESS if scoped else {}, agent_idle_s=0)
    runtime = await Runtime.open(settings)
    return runtime, create_app(settings, runtime)


async def _seed(api: httpx.AsyncClient, agents: int) -> None:
    auth = {"Authorization": f"Bearer {TOKENS['unscoped']}"}
    for i in range(agents):
        tenant = "acme" if i % 2 == 0 else "globex"
        name = f"{tenant}-{i:04d}"
        made = await api.post("/v1/agents", headers=auth,
                              json={"name": name, "settings": {"tenant": tenant}})
        assert made.status_code == 201, made.text
        sent = await api.post(f"/v1/agents/{name}/sessions/s/messages", headers=auth,
                              json={"content": "hello", "wait": True})
        assert sent.status_code == 200, sent.text


async def _time(api: httpx.AsyncClient, token: str, method: str, path: str,
                body: Any, n: int) -> float:
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(10):  # warm-up
        got = await api.request(method, path, headers=auth, json=body)
        assert got.status_code in (200, 202), (path, got.status_code, got.text[:200])
    started = time.process_time()
    for _ in range(n):
        got = await api.request(method, path, headers=auth, json=body)
    assert got.status_code in (200, 202), (path, got.status_code, got.text[:200])
    return (time.process_time() - started) / n * 1e6


def _auth_alone(app: Any, token: str, n: int) -> float:
    """CPU microseconds of the bearer check (``TokenCheck.principal``) for ``token``."""
    check = app.state.token_check
    scope = {"type": "http", "app": app, "path": "/v1/agents",
             "headers": [(b"authorization", f"Bearer {token}".encode())]}
    assert check.principal(scope)[0] is not None
    started = time.process_time()
    for _ in range(n):
        check.principal(scope)
    return (time.process_time() - started) / n * 1e6


async def _check_alone(app: Any, token_name: str | None, n: int) -> float:
    """CPU microseconds of ``require_agent`` for a request made with ``token_name``."""
    from starlette.requests import HTTPConnection

    from agentd.doors.access import require_agent

    scope = {"type": "http", "app": app, "state": {"token": token_name}, "headers": []}
    conn = HTTPConnection(scope)
    for _ in range(10):
        await require_agent(conn, "acme-0000")
    started = time.process_time()
    for _ in range(n):
        await require_agent(conn, "acme-0000")
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3,
                        help="each measure is the median of this many rounds")
    args = parser.parse_args()
    routes = {
        "get_agent": ("GET", "/v1/agents/acme-0000", None),
        "events": ("GET", "/v1/agents/acme-0000/sessions/s/events", None),
        "message": ("POST", "/v1/agents/acme-0000/sessions/m/messages",
                    {"content": "hi", "wait": True}),
        "runs_page": ("GET", "/v1/runs?limit=50", None),
        "list_agents": ("GET", "/v1/agents", None),
    }
    figures: dict[str, Any] = {"agents": args.agents, "requests": args.requests,
                               "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="agentd-bench-access-") as tmp:
        for scoped in (False, True):
            home = Path(tmp) / ("scoped" if scoped else "plain")
            runtime, app = await _daemon(home, args.agents, scoped)
            try:
                async with app.router.lifespan_context(app), httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app),
                        base_url="http://bench") as api:
                    info(f"seeding {args.agents} agents ({'scoped' if scoped else 'plain'})")
                    await _seed(api, args.agents)
                    kinds = (("names", "tenants", "unscoped", "named") if scoped
                             else ("none",))
                    if scoped:
                        await api.post("/v1/tenants", headers={
                            "Authorization": f"Bearer {TOKENS['unscoped']}"},
                            json={"name": "acme"})
                        made = await api.post("/v1/tokens", headers={
                            "Authorization": f"Bearer {TOKENS['unscoped']}"}, json={
                            "name": "bench-named", "role": "member", "tenant": "acme"})
                        assert made.status_code == 201, made.text
                        TOKENS["named"] = made.json()["token"]
                        for kind in ("unscoped", "named"):
                            figures[f"auth_{kind}_us"] = round(statistics.median(
                                _auth_alone(app, TOKENS[kind], args.requests * 25)
                                for _ in range(args.rounds)), 2)
                            info(f"bearer check alone {kind}: "
                                 f"{figures[f'auth_{kind}_us']} us")
                    for route, (method, path, body) in routes.items():
                        rounds: dict[str, list[float]] = {k: [] for k in kinds}
                        for _ in range(args.rounds):
                            for kind in kinds:
                                token = TOKENS["unscoped" if kind == "none" else kind]
                                rounds[kind].append(await _time(api, token, method, path,
                                                                body, args.requests))
                        for kind in kinds:
                            figures[f"{route}_{kind}_us"] = round(
                                statistics.median(rounds[kind]), 1)
                            info(f"{route} {kind}: {figures[f'{route}_{kind}_us']} us")
                    names = {"none": None, "unscoped": "token-3", "names": "token-1",
                             "tenants": "token-2"}
                    for kind in (k for k in kinds if k in names):
                        alone = [await _check_alone(app, names[kind], args.requests * 5)
                                 for _ in range(args.rounds)]
                        figures[f"check_{kind}_us"] = round(statistics.median(alone), 2)
                        info(f"check alone {kind}: {figures[f'check_{kind}_us']} us")
            finally:
                await runtime.close()
    for route in routes:
        base = figures[f"{route}_none_us"]
        for kind in ("unscoped", "names", "tenants", "named"):
            figures[f"{route}_{kind}_delta_us"] = round(figures[f"{route}_{kind}_us"] - base, 1)
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
