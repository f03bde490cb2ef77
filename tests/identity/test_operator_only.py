"""Chains 1 and 2 of issue 27: what a token may *configure*.

1. Model settings exfiltrate the daemon's environment: a tenant-scoped token gives an
   agent ``base_url`` (a server it controls, or the daemon's own OpenAI door) and
   ``api_key_env: AGENTD_TOKEN``; the first model call sends the admin token there.
2. Any token moves its agent off bubblewrap (``sandbox.backend: process``).

Each attack is tried with a configured scoped token and a named member token, against
a real stub model server on a socket: the answer is 403 (or 422 for an ``AGENTD_*``
variable, whoever asks), nothing is stored, and the stub never hears a request. The
same settings from an operator (an admin here) are taken: the check is of the role.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import wait_for_run
from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for

from agentd.testing import StubLLMServer

pytestmark = pytest.mark.usefixtures("secret_key")


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-operators-own-key")
    monkeypatch.setenv("CORP_KEY", "corp-proxy-key")
    return "sk-operators-own-key"


async def _agents(d: Daemon) -> list[str]:
    listed = await d.call("GET", "/v1/agents", ADMIN)
    return sorted(a["name"] for a in listed.json()["agents"])


def _attacks(target: str) -> list[tuple[dict[str, Any], str, int]]:
    """(agent body, field the refusal names, status) for a server at ``target``."""
    compatible = "openai-compatible:x"
    return [
        ({"model": compatible, "settings": {"base_url": target,
                                            "api_key_env": "AGENTD_TOKEN"}},
         "settings.api_key_env", 422),
        ({"model": compatible, "settings": {"base_url": target,
                                            "api_key_env": "AGENTD_DATABASE_URL"}},
         "settings.api_key_env", 422),
        ({"model": "openai:gpt-4.1", "settings": {"base_url": target}},
         "settings.base_url", 403),
        ({"model": "openai:gpt-4.1", "settings": {"api_key_env": "HOME"}},
         "settings.api_key_env", 403),
        ({"model": "scripted", "settings": {"fallbacks": [
            {"model": "openai:gpt-4.1", "settings": {"base_url": target}}]}},
         "settings.fallbacks[0].settings.base_url", 403),
        ({"model": "scripted", "settings": {"fallbacks": [compatible]}},
         "settings.fallbacks[0].model", 403),
        ({"model": compatible}, "model", 403),
        ({"model": "vllm:llama"}, "model", 403),
        ({"model": "scripted", "settings": {"memory": {"compaction": {
            "model": "ollama:llama3"}}}}, "settings.memory.compaction.model", 403),
        ({"model": "scripted", "settings": {"memory": {"consolidation": {
            "model": compatible}}}}, "settings.memory.consolidation.model", 403),
    ]


async def test_a_member_cannot_point_a_model_at_a_server_with_a_daemon_secret(
        tmp_path: Path, store_url: str) -> None:
    with StubLLMServer() as stub:
        async with daemon(settings_for(tmp_path, store_url)) as d:
            member = await d.mint("acme-ci", "member", tenant="acme")
            own_door = "http://test/v1"  # the daemon's own OpenAI-compatible door
            for token in (SCOPED, member):
                for target in (stub.base_url, own_door):
                    for n, (body, field, status) in enumerate(_attacks(target)):
                        name = f"acme.steal{n}" if token == member else f"steal{n}"
                        out = await d.call("POST", "/v1/agents", token, json={
                            "name": name, **body,
                            "settings": {"tenant": "acme", **body.get("settings", {})}})
                        assert out.status_code == status, (body, out.text)
                        fields = [e["field"] for e in out.json()["error"]["details"].get(
                            "errors", [])] + [out.json()["error"]["details"].get("field")]
                        assert f"body.{field}" in fields, (body, out.text)
            assert await _agents(d) == []
            # An agent made by the admin may hold such settings; the member may still
            # change its other settings, not these.
            made = await d.call("POST", "/v1/agents", ADMIN, json={
                "name": "acme.proxied", "model": "openai-compatible:x",
                "settings": {"tenant": "acme", "base_url": stub.base_url,
                             "api_key_env": "OPENAI_API_KEY"}})
            assert made.status_code == 201, made.text
            kept = await d.call("PATCH", "/v1/agents/acme.proxied", member, json={
                "instructions": "be brief", "settings": {
                    **made.json()["settings"], "max_steps": 3}})
            assert kept.status_code == 200, kept.text
            moved = await d.call("PATCH", "/v1/agents/acme.proxied", member, json={
                "settings": {**made.json()["settings"], "base_url": "http://test/v1"}})
            assert moved.status_code == 403, moved.text
            assert "settings.base_url" in moved.text
        assert stub.requests == []  # no request ever reached the attacker's server


async def test_a_named_endpoint_is_what_a_member_uses_instead(
        tmp_path: Path, store_url: str, secret_key: str) -> None:
    with StubLLMServer() as stub:
        stub.enqueue("through the company proxy")
        settings = settings_for(tmp_path, store_url, models={
            "corp": {"base_url": stub.base_url, "api_key_env": "CORP_KEY"}})
        async with daemon(settings) as d:
            member = await d.mint("acme-dev", "member", tenant="acme")
            made = await d.call("POST", "/v1/agents", member, json={
                "name": "acme.helper", "model": "corp:gpt-4.1-mini",
                "settings": {"fallbacks": ["corp:gpt-4.1"]}})
            assert made.status_code == 201, made.text
            sent = await d.call("POST", "/v1/agents/acme.helper/sessions/s/messages",
                                member, json={"content": "hi", "wait": True})
            assert sent.json()["output"] == "through the company proxy", sent.text
            # The endpoint's own key went to the endpoint's own URL; the agent's
            # settings cannot point it elsewhere (an operator's could not either).
            assert stub.headers[-1]["authorization"] == "Bearer corp-proxy-key"
            unknown = await d.call("POST", "/v1/agents", member, json={
                "name": "acme.other", "model": "nope:gpt"})
            assert unknown.status_code == 422, unknown.text
            assert "nope" in unknown.json()["error"]["message"]
            assert "corp" in unknown.json()["error"]["message"]


async def test_saving_an_agent_tells_nothing_of_which_variables_exist(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        for variable in ("NO_SUCH_VARIABLE_AT_ALL", "OPENAI_API_KEY"):
            made = await d.call("POST", "/v1/agents", ADMIN, json={
                "name": f"k-{variable.lower().replace('_', '-')}",
                "model": "openai-compatible:x",
                "settings": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": variable}})
            assert made.status_code == 201, made.text
        # A missing key fails the first call, naming no variable.
        run = await d.call("POST", "/v1/agents/k-no-such-variable-at-all/sessions/s/messages",
                           ADMIN, json={"content": "hi"})
        done = await wait_for_run(_Authed(d), run.json()["id"], "failed")
        assert done["error"]["code"] == "model_auth", done
        assert "NO_SUCH_VARIABLE" not in str(done)


async def test_a_member_cannot_move_its_agent_off_the_daemons_sandbox(
        tmp_path: Path, store_url: str) -> None:
    # Operators may raise an agent's limits up to max_limits; members only lower them.
    settings = settings_for(tmp_path, store_url, sandbox={"max_limits": {"memory_mb": 8192}})
    async with daemon(settings) as d:
        member = await d.mint("acme-ops", "member", tenant="acme")
        strength = {"process": 0, "bubblewrap": 1, "gvisor": 2}
        daemon_backend = d.runtime.sandboxes.default
        assert daemon_backend is not None
        for token, prefix in ((SCOPED, ""), (member, "acme.")):
            for body, field in (
                    ({"sandbox": {"backend": "process"}}, "settings.sandbox.backend"),
                    ({"sandbox": {"limits": {"memory_mb": 4096}}},
                     "settings.sandbox.limits"),
                    ({"sandbox": {"workspace_max_mb": 10_000_000}},
                     "settings.sandbox.workspace_max_mb")):
                out = await d.call("POST", "/v1/agents", token, json={
                    "name": f"{prefix}escape", "settings": {"tenant": "acme", **body}})
                if strength.get(daemon_backend.name, 0) == 0 and "backend" in field:
                    # A daemon on the process backend: nothing is weaker, so the agent
                    # is made (and removed again: the check below counts the others).
                    assert out.status_code == 201, out.text
                    gone = await d.call("DELETE", f"/v1/agents/{prefix}escape", token)
                    assert gone.status_code == 204, gone.text
                    continue
                assert out.status_code == 403, (body, out.text)
                assert f"body.{field}" in out.text, out.text
            # Lowering limits, or the daemon's own backend, is a member's to choose.
            ok = await d.call("POST", "/v1/agents", token, json={
                "name": f"{prefix}tight", "settings": {
                    "tenant": "acme", "sandbox": {"backend": "auto",
                                                  "limits": {"memory_mb": 256}}}})
            assert ok.status_code == 201, ok.text
        assert await _agents(d) == ["acme.tight", "tight"]  # (nothing else was made)
        admin = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "big", "settings": {"sandbox": {"limits": {"memory_mb": 4096}}}})
        assert admin.status_code == 201, admin.text
        assert (await d.runtime.get_agent("big")) and d.runtime.sandboxes.limits(
            d.runtime.agents.plan(await d.runtime.get_agent("big")).settings.sandbox
        ).memory_mb == 4096


class _Authed:
    def __init__(self, d: Daemon) -> None:
        self.d = d

    async def get(self, url: str, **kwargs: Any) -> Any:
        return await self.d.call("GET", url, ADMIN, **kwargs)


async def test_a_webhook_onto_the_daemons_network_is_an_operators(
        tmp_path: Path, store_url: str) -> None:
    """The operator named 127.0.0.1 exactly (so that it may be reached): pointing an
    agent's events, attacker-written text, at a host on the daemon's own network is an
    operator's choice, not a member's."""
    settings = settings_for(tmp_path, store_url, webhooks={
        "allow_hosts": ["127.0.0.1", "localhost"], "allow_http": ["127.0.0.1", "localhost"]})
    async with daemon(settings) as d:
        member = await d.mint("acme-hooks", "member", tenant="acme")
        await d.call("POST", "/v1/agents", member, json={"name": "acme.bot"})
        for url in ("http://127.0.0.1:9/hook", "http://localhost:9/hook"):
            out = await d.call("POST", "/v1/agents/acme.bot/webhooks", member,
                               json={"url": url})
            assert out.status_code == 403 and "body.url" in out.text, out.text
        listed = await d.call("GET", "/v1/webhooks", ADMIN)
        assert listed.json()["webhooks"] == []
        made = await d.call("POST", "/v1/agents/acme.bot/webhooks", ADMIN,
                            json={"url": "http://127.0.0.1:9/hook"})
        assert made.status_code == 201, made.text
        moved = await d.call("PATCH", f"/v1/webhooks/{made.json()['id']}", member,
                             json={"url": "http://localhost:9/other"})
        assert moved.status_code == 403, moved.text
        kept = await d.call("PATCH", f"/v1/webhooks/{made.json()['id']}", member,
                            json={"description": "mine"})
        assert kept.status_code == 200, kept.text
