"""web_search through real runs and the API, against the stub providers on a socket:
what a search brings in taints the session (the next network call is asked about),
a refused one does not, and no token below the operator can point the daemon's search
key at a server of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.identity._daemon import ADMIN, SCOPED, daemon, settings_for

from agentd.assembly import Runtime
from agentd.config import Settings, TenantConfig
from agentd.errors import InvalidInput
from agentd.testing import StubSearch

KEY = "search-key-of-the-operator"
_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubSearch]:
    with StubSearch(key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAVE_SEARCH_KEY", KEY)


def _providers(stub: StubSearch) -> dict[str, Any]:
    return {"default": "searx", "providers": {
        "searx": {"kind": "searxng", "base_url": stub.searxng_url},
        "brave": {"kind": "brave", "base_url": stub.brave_url,
                  "api_key_env": "BRAVE_SEARCH_KEY"}}}


@pytest.fixture
async def rt(settings: Settings, store_url: str, stub: StubSearch
             ) -> AsyncIterator[Runtime]:
    settings.database_url = store_url
    settings.web_search = settings.web_search.model_validate(_providers(stub))
    runtime = await Runtime.open(settings)
    yield runtime
    await runtime.close()


async def _run(rt: Runtime, agent: str, key: str, calls: int = 1
               ) -> tuple[str, list[dict[str, Any]]]:
    """One run of ``agent`` that searches ``calls`` times then answers: its status
    and the session's events' data (with kind)."""
    current = await rt.get_agent(agent)
    settings = dict(current.settings)
    search = {"name": "web_search", "arguments": {"query": "agentd docs", "count": 2}}
    settings["script"] = [{"tool_calls": [search]}] * calls + [{"text": "done"}]
    await rt.update_agent(agent, {"settings": settings})
    sent = await rt.send(agent, key, "go")
    run = await rt.wait(sent.run.id)
    return run.status, [{"kind": e.kind, **e.data}
                        for e in await rt.read_events(sent.session.id)]


def _finished(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "tool.finished"]


async def test_results_taint_the_session_a_refusal_does_not(rt: Runtime,
                                                            stub: StubSearch) -> None:
    await rt.create_agent(name="web", model="scripted", tools=["web_search"],
                          settings={"policy": {"network": True, "rules": _ALLOW},
                                    "web_search": {"provider": "brave"}})
    await rt.create_agent(name="offline", model="scripted", tools=["web_search"],
                          settings={"policy": {"rules": _ALLOW}})

    status, events = await _run(rt, "offline", "k")
    [refused] = _finished(events)
    assert status == "completed" and refused["is_error"] and "tainted" not in refused
    assert "no network" in refused["output"]

    before = len(stub.calls("brave"))
    status, events = await _run(rt, "web", "k")
    [found] = _finished(events)
    assert status == "completed" and not found["is_error"], found
    assert found["tainted"] == "its output comes from outside"
    out = orjson.loads(found["output"])
    assert out["provider"] == "brave" and [r["url"] for r in out["results"]] == [
        "https://en.wikipedia.org/wiki/Python", "https://www.python.org/"]
    [call] = stub.calls("brave")[before:]
    assert call["params"]["q"] == "agentd docs"
    assert call["headers"]["x-subscription-token"] == KEY


async def test_after_a_search_the_next_network_call_is_asked_about(rt: Runtime) -> None:
    """No rule written for tainted sessions: the first search runs (the grant), the
    second waits for a person, as after http_fetch."""
    await rt.create_agent(name="web", model="scripted", tools=["web_search"],
                          settings={"policy": {"network": True}})
    status, events = await _run(rt, "web", "t", calls=2)
    assert status == "waiting_approval"
    [first] = _finished(events)
    assert first["tainted"] and not first["is_error"]
    # (an approval.requested event: its data's own "kind" is "policy")
    [asked] = [e["policy"] for e in events if e["kind"] == "policy"]
    assert asked["action"] == "ask" and asked["rule"] == "builtin:taint", asked


async def test_an_unknown_provider_is_refused_when_saved(rt: Runtime) -> None:
    with pytest.raises(InvalidInput) as caught:
        await rt.create_agent(name="web", model="scripted", tools=["web_search"],
                              settings={"web_search": {"provider": "google"}})
    assert "settings.web_search.provider" in caught.value.message
    assert "brave, searx" in caught.value.message


@pytest.mark.parametrize("web_search", [
    {"provider": "brave", "base_url": "URL"},
    {"provider": "brave", "api_key_env": "AGENTD_TOKEN"},
    {"base_url": "URL"},
    {"provider": "http://URL"},
    {"provider": "nope"}])
async def test_no_token_can_point_the_search_key_elsewhere(
        tmp_path: Path, store_url: str, stub: StubSearch, web_search: dict[str, Any]
) -> None:
    """A tenant-scoped token, a member and even the admin: an agent's settings name a
    provider and nothing else; the key goes only to the operator's URL."""
    with StubSearch(key="attacker") as theirs:
        target = {k: v.replace("URL", theirs.brave_url) for k, v in web_search.items()}
        settings = settings_for(tmp_path, store_url, web_search=_providers(stub))
        async with daemon(settings) as d:
            member = await d.mint("acme-dev", "member", tenant="acme")
            for n, token in enumerate((SCOPED, member, ADMIN)):
                name = f"acme.s{n}" if token == member else f"s{n}"
                out = await d.call("POST", "/v1/agents", token, json={
                    "name": name, "model": "scripted", "tools": ["web_search"],
                    "settings": {"tenant": "acme", "web_search": target}})
                assert out.status_code == 422, (token, out.text)
                assert "web_search" in out.text
            listed = await d.call("GET", "/v1/agents", ADMIN)
            assert listed.json()["agents"] == []
            # The same token may name a provider the operator configured.
            made = await d.call("POST", "/v1/agents", SCOPED, json={
                "name": "ok", "model": "scripted", "tools": ["web_search"],
                "settings": {"tenant": "acme", "web_search": {"provider": "brave"}}})
            assert made.status_code == 201, made.text
        assert theirs.calls() == []


async def test_a_tenant_cannot_spend_another_tenants_provider(
        tmp_path: Path, store_url: str, stub: StubSearch) -> None:
    """The operator gives Brave (a paid key) to tenant globex only: a token of acme
    cannot name it, nor move its agent into globex to use it."""
    config = _providers(stub)
    config["providers"]["brave"]["tenants"] = ["globex"]
    settings = settings_for(tmp_path, store_url, web_search=config)
    settings.tenants = {**settings.tenants, "globex": TenantConfig()}
    async with daemon(settings) as d:
        for tenant in ("acme", "globex"):
            out = await d.call("POST", "/v1/agents", SCOPED, json={
                "name": f"paid-{tenant}", "model": "scripted", "tools": ["web_search"],
                "settings": {"tenant": tenant, "web_search": {"provider": "brave"}}})
            assert out.status_code in (403, 422), out.text
        refused = await d.call("POST", "/v1/agents", SCOPED, json={
            "name": "paid", "model": "scripted", "tools": ["web_search"],
            "settings": {"tenant": "acme", "web_search": {"provider": "brave"}}})
        assert refused.status_code == 422 and "not for tenant 'acme'" in refused.text
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "paid", "model": "scripted", "tools": ["web_search"],
            "settings": {"tenant": "globex", "web_search": {"provider": "brave"}}})
        assert made.status_code == 201, made.text
        listed = await d.call("GET", "/v1/agents", ADMIN)
        assert [a["name"] for a in listed.json()["agents"]] == ["paid"]
