"""Webhooks through the API with a real receiver on a socket: signed deliveries of the
kinds asked for, retries (backoff, Retry-After), giving up, replay, ping, secret
rotation, enabling; and every refused subscription refused with a 422 naming the field,
with nothing stored. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, eventually
from tests.webhooks._receiver import Receiver

from agentd.assembly import Runtime
from agentd.config import Settings, WebhooksConfig


def _settings(tmp_path: Path, url: str, **webhooks: Any) -> Settings:
    config = {"allow_hosts": ["127.0.0.1"], "allow_http": ["127.0.0.1"], "backoff_s": 0.05,
              "backoff_max_s": 0.2, "poll_s": 0.2, **webhooks}
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    database_url=url, webhooks=WebhooksConfig(**config))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture
def webhooks_config() -> dict[str, Any]:
    return {}


@pytest.fixture
async def api(tmp_path: Path, store_url: str, webhooks_config: dict[str, Any]
              ) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(tmp_path, store_url, **webhooks_config)
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime) as client:
            response = await client.post("/v1/agents", json={"name": "bot"})
            assert response.status_code == 201, response.text
            yield client
    finally:
        await runtime.close()


async def _subscribe(api: httpx.AsyncClient, receiver: Receiver, **body: Any
                     ) -> dict[str, Any]:
    response = await api.post("/v1/agents/bot/webhooks", json={"url": receiver.url, **body})
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    receiver.secret = hook["secret"]
    return hook


async def _say(api: httpx.AsyncClient, key: str, content: str) -> dict[str, Any]:
    response = await api.post(f"/v1/agents/bot/sessions/{key}/messages",
                              json={"content": content, "wait": True})
    assert response.status_code in (200, 201, 202), response.text
    out: dict[str, Any] = response.json()
    return out


async def _events(api: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/agents/bot/sessions/{key}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def _deliveries(api: httpx.AsyncClient, hook_id: str, **params: Any
                      ) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/webhooks/{hook_id}/deliveries",
                             params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    out: list[dict[str, Any]] = response.json()["deliveries"]
    return out


async def test_events_of_the_kinds_asked_for_arrive_signed(api: httpx.AsyncClient,
                                                           receiver: Receiver) -> None:
    hook = await _subscribe(api, receiver, kinds=["run.completed", "message.*"],
                            description="ci")
    assert hook["secret"].startswith("whsec_")
    assert hook["kinds"] == ["run.completed", "message.*"]
    await _say(api, "user:1", "hello")
    await eventually(lambda: receiver.of_kind("run.completed"),
                     what="the run.completed delivery")
    await eventually(lambda: len(receiver.of_kind("message.assistant")) == 1)
    # Deliveries are not ordered: the message's may come last.
    await eventually(lambda: receiver.of_kind("message.user"),
                     what="the message.user delivery")
    kinds = {r.json["type"] for r in receiver.received}
    assert kinds == {"message.user", "message.assistant", "run.completed"}
    assert all(r.verified for r in receiver.received)

    done = receiver.of_kind("run.completed")[0]
    body = done.json
    events = await _events(api, "user:1")
    logged = next(e for e in events if e["kind"] == "run.completed")
    assert body["id"] == done.headers["webhook-id"]
    assert body["webhook_id"] == hook["id"] and body["agent"] == "bot"
    assert body["session"] == "user:1"
    assert body["event"] == logged
    # The signature, worked out here from the spec (not by the library the daemon uses).
    key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
    signed = f"{done.id}.{done.headers['webhook-timestamp']}.".encode() + done.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert done.headers["webhook-signature"] == f"v1,{expected}"
    assert done.headers["content-type"] == "application/json"
    # The run's invoke_agent span in its trace: a receiver that traces links to it.
    trace = (await api.get(f"/v1/runs/{logged['run_id']}/trace")).json()
    root = trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert {r.headers["traceparent"] for r in receiver.received} == {
        f"00-{root['traceId']}-{root['spanId']}-01"}

    listed = await eventually(lambda: _all_delivered(api, hook["id"], 3))
    assert {d["kind"] for d in listed} == kinds
    assert all(d["attempts"] == 1 and d["last_status"] == 200 for d in listed)
    one = await api.get(f"/v1/webhook-deliveries/{done.id}")
    assert one.status_code == 200 and one.json()["payload"] == body
    shown = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
    assert "secret" not in shown or shown["secret"] is None
    assert shown["deliveries"] == {"pending": 0, "delivered": 3, "failed": 0}


async def _all_delivered(api: httpx.AsyncClient, hook_id: str, count: int
                         ) -> list[dict[str, Any]] | None:
    found = await _deliveries(api, hook_id)
    if len(found) == count and all(d["status"] == "delivered" for d in found):
        return found
    return None


async def test_a_failing_receiver_is_retried_until_it_answers(api: httpx.AsyncClient,
                                                             receiver: Receiver) -> None:
    receiver.script = [(500, {}), (502, {}), (200, {})]
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    await _say(api, "k", "hi")
    [delivery] = await eventually(lambda: _all_delivered(api, hook["id"], 1))
    assert delivery["attempts"] == 3 and delivery["last_status"] == 200
    # Every attempt carried the same delivery id, each signed afresh.
    assert receiver.ids() == [delivery["id"]] * 3
    assert all(r.verified for r in receiver.received)


@pytest.mark.parametrize("webhooks_config", [{"backoff_s": 300.0, "backoff_max_s": 600.0}])
async def test_retry_after_is_honoured_over_the_backoff(api: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
    # The backoff alone would wait 150 s or more: the test would run out of patience.
    receiver.script = [(503, {"Retry-After": "1"}), (200, {})]
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    await _say(api, "k", "hi")
    [delivery] = await eventually(lambda: _all_delivered(api, hook["id"], 1))
    assert delivery["attempts"] == 2
    assert [r.id for r in receiver.received] == [delivery["id"]] * 2


@pytest.mark.parametrize("webhooks_config", [{"retry_after_max_s": 600.0}])
async def test_a_long_retry_after_is_waited_up_to_the_operators_cap(
        api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "3600"}), (200, {})]
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    await _say(api, "k", "hi")

    async def waiting() -> dict[str, Any] | None:
        found = await _deliveries(api, hook["id"])
        return found[0] if found and found[0]["attempts"] == 1 else None

    first = await eventually(waiting, what="the first (429) attempt recorded")
    assert first["status"] == "pending" and first["last_status"] == 429
    gap = (datetime.fromisoformat(first["next_attempt_at"])
           - datetime.fromisoformat(first["last_attempt_at"])).total_seconds()
    assert gap == pytest.approx(600.0, abs=0.01)  # not the backoff's 0.05 s, nor 3600


@pytest.mark.parametrize("webhooks_config", [{"max_attempts": 3}])
async def test_gives_up_after_max_attempts_and_a_replay_sends_it_again(
        api: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.script = [(500, {})]
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    await _say(api, "k", "hi")

    async def failed() -> list[dict[str, Any]] | None:
        found = await _deliveries(api, hook["id"], status="failed")
        return found or None

    [delivery] = await eventually(failed)
    assert delivery["attempts"] == 3 and delivery["next_attempt_at"] is None
    assert delivery["last_error"] == "HTTP 500"
    assert len(receiver.received) == 3

    receiver.script = [(204, {})]
    replayed = await api.post(f"/v1/webhook-deliveries/{delivery['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["status"] == "pending"
    [again] = await eventually(lambda: _all_delivered(api, hook["id"], 1))
    assert again["id"] == delivery["id"] and again["attempts"] == 4
    assert receiver.ids() == [delivery["id"]] * 4
    # The same body each time (receivers de-duplicate on the id).
    assert len({r.body for r in receiver.received}) == 1


async def test_a_redirect_is_not_followed(api: httpx.AsyncClient, receiver: Receiver
                                         ) -> None:
    elsewhere = Receiver()
    try:
        receiver.script = [(307, {"Location": elsewhere.url})]
        hook = await _subscribe(api, receiver, kinds=["run.completed"])
        await _say(api, "k", "hi")

        async def tried() -> list[dict[str, Any]] | None:
            found = await _deliveries(api, hook["id"])
            return found if found and found[0]["attempts"] >= 2 else None

        [delivery] = await eventually(tried)
        assert delivery["status"] == "pending" and delivery["last_status"] == 307
        assert elsewhere.received == []
    finally:
        elsewhere.close()


async def test_ping_rotation_and_enabling(api: httpx.AsyncClient, receiver: Receiver
                                          ) -> None:
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    old_secret = hook["secret"]
    ping = await api.post(f"/v1/webhooks/{hook['id']}/ping")
    assert ping.status_code == 202, ping.text
    [pinged] = await eventually(lambda: receiver.of_kind("webhook.ping"))
    assert pinged.verified and pinged.json["event"] is None
    assert pinged.id == ping.json()["id"]

    rotated = await api.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    receiver.secret = new_secret
    await _say(api, "k", "one")
    [first] = await eventually(lambda: receiver.of_kind("run.completed"))
    assert first.verified  # with the new secret
    receiver.secret = old_secret
    receiver._record(first.path, first.headers, first.body)
    assert receiver.received[-1].verified is False  # the old one no longer signs

    off = await api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    await _say(api, "k", "while off")
    on = await api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert on.json()["enabled"] is True
    await _say(api, "k", "back on")
    await eventually(lambda: len(receiver.of_kind("run.completed")) >= 2)
    outputs = [r.json["event"]["data"].get("output") for r in
               receiver.of_kind("run.completed")]
    assert len(outputs) == 2, outputs  # nothing of the run while it was off
    assert "while off" not in str(outputs)


async def test_deleting_the_subscription_or_the_agent_drops_its_deliveries(
        api: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    assert (await api.get("/v1/agents/bot/webhooks")).json()["webhooks"][0]["id"] == \
        hook["id"]
    assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
    gone = await api.get(f"/v1/webhooks/{hook['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"
    hook = await _subscribe(api, receiver, kinds=["run.completed"])
    assert (await api.delete("/v1/agents/bot")).status_code in (200, 204)
    assert (await api.get(f"/v1/webhooks/{hook['id']}")).status_code == 404
    assert (await api.get("/v1/webhooks")).json()["webhooks"] == []


# -- refused -----------------------------------------------------------------------------


async def _refused(api: httpx.AsyncClient, body: dict[str, Any], field: str,
                   words: str) -> None:
    response = await api.post("/v1/agents/bot/webhooks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["errors"][0]["field"] == field, error
    assert words in error["message"], error
    assert (await api.get("/v1/webhooks")).json()["webhooks"] == []


async def test_urls_the_operator_does_not_allow_are_refused(api: httpx.AsyncClient,
                                                            receiver: Receiver) -> None:
    port = receiver.port
    await _refused(api, {"url": f"http://example.com:{port}/"}, "body.url",
                   "not a host the operator allows")
    await _refused(api, {"url": "http://127.0.0.1:8721/v1/agents"}, "body.url",
                   "the daemon's own port")
    await _refused(api, {"url": f"ftp://127.0.0.1:{port}/"}, "body.url", "https://")
    await _refused(api, {"url": f"http://user:pw@127.0.0.1:{port}/"}, "body.url",
                   "user name or password")
    await _refused(api, {"url": receiver.url, "kinds": ["run.exploded"]}, "body.kinds",
                   "unknown event kind")
    await _refused(api, {"url": receiver.url, "kinds": ["nope.*"]}, "body.kinds",
                   "unknown event kind")
    missing = await api.post("/v1/agents/nobody/webhooks", json={"url": receiver.url})
    assert missing.status_code == 404


@pytest.mark.parametrize("webhooks_config", [{"allow_hosts": ["*"],
                                              "allow_http": ["127.0.0.1", "localhost"]}])
async def test_a_wildcard_reaches_public_addresses_only(api: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
    await _refused(api, {"url": receiver.url}, "body.url", "not a public address")
    await _refused(api, {"url": f"http://localhost:{receiver.port}/"}, "body.url",
                   "not a public address")
    await _refused(api, {"url": f"https://10.1.2.3:{receiver.port}/"}, "body.url",
                   "not a public address")


@pytest.mark.parametrize("webhooks_config", [{"allow_http": []}])
async def test_plain_http_needs_the_operator(api: httpx.AsyncClient, receiver: Receiver
                                             ) -> None:
    await _refused(api, {"url": receiver.url}, "body.url", "plain http is not allowed")


@pytest.mark.parametrize("webhooks_config", [{"allow_hosts": []}])
async def test_webhooks_are_off_until_the_operator_allows_a_host(
        api: httpx.AsyncClient, receiver: Receiver) -> None:
    await _refused(api, {"url": receiver.url}, "body.url", "webhooks are off")


async def test_a_patch_to_a_refused_url_changes_nothing(api: httpx.AsyncClient,
                                                        receiver: Receiver) -> None:
    hook = await _subscribe(api, receiver)
    response = await api.patch(f"/v1/webhooks/{hook['id']}",
                               json={"url": "https://evil.example/", "kinds": ["*"]})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["errors"][0]["field"] == "body.url"
    kept = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
    assert kept["url"] == receiver.url and kept["kinds"] == ["*"]
    bad = await api.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "x"})
    assert bad.status_code == 422
    assert (await api.post("/v1/webhook-deliveries/whd_nope/replay")).status_code == 404
