"""Webhook checks against a real HTTP server on a socket, and command checks run in the
agent's real sandbox: signed requests, verdicts, and everything a tenant or a receiver
may do wrong (an internal address, a redirect, a hang, an error, garbage)."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook
from tests.conftest import asgi_client, wait_for_run

from agentd.assembly import Runtime
from agentd.config import HooksConfig, Settings
from agentd.tools import tool

Client = httpx.AsyncClient
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
CALLS: list[dict[str, Any]] = []


@tool
def deploy(target: str) -> str:
    """Deploy somewhere."""
    CALLS.append({"target": target})
    return f"deployed to {target}"


@dataclass
class Receiver:
    """Answers each POST with ``answer(payload)``: (status, body, headers)."""

    answer: Callable[[dict[str, Any]], tuple[int, bytes, dict[str, str]]]
    received: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(SECRET).verify(body, headers)
                    verified = True
                except Exception:
                    verified = False
                receiver.received.append((headers, body, verified))
                status, out, extra = receiver.answer(orjson.loads(body))
                if status == 0:  # hang until the test ends
                    receiver.release.wait(30)
                    return
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/check"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _deny_prod(payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    if payload.get("arguments", {}).get("target") == "prod":
        return 200, b'{"verdict": "deny", "reason": "not prod"}', {}
    return 200, b'{"verdict": "allow"}', {}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(answer=_deny_prod)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


@pytest.fixture
def hooks_config() -> HooksConfig:
    return HooksConfig(allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"],
                       secret_env="AGENTD_TEST_HOOKS_SECRET",
                       commands=["python3 -c", "echo", "sh -c", "no-such-program-here"])


@pytest.fixture
async def api(settings: Settings, store_url: str, hooks_config: HooksConfig,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    from agentd.store import open_store

    monkeypatch.setenv("AGENTD_TEST_HOOKS_SECRET", SECRET)
    settings.database_url = store_url
    settings.hooks = hooks_config
    rt = Runtime(settings, await open_store(settings.database_url))
    rt.tools.register(deploy)
    await rt.start()
    try:
        async with asgi_client(settings, rt, base_url="http://t") as c:
            yield c
    finally:
        await rt.close()


async def _agent(api: Client, check: dict[str, Any], *targets: str,
                 status: int = 201) -> httpx.Response:
    r = await api.post("/v1/agents", json={
        "name": "a", "model": "scripted", "tools": ["deploy"],
        "settings": {"script": [
            *({"tool_calls": [{"name": "deploy", "arguments": {"target": t}}]}
              for t in targets), {"text": "done"}],
            "hooks": {"checks": [{"name": "c", **check}]}}})
    assert r.status_code == status, r.text
    return r


async def _run(api: Client) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r = await api.post("/v1/agents/a/sessions/k/messages",
                       json={"content": "go", "wait": False})
    assert r.status_code == 202, r.text
    run = await wait_for_run(api, str(r.json()["id"]))
    events = (await api.get("/v1/agents/a/sessions/k/events")).json()["events"]
    return run, events


def _verdicts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["kind"] == "hook.verdict"]


def _webhook(url: str, **more: Any) -> dict[str, Any]:
    return {"point": "tool_call", "kind": "webhook", "url": url, **more}


# -- webhooks ----------------------------------------------------------------------------


async def test_a_webhook_decides_signed_with_the_facts(api: Client,
                                                       receiver: Receiver) -> None:
    await _agent(api, _webhook(receiver.url), "prod", "dev")
    run, events = await _run(api)
    assert run["status"] == "completed"
    assert CALLS == [{"target": "dev"}]
    assert [v["verdict"] for v in _verdicts(events)] == ["deny", "allow"]
    assert all(v["via"] == "webhook" for v in _verdicts(events))
    assert len(receiver.received) == 2
    headers, body, verified = receiver.received[0]
    assert verified and headers["webhook-id"].startswith("hk_")
    payload = orjson.loads(body)
    assert payload["point"] == "tool_call" and payload["tool"] == "deploy"
    assert payload["arguments"] == {"target": "prod"} and payload["agent"] == "a"
    assert payload["session"] == "k" and payload["run_id"] == run["id"]
    assert payload["check"] == "c"


@pytest.mark.parametrize(("answer", "why"), [
    ((500, b"{}", {}), "HTTP 500"),
    ((307, b"", {"location": "http://169.254.169.254/"}), "HTTP 307"),
    ((200, b"<html>allow</html>", {}), "not JSON"),
    ((200, b'{"verdict": "allow!"}', {}), "answered verdict 'allow!'"),
    ((200, b'{"verdict": "modify", "arguments": "prod"}', {}), "without an `arguments`"),
    ((200, b"x" * (70 * 1024), {}), "longer than"),
    ((0, b"", {}), "no verdict within 0.5s"),
])
async def test_a_webhook_that_fails_fails_closed(
        api: Client, receiver: Receiver, answer: tuple[int, bytes, dict[str, str]],
        why: str) -> None:
    receiver.answer = lambda payload: answer
    # Only the case that waits for no answer has a short timeout: on a loaded machine
    # an answer can take longer than 0.5 s, and the test is of what the answer says.
    timeout_s = 0.5 if why.startswith("no verdict") else 60
    await _agent(api, _webhook(receiver.url, timeout_s=timeout_s), "dev")
    run, events = await _run(api)
    assert run["status"] == "completed" and CALLS == []
    [verdict] = _verdicts(events)
    assert verdict["verdict"] == "deny" and why in verdict["failed"], verdict
    # A redirect is not followed: one request, to the allowed host.
    assert len(receiver.received) == 1


async def test_a_webhook_that_fails_open_lets_the_call_through(
        api: Client, receiver: Receiver) -> None:
    receiver.answer = lambda payload: (503, b"", {})
    await _agent(api, _webhook(receiver.url, fail="open"), "dev")
    run, events = await _run(api)
    assert run["status"] == "completed" and CALLS == [{"target": "dev"}]
    [verdict] = _verdicts(events)
    assert verdict["verdict"] == "allow" and "HTTP 503" in verdict["failed"]


async def test_a_guardrail_webhook_fails_the_run(api: Client, receiver: Receiver) -> None:
    await _agent(api, _webhook(receiver.url, guardrail=True), "prod")
    run, events = await _run(api)
    assert run["status"] == "failed" and run["error"]["code"] == "guardrail_tripped"
    assert "not prod" in run["error"]["message"] and CALLS == []
    assert [e["kind"] for e in events][-2:] == ["hook.verdict", "run.failed"]


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/check",
    "http://localhost:{port}/check",
    "http://127.0.0.2:{port}/check",
    "http://user:pw@127.0.0.1:{port}/check",
    "ftp://127.0.0.1:{port}/check",
    "http://127.0.0.1:{port}/check#x",
])
async def test_a_tenant_cannot_point_a_webhook_anywhere_else(
        api: Client, receiver: Receiver, url: str) -> None:
    r = await _agent(api, _webhook(url.format(port=receiver.port)), status=422)
    assert "hooks.checks[0].url" in r.text
    assert receiver.received == []


@pytest.mark.parametrize("hooks_config", [HooksConfig(
    allow_hosts=["*"], allow_http=["*"], secret_env="AGENTD_TEST_HOOKS_SECRET")])
async def test_a_wildcard_reaches_no_internal_address(api: Client,
                                                      receiver: Receiver) -> None:
    """The operator allowed every host: a URL on the loopback passes the pattern when
    saved, but its address is not public and no pattern names it exactly, so the
    request is never sent (checked before every request, fail closed)."""
    await _agent(api, _webhook(receiver.url), "dev")
    run, events = await _run(api)
    assert run["status"] == "completed" and CALLS == []
    [verdict] = _verdicts(events)
    assert verdict["verdict"] == "deny" and "not a public address" in verdict["failed"]
    assert receiver.received == []


@pytest.mark.parametrize("hooks_config", [HooksConfig(
    allow_hosts=["127.0.0.1"], allow_http=["127.0.0.1"], secret_env="AGENTD_NO_SUCH_VAR")])
async def test_without_a_secret_nothing_is_sent_unsigned(api: Client,
                                                         receiver: Receiver) -> None:
    await _agent(api, _webhook(receiver.url), "dev")
    run, events = await _run(api)
    assert run["status"] == "completed" and CALLS == [] and receiver.received == []
    [verdict] = _verdicts(events)
    assert "no signing secret" in verdict["failed"]


@pytest.mark.parametrize("hooks_config", [HooksConfig()])
async def test_webhook_checks_are_off_until_the_operator_allows_a_host(
        api: Client, receiver: Receiver) -> None:
    r = await _agent(api, _webhook(receiver.url), status=422)
    assert "[hooks] allow_hosts" in r.text


# -- commands in the sandbox -------------------------------------------------------------

DECIDE = ("import json, sys; f = json.load(sys.stdin); "
          "print(json.dumps({'verdict': 'deny' if f['arguments']['target'] == 'prod' "
          "else 'allow', 'reason': 'said the command'}))")


async def test_a_command_decides_from_the_facts_on_stdin(api: Client) -> None:
    await _agent(api, {"point": "tool_call", "kind": "command",
                       "command": ["python3", "-c", DECIDE]}, "prod", "dev")
    run, events = await _run(api)
    assert run["status"] == "completed", run
    verdicts = _verdicts(events)
    assert [v["verdict"] for v in verdicts] == ["deny", "allow"], verdicts
    assert CALLS == [{"target": "dev"}]
    assert verdicts[0]["reason"] == "said the command" and verdicts[0]["via"] == "command"


@pytest.mark.parametrize("command", [
    ["bash", "-c", "rm -rf ."], ["python3", "/tmp/x.py"], ["python3"], ["sh"],
    ["/bin/sh", "-c", "id"], [" echo"], ["Echo", "x"]])
async def test_a_command_the_operator_does_not_list_is_refused(
        api: Client, command: list[str]) -> None:
    """A check's command runs outside the policy's shell rules: only what the operator
    listed, by argv prefix, whoever saves the agent (a member token too)."""
    assert (await api.post("/v1/tenants", json={"name": "acme"})).status_code == 201
    made = await api.post("/v1/tokens", json={"name": "m", "role": "member",
                                              "tenant": "acme"})
    member = {"Authorization": f"Bearer {made.json()['token']}"}
    for headers in (member, {}):
        r = await api.post("/v1/agents", headers=headers, json={
            "name": "acme.a", "model": "scripted", "settings": {"tenant": "acme", "hooks": {
                "checks": [{"name": "c", "point": "output", "kind": "command",
                            "command": command}]}}})
        assert r.status_code == 422, r.text
        assert "hooks.checks[0].command" in r.text and "[hooks] commands" in r.text


@pytest.mark.parametrize(("command", "why"), [
    (["echo", "allow"], ("printed something that is not JSON: 'allow'",)),
    (["sh", "-c", "echo '{\"verdict\": \"allow\"}'; exit 3"], ("exited 3",)),
    (["sh", "-c", "echo '{\"verdict\": \"allow\"}'; sleep 30"],
     ("no verdict within 0.5s", "killed (wall_time)")),
    (["no-such-program-here"], ("exited 127", "cannot run the command")),
])
async def test_a_command_that_fails_fails_closed(api: Client, command: list[str],
                                                 why: tuple[str, ...]) -> None:
    # Only the command that sleeps has a short timeout: on a loaded machine starting a
    # process can take longer than 0.5 s, and the test is of what the command does.
    timeout_s = 0.5 if "no verdict within 0.5s" in why else 60
    await _agent(api, {"point": "tool_call", "kind": "command", "command": command,
                       "timeout_s": timeout_s}, "dev")
    run, events = await _run(api)
    assert run["status"] == "completed" and CALLS == []
    [verdict] = _verdicts(events)
    assert verdict["verdict"] == "deny", verdict
    assert any(w in verdict["failed"] for w in why), verdict
