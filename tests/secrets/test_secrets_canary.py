"""The canary: random secrets planted, an agent whose tools echo, encode, split and
write them (a real MCP server in the sandbox given them as `secret:NAME`, a shell
command, the file tools, http_fetch with a secret header), then everything the daemon
keeps or says is scanned (the database's files or every table, the SSE stream read
live over a socket, the event API, the exports, the trace, the metrics, the log
records): no value occurs, in any form redaction covers (plain, base64, URL-encoded).
The halves of a split value do occur: exact-value redaction cannot see them
(docs/security.md says so). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import WORKER_UID_BASE, wait_until
from tests.secrets.test_secrets_http_fetch import port  # noqa: F401 (fixture)

from agentd.config import SandboxConfig, Settings
from agentd.security.redaction import encoded_forms
from agentd.testing.live import LiveServer

ADMIN = "canary-admin-token-0123456789abcdefgh"
CANARY = Path(__file__).with_name("canary_mcp.py")


def _value() -> str:
    return f"cnry-{secrets.token_urlsafe(15)}/+={secrets.token_hex(4)}&?"


def _call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


def _script(fetch_port: int) -> list[dict[str, Any]]:
    return [
        # (first: what comes back from outside taints the session, and a tainted
        # session is asked before it sends anything out)
        _call("http_fetch", url=f"http://127.0.0.1:{fetch_port}/"),
        _call("c__leak", name="T"),
        _call("c__leak", name="A"),
        _call("c__write", names=["T", "A"], path="leak.txt"),
        _call("read_file", path="leak.txt"),
        _call("shell", command="cat leak.txt; head -n1 leak.txt | base64 -w0; echo; "
                               "head -n1 leak.txt | tr -d '\\n' | base64 -w0; echo"),
        _call("c__split", name="T"),
        {"text": "done"},
    ]


@pytest.fixture
def live(tmp_path: Path, store_url: str, port: int) -> Iterator[str]:  # noqa: F811
    settings = Settings(home=tmp_path / "home", database_url=store_url, demo_agent=False,
                        tokens=[ADMIN], shutdown_grace_s=2.0,
                        sandbox=SandboxConfig(uid_base=WORKER_UID_BASE, uid_count=20_000,
                                              private_endpoints=[f"127.0.0.1:{port}"]))
    with LiveServer(settings, startup_timeout_s=30) as server:
        yield server.url


def _sse(url: str, into: list[str], ready: threading.Event) -> None:
    """Read the session's stream live until its run ends."""
    headers = {"Authorization": f"Bearer {ADMIN}", "Accept": "text/event-stream"}
    with httpx.Client(timeout=120) as client, client.stream(
            "GET", f"{url}/v1/agents/bot/sessions/k/events", headers=headers) as stream:
        ready.set()
        for line in stream.iter_lines():
            into.append(line)
            if line.startswith("event: run.completed") or line.startswith(
                    "event: run.failed"):
                return


