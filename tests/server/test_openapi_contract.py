"""The OpenAPI document is the contract: every status a route can answer is in it, every
error has the one ``Error`` shape, what the hot paths serialise by hand matches their
response models, and every error code in the source is documented in docs/api.md."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app
from agentd.server.schemas import EventList, Health, RunOut, UsageOut

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "agentd"
ERROR_REF = "#/components/schemas/Error"
BODY_METHODS = {"post", "put", "patch"}


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        yield c


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in openapi["paths"].items()
            for method, op in item.items()]


def conforms(model: type[BaseModel], payload: Any) -> None:
    """``payload`` is exactly what ``model`` describes: it validates, and nothing is
    dropped or coerced on the way (a field the model lacks, or a wrong type, differs)."""
    parsed = model.model_validate(payload)
    assert parsed.model_dump(mode="json", exclude_unset=True) == payload


# -- the document ------------------------------------------------------------------------


async def test_every_reference_resolves(openapi: dict[str, Any]) -> None:
    """A schema-driven client or fuzzer skips a body whose schema points nowhere: the
    memory entries' body pointed at ``#/components/schemas/EntryBody``, not there."""
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi)
    schemas = openapi["components"]["schemas"]
    assert refs and all(r.startswith("#/components/schemas/") for r in refs), refs
    missing = sorted(r for r in refs if r.rpartition("/")[2] not in schemas)
    assert missing == []


async def test_errors_have_one_schema(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas["Error"]["properties"]) == {"error"}
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message", "retryable"}
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is never sent
    for method, path, op in operations(openapi):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == ERROR_REF, (method, path, status)


async def test_every_status_the_request_layer_answers_is_documented(
        openapi: dict[str, Any]) -> None:
    for method, path, op in operations(openapi):
        statuses = set(op["responses"])
        assert "422" in statuses, (method, path)
        if path == "/v1/channels/telegram/{name}/webhook":
            # Public for bearer auth: Telegram's secret header authenticates it (its
            # own 401 when missing).
            assert "security" not in op
            assert {"401", "403"} <= statuses
        elif path == "/v1/mcp/oauth/callback":
            # Public: the login's state is its credential (a person's browser comes
            # back there with no token); what it refuses is a 400 or 403.
            assert "security" not in op and "401" not in statuses
            assert {"400", "403"} <= statuses
        elif path != "/health":  # the one public path by default
            assert "401" in statuses, (method, path)
            assert op["security"] == [{"bearer": []}], (method, path)
        else:
            assert "401" not in statuses and "security" not in op
        if method in BODY_METHODS:
            assert "413" in statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)


async def test_the_token_is_a_bearer_security_scheme(openapi: dict[str, Any]) -> None:
    scheme = openapi["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


async def test_streams_are_documented_as_event_streams(openapi: dict[str, Any]) -> None:
    base = "/v1/agents/{name}/sessions/{key}"
    message = openapi["paths"][f"{base}/messages"]["post"]["responses"]
    assert set(message["200"]["content"]) == {"application/json", "text/event-stream"}
    assert message["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/RunOut")
    assert {"409", "413", "503"} <= set(message)
    events = openapi["paths"][f"{base}/events"]["get"]["responses"]
    assert set(events["200"]["content"]) == {"application/json", "text/event-stream"}


async def test_every_route_has_a_response_schema(openapi: dict[str, Any]) -> None:
    for method, path, op in operations(openapi):
        for status, response in op["responses"].items():
            if status.startswith("2") and status != "204":
                # JSON, or for a stream only (the activity feed) its events' schema.
                assert any(c.get("schema") for c in response["content"].values()), (
                    method, path)


# -- what goes out matches it --------------------------------------------------------------


async def test_health_sends_what_its_schema_says(client: httpx.AsyncClient,
                                                 runtime: Runtime) -> None:
    body = (await client.get("/health")).json()
    conforms(Health, body)
    # Nothing the runtime reports is dropped on the way (the schema lacked the sandbox
    # fields once).
    assert set(body) == set(await runtime.health())
    assert {"sandbox_isolated", "sandbox_uids", "sandboxes"} <= set(body)


async def test_the_message_route_sends_runs_as_its_schema_says(client: httpx.AsyncClient
                                                                 ) -> None:
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
              {"text": "42"}]
    assert (await client.post("/v1/agents", json={
        "name": "a", "tools": ["calculator"], "settings": {"script": script}})
    ).status_code == 201
    assert (await client.post("/v1/agents", json={
        "name": "short", "tools": ["calculator"],
        "settings": {"script": script, "max_steps": 1}})).status_code == 201
    done = await client.post("/v1/agents/a/sessions/s/messages", json={"content": "hi"})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    conforms(RunOut, done.json())
    queued = await client.post("/v1/agents/a/sessions/s/messages",
                               json={"content": "hi", "wait": False})
    assert queued.status_code == 202
    conforms(RunOut, queued.json())
    failed = await client.post("/v1/agents/short/sessions/s/messages", json={"content": "x"})
    assert failed.json()["status"] == "failed" and failed.json()["error"]["code"]
    conforms(RunOut, failed.json())
    for run in (done.json(), queued.json(), failed.json()):
        got = await client.get(f"/v1/runs/{run['id']}")
        assert got.status_code == 200
        conforms(RunOut, got.json())
        assert set(got.json()) == set(run)


async def test_the_event_log_is_sent_as_its_schema_says(client: httpx.AsyncClient) -> None:
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
              {"text": "2"}]
    await client.post("/v1/agents", json={"name": "a", "tools": ["calculator"],
                                          "settings": {"script": script}})
    await client.post("/v1/agents/a/sessions/s/messages", json={"content": "hi"})
    assert (await client.post("/v1/agents/a/sessions/s/checkpoints",
                              json={"name": "one"})).status_code == 201
    page = (await client.get("/v1/agents/a/sessions/s/events")).json()
    kinds = {e["kind"] for e in page["events"]}
    assert {"message.user", "tool.started", "tool.finished", "message.assistant",
            "run.completed", "checkpoint"} <= kinds
    conforms(EventList, page)
    conforms(EventList, (await client.get("/v1/agents/a/sessions/s/events",
                                          params={"after": 2, "limit": 1})).json())


async def test_usage_reports_are_sent_as_their_schema_says(client: httpx.AsyncClient
                                                            ) -> None:
    await client.post("/v1/agents", json={"name": "a"})
    await client.post("/v1/agents/a/sessions/s/messages", json={"content": "hi"})
    for params in ({}, {"by": "month,tenant"}, {"by": "agent,model,day"},
                   {"agent": "a", "since": "2000-01-01"}):
        report = (await client.get("/v1/usage", params=params)).json()
        conforms(UsageOut, report)
    rows = (await client.get("/v1/usage", params={"by": "month,tenant"})).json()["usage"]
    assert rows and list(rows[0])[:2] == ["month", "tenant"]  # the order of ``by``


# -- every error code is documented -------------------------------------------------------

# Codes built at run time, each with what it can be.
DYNAMIC = {"f'agent_{agent.state}'": ("agent_paused", "agent_stopped", "agent_error"),
           "f'agent_{state}'": ("agent_paused", "agent_stopped", "agent_error"),
           "f\"{kind.rstrip(':')}_busy\"": ("replay_busy", "fork_busy")}


def codes_in_source() -> dict[str, set[str]]:
    """Each error code written in src/agentd (class attributes ``code = "..."``,
    ``code="..."`` arguments, ``code, retryable = "...", ...`` and ``{"code": "..."}``),
    with where. agentd.testing is left out: its doubles speak providers' wire formats."""
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel.startswith("testing/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            values: list[ast.expr] = []
            if isinstance(node, ast.ClassDef):
                values = [st.value for st in node.body if isinstance(st, ast.Assign)
                          and any(isinstance(t, ast.Name) and t.id == "code"
                                  for t in st.targets)]
            elif isinstance(node, ast.keyword) and node.arg == "code":
                values = [node.value]
            elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
                  and any(isinstance(t, ast.Tuple) and t.elts
                          and isinstance(t.elts[0], ast.Name) and t.elts[0].id == "code"
                          for t in node.targets)):
                values = [node.value.elts[0]]
            elif isinstance(node, ast.Dict):
                values = [v for k, v in zip(node.keys, node.values, strict=True)
                          if isinstance(k, ast.Constant) and k.value == "code"]
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.setdefault(value.value, set()).add(rel)
                elif isinstance(value, ast.JoinedStr):
                    text = ast.unparse(value)
                    assert text in DYNAMIC, f"{rel}: add {text} to DYNAMIC"
                    for code in DYNAMIC[text]:
                        found.setdefault(code, set()).add(rel)
    return found


def test_every_error_code_is_documented() -> None:
    from agentd.doors.http import HTTP_CODES

    codes = codes_in_source()
    for code in (*HTTP_CODES.values(), "http_error"):
        codes.setdefault(code, set()).add("doors/http.py")
    # The scan sees the tree, not a sample of it.
    assert {"agent_not_found", "invalid_input", "model_rate_limited", "tool_timeout",
            "agent_paused", "wrong_session", "method_not_allowed"} <= set(codes)
    docs = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"`([a-z][a-z0-9_]*)`", docs))
    missing = {code: sorted(where) for code, where in codes.items()
               if code not in documented}
    assert not missing, f"error codes missing from docs/api.md: {missing}"