def _settled(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
    return None if run["status"] in ("running", "queued") else run


def _database_text(store_url: str) -> bytes:
    """The database as stored: SQLite's files, or every table of the PostgreSQL
    schema as text."""
    if store_url.startswith("sqlite"):
        path = Path(store_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    import psycopg

    found: list[str] = []
    with psycopg.connect(store_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")]
        for table in tables:
            found += [r[0] for r in conn.execute(
                f'SELECT CAST(t AS text) FROM "{table}" t')]
    return "\n".join(found).encode()


def test_no_secret_value_is_kept_or_said_anywhere(
        live: str, store_url: str, port: int,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tenant_value, agent_value = _value(), _value()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    site = ":".join(p for p in sys.path if p.endswith("site-packages"))
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 for the sandboxed server")
    with httpx.Client(base_url=live, headers=auth, timeout=120) as api:
        assert api.post("/v1/secrets", json={"name": "CANARY_T",
                                             "value": tenant_value}).status_code == 201
        made = api.post("/v1/agents", json={
            "name": "bot", "model": "scripted",
            "tools": ["read_file", "shell", "http_fetch"],
            "settings": {"sandbox": {"backend": "process"}, "script": _script(port)}})
        assert made.status_code == 201, made.text
        assert api.post("/v1/secrets", json={"name": "CANARY_A", "value": agent_value,
                                             "agent": "bot"}).status_code == 201
        changed = api.patch("/v1/agents/bot", json={"settings": {
            "sandbox": {"backend": "process"}, "script": _script(port),
            "policy": {"network": ["127.0.0.1"]},
            "http_headers": {"127.0.0.1": {"X-Tag": "Bearer secret:CANARY_T"}},
            "mcp": [{"name": "c", "trusted": True,
                     "command": ["/usr/bin/python3", str(CANARY)],
                     "env": {"PYTHONPATH": site, "TOKEN_T": "secret:CANARY_T",
                             "TOKEN_A": "secret:CANARY_A"}}]}})
        assert changed.status_code == 200, changed.text

        frames: list[str] = []
        ready = threading.Event()
        reader = threading.Thread(target=_sse, args=(live, frames, ready), daemon=True)
        reader.start()
        assert ready.wait(30)
        sent = api.post("/v1/agents/bot/sessions/k/messages",
                        json={"content": "go", "wait": True})
        assert sent.status_code == 200, sent.text
        run = sent.json()
        # Shell commands and fetches of a tainted session with a network are asked
        # about: a person approves them (and sees only names, never values).
        for _ in range(10):
            if run["status"] != "waiting_approval":
                break
            for pending in api.get("/v1/approvals", params={"agent": "bot"}).json()[
                    "approvals"]:
                assert "cnry-" not in json.dumps(pending)
                decided = api.post(f"/v1/approvals/{pending['approval_id']}",
                                   json={"action": "approve"})
                assert decided.status_code == 200, decided.text
            run = wait_until(partial(_settled, api, run["id"]), what="the run to go on")
        assert run["status"] == "completed", run
        reader.join(60)
        assert not reader.is_alive()

        said = ["\n".join(frames)]
        for path in ("/v1/agents/bot/sessions/k/events", "/v1/export/runs?context=true",
                     "/v1/export/pairs", f"/v1/runs/{run['id']}", f"/v1/runs/{run['id']}/trace",
                     "/v1/agents/bot/sessions/k/context", "/v1/runs?agent=bot",
                     "/v1/secrets", "/v1/audit?limit=1000", "/metrics", "/v1/overview"):
            answer = api.get(path)
            assert answer.status_code == 200, (path, answer.text)
            said.append(answer.text)
        events = api.get("/v1/agents/bot/sessions/k/events").json()["events"]
        # The tools did see the values: the log shows where, by name.
        outputs = [e["data"]["output"] for e in events if e["kind"] == "tool.finished"]
        assert len(outputs) == 7, outputs
        assert all(not e["data"].get("is_error") for e in events
                   if e["kind"] == "tool.finished"), outputs
        assert "tag=Bearer [secret:CANARY_T]" in outputs[0]
        assert "[secret:CANARY_T]" in outputs[1] and "[secret:CANARY_A]" in outputs[2]
        assert outputs[4].startswith("[secret:CANARY_T]\n[secret:CANARY_A]\n")
        audit = api.get("/v1/audit", params={"action": "secret.use"}).json()["rows"]
        assert {r["details"]["use"] for r in audit} >= {
            "mcp:c env TOKEN_T", "mcp:c env TOKEN_A", "http_fetch 127.0.0.1 header X-Tag"}

    everything = "\n".join(said) + "\n" + caplog.text
    stored = _database_text(store_url)
    for value in (tenant_value, agent_value):
        for form in encoded_forms(value):
            assert form not in everything, f"a form of a secret was said: {form!r}"
            assert form.encode() not in stored, f"a form of a secret is stored: {form!r}"
    assert json.dumps(tenant_value)[1:-1] not in everything
    # What exact-value redaction cannot see: the two halves of a split value.
    half = tenant_value[:len(tenant_value) // 2]
    assert half in outputs[6]
    assert base64.b64encode(tenant_value.encode()).decode()[:8] not in everything
