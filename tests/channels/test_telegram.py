"""The Telegram channel against a stub Bot API over real HTTP: the webhook's checks,
durable and once-only hand-over in order per chat, replies (split, typing, proactive
posts, schedule output), attachments, every Bot API failure mode, and the token kept
out of logs and answers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, eventually
from tests.media.images import jpeg, pdf

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.llm.scripted import enqueue
from agentd.testing import StubBotAPI

TOKEN = "424242:AAH-secret-bot-token-value"
SECRET = "webhook-secret_0123456789"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM = {"bot_token_env": "TELEGRAM_BOT_TOKEN", "secret_token_env": "TELEGRAM_SECRET"}


@pytest.fixture
def bot() -> Iterator[StubBotAPI]:
    with StubBotAPI(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def settings(tmp_path: Path, bot: StubBotAPI, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_SECRET", SECRET)
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    channels={"telegram": {"api_base": bot.url, "retry_base_s": 0.05,
                                           "retry_max_s": 0.2, "timeout_s": 2.0,
                                           "typing_every_s": 0.1}})


@pytest.fixture
async def api(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as client:
        yield client


def update(update_id: int, chat_id: int = 42, text: str | None = "hi",
           **message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message_id": update_id, "date": 1700000000,
                            "chat": {"id": chat_id, "type": "private"}, **message}
    if text is not None:
        body["text"] = text
    return {"update_id": update_id, "message": body}


async def post(api: httpx.AsyncClient, body: Any, *, agent: str = "bot",
               secret: str | None = SECRET, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": ""}  # the webhook needs no bearer token
    if secret is not None:
        headers[HEADER] = secret
    if raw is not None:
        return await api.post(f"/v1/channels/telegram/{agent}/webhook", content=raw,
                              headers={**headers, "Content-Type": "application/json"})
    return await api.post(f"/v1/channels/telegram/{agent}/webhook", json=body,
                          headers=headers)


async def make_agent(runtime: Runtime, name: str = "bot", *, turns: list[Any] | None = None,
                     tools: list[str] | None = None, **telegram: Any) -> None:
    await runtime.create_agent(name=name, tools=tools or [],
                               settings={"channels": {"telegram": {**TELEGRAM, **telegram}}})
    if turns:
        enqueue(*turns, agent=name)


async def texts(bot: StubBotAPI, chat_id: int, count: int) -> list[str]:
    """The chat's texts once there are ``count`` of them."""
    return await eventually(lambda: (t if len(t := bot.texts(chat_id)) >= count else None),
                            what=lambda: f"{count} messages to chat {chat_id}: "
                                         f"{bot.texts(chat_id)}")


async def state(api: httpx.AsyncClient, agent: str = "bot") -> dict[str, Any]:
    response = await api.get(f"/v1/agents/{agent}/channels/telegram")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# -- the webhook's door ---------------------------------------------------------------


async def test_a_message_is_acknowledged_handed_over_and_answered(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "hello from the agent"}])
    response = await post(api, update(1, text="hi there"))
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "update_id": 1, "duplicate": False,
                               "status": "pending"}
    assert await texts(bot, 42, 1) == ["hello from the agent"]
    _, session = await runtime.get_session("bot", "telegram:42")
    events = await runtime.read_events(session.id)
    assert [e.data["content"] for e in events if e.kind == "message.user"] == ["hi there"]
    # Every call carried the bot's token, and went to this chat.
    assert {c.token for c in bot.calls()} == {TOKEN}
    async def delivered() -> dict[str, Any] | None:
        seen = await state(api)
        return seen if seen["chats"] and seen["chats"][0]["sent"] == 1 else None

    seen = await eventually(delivered)
    assert seen["enabled"] is True
    assert seen["inbox"]["done"] == 1
    assert seen["chats"][0]["chat_id"] == 42


async def test_a_replayed_update_is_acknowledged_and_does_nothing(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "one"}, {"text": "two"}])
    first = await post(api, update(7, text="once"))
    assert first.json()["duplicate"] is False
    await texts(bot, 42, 1)
    again = await asyncio.gather(*(post(api, update(7, text="once")) for _ in range(5)))
    assert all(r.status_code == 200 and r.json()["duplicate"] is True for r in again)
    await post(api, update(8, text="next"))
    assert await texts(bot, 42, 2) == ["one", "two"]
    runs = await runtime.list_runs(agent="bot")
    assert len(runs.runs) == 2


async def test_the_same_update_sent_concurrently_is_taken_once(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """Telegram retrying while the first delivery is still in flight: eight copies at
    once; one is new, seven are duplicates, one run, one reply."""
    await make_agent(runtime)
    answers = await asyncio.gather(*(post(api, update(77, text="dup"))
                                     for _ in range(8)))
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 7
    assert await texts(bot, 42, 1) == ["echo: dup"]
    await asyncio.sleep(0.3)
    assert bot.texts(42) == ["echo: dup"]
    assert len((await runtime.list_runs(agent="bot")).runs) == 1


@pytest.mark.parametrize("secret", [None, "wrong", SECRET[:-1], SECRET + "x", ""])
async def test_a_missing_or_wrong_secret_is_refused_and_nothing_is_stored(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI,
        secret: str | None) -> None:
    await make_agent(runtime)
    response = await post(api, update(1), secret=secret)
    assert response.status_code == (401 if secret is None else 403), response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "retryable"}
    assert HEADER in error["message"]
    assert SECRET not in response.text
    assert (await state(api))["inbox"] == {"pending": 0, "done": 0, "skipped": 0,
                                           "refused": 0, "failed": 0}
    await asyncio.sleep(0.3)
    assert bot.calls() == []


async def test_an_unknown_agent_and_an_agent_without_the_channel_look_alike(
        runtime: Runtime, api: httpx.AsyncClient) -> None:
    await runtime.create_agent(name="plain")
    unknown = await post(api, update(1), agent="nobody")
    plain = await post(api, update(1), agent="plain")
    assert unknown.status_code == plain.status_code == 403
    assert unknown.json() == plain.json()


async def test_the_secret_variable_unset_refuses_every_update(
        runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_agent(runtime)
    monkeypatch.delenv("TELEGRAM_SECRET")
    assert (await post(api, update(1), secret="")).status_code == 403
    assert (await post(api, update(1), secret=SECRET)).status_code == 403


@pytest.mark.parametrize(("raw", "status", "says"), [
    (b"{not json", 422, "JSON"),
    (b"[1, 2]", 400, "Update object"),
    (b'{"message": {"text": "x"}}', 422, "update_id"),
    (b'{"update_id": "12"}', 422, "update_id"),
    (b'{"update_id": -1}', 422, "update_id"),
    (b'{"update_id": true}', 422, "update_id"),
    (b'{"update_id": 1e3}', 422, "update_id"),
    (b'{"update_id": 5, "message": {"text": "x"}}', 422, "chat.id"),
    (b'{"update_id": 5, "message": {"chat": {"id": "42"}, "text": "x"}}', 422, "chat.id"),
    (b'{"update_id": 5, "message": {"chat": {"id": 99999999999999999999}}}', 422,
     "64-bit"),
    (b'{"update_id": 99999999999999999999}', 422, "64-bit"),
])
async def test_a_malformed_update_is_refused_with_a_clear_message(
        runtime: Runtime, api: httpx.AsyncClient, raw: bytes, status: int,
        says: str) -> None:
    await make_agent(runtime)
    response = await post(api, None, raw=raw)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert sum((await state(api))["inbox"].values()) == 0


async def test_updates_that_are_not_messages_are_acknowledged_and_set_aside(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, allowed_chats=[42])
    skipped = await post(api, {"update_id": 3, "edited_message": {"chat": {"id": 42}}})
    assert skipped.json()["status"] == "skipped"
    refused = await post(api, update(4, chat_id=666))
    assert refused.json()["status"] == "refused"
    sticker = await post(api, update(5, text=None, sticker={"file_id": "s"}))
    assert sticker.json()["status"] == "pending"
    seen = await eventually(lambda: _inbox(api, "skipped", 2))
    assert seen["inbox"]["refused"] == 1
    assert [c.payload["chat_id"] for c in bot.calls("sendMessage")] == []
    with pytest.raises(Exception):  # noqa: B017 (no session was made for either chat)
        await runtime.get_session("bot", "telegram:666")


async def _inbox(api: httpx.AsyncClient, status: str, count: int) -> dict[str, Any] | None:
    seen = await state(api)
    return seen if seen["inbox"][status] == count else None


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["bot_token_env", "secret_token_env"])
@pytest.mark.parametrize("name", ["AGENTD_TOKEN", "OPENAI_API_KEY", "HOME", "TELEGRAM"])
async def test_an_agent_may_name_only_variables_under_the_operators_prefix(
        runtime: Runtime, api: httpx.AsyncClient, field: str, name: str) -> None:
    response = await api.post("/v1/agents", json={
        "name": "sneaky", "settings": {"channels": {"telegram": {**TELEGRAM,
                                                                 field: name}}}})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"]["errors"][0]["field"] == \
        f"body.settings.channels.telegram.{field}"
    assert "TELEGRAM_" in error["message"]
    await api.post("/v1/agents", json={"name": "ok"})
    patched = await api.patch("/v1/agents/ok", json={
        "settings": {"channels": {"telegram": {**TELEGRAM, field: name}}}})
    assert patched.status_code == 422, patched.text


async def test_bad_channel_settings_are_refused_by_the_settings_model(
        api: httpx.AsyncClient) -> None:
    for bad in ({"bot_token_env": "TELEGRAM_X"},
                {**TELEGRAM, "bot_token_env": "TELEGRAM_$(id)"},
                {**TELEGRAM, "max_file_mb": 0},
                {**TELEGRAM, "api_base": "http://evil"}):
        response = await api.post("/v1/agents", json={
            "name": "a", "settings": {"channels": {"telegram": bad}}})
        assert response.status_code == 422, (bad, response.text)


# -- in order, once ---------------------------------------------------------------------


async def test_each_chat_is_handled_in_update_id_order_under_concurrency(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """Three chats write at once; each chat's messages reach its session in update_id
    order, and each gets one reply per message, in that order (the scripted model
    echoes)."""
    await make_agent(runtime)
    chats = {100: [], 200: [], 300: []}  # type: dict[int, list[int]]
    ids = iter(range(1, 1000))
    for _ in range(6):
        for chat in chats:
            chats[chat].append(next(ids))

    async def write(chat: int) -> None:
        for uid in chats[chat]:
            response = await post(api, update(uid, chat_id=chat, text=f"m{uid}"))
            assert response.status_code == 200

    await asyncio.gather(*(write(chat) for chat in chats))
    for chat, uids in chats.items():
        got = await texts(bot, chat, len(uids))
        assert [t.rsplit("m", 1)[-1] for t in got] == [str(u) for u in uids], got
        _, session = await runtime.get_session("bot", f"telegram:{chat}")
        events = await runtime.read_events(session.id)
        assert [e.data["content"] for e in events if e.kind == "message.user"] == \
            [f"m{u}" for u in uids]


async def test_pending_updates_are_handed_over_by_update_id_not_arrival(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """While the agent is paused the updates wait (nothing lost, a visible reason);
    on resume they go in update_id order, whatever order they came in."""
    await make_agent(runtime)
    await runtime.set_state("bot", "pause")
    for uid in (13, 11, 12):
        assert (await post(api, update(uid, text=f"m{uid}"))).status_code == 200

    async def waiting() -> dict[str, Any] | None:
        seen = await state(api)
        errors = [r["error"] for r in seen["recent"] if r["error"]]
        return seen if seen["inbox"]["pending"] == 3 and errors else None

    seen = await eventually(waiting)
    assert "paused" in next(r["error"] for r in seen["recent"] if r["error"])
    await runtime.set_state("bot", "resume")
    got = await texts(bot, 42, 3)
    assert [t.rsplit("m", 1)[-1] for t in got] == ["11", "12", "13"], got


async def test_a_crash_between_hand_over_and_done_repeats_nothing_and_loses_no_reply(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """The worker sent the message to the agent (its run even answered), then the
    daemon died before the update was marked done. The retry finds the run by the
    idempotency key, starts none, and the chat still gets that run's reply, once."""
    await make_agent(runtime, turns=[{"text": "the only reply"}, {"text": "never"}])
    agent = await runtime.get_agent("bot")
    sent = await runtime.send("bot", "telegram:42", "echo: hi",
                              idempotency_key="telegram:1")
    await runtime.wait(sent.run.id)
    # What the crashed daemon left: the update pending in the inbox.
    body = orjson_dumps(update(1))
    assert await runtime.telegram.store.receive(agent_id=agent.id, update_id=1,
                                                chat_id=42, body=body.decode())
    runtime.telegram.inbox._wake.set()
    assert await texts(bot, 42, 1) == ["the only reply"]
    seen = await eventually(lambda: _inbox(api, "done", 1))
    assert seen["recent"][0]["run_id"] == sent.run.id
    runs = await runtime.list_runs(agent="bot")
    assert [r[0].id for r in runs.runs] == [sent.run.id]
    await asyncio.sleep(0.3)
    assert bot.texts(42) == ["the only reply"]


async def test_a_chat_bound_to_a_session_with_history_gets_only_what_follows(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """A session ``telegram:42`` used through the API before the chat first wrote: its
    old answers are not sent to the chat; the answer to the chat's message is."""
    await make_agent(runtime, turns=[{"text": "old, API only"}, {"text": "for the chat"}])
    earlier = await runtime.send("bot", "telegram:42", "from the API")
    await runtime.wait(earlier.run.id)
    await post(api, update(1))
    assert await texts(bot, 42, 1) == ["for the chat"]
    await asyncio.sleep(0.3)
    assert bot.texts(42) == ["for the chat"]


# -- replies ------------------------------------------------------------------------------


async def test_a_long_reply_is_split_at_telegrams_limit_on_paragraphs(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    paragraphs = [f"paragraph {i}: " + "word " * 300 for i in range(8)]  # ~1.5k each
    reply = "\n\n".join(paragraphs)
    await make_agent(runtime, turns=[{"text": reply}])
    await post(api, update(1))
    await eventually(lambda: len(bot.texts(42)) >= 3 and
                     "".join(bot.texts(42)).count("paragraph") == 8)
    got = bot.texts(42)
    assert all(len(t) <= 4096 for t in got)
    assert all(t.startswith("paragraph") for t in got)  # cut between paragraphs
    assert "\n\n".join(got).split() == reply.split()


async def test_typing_is_shown_while_a_run_works_and_stops_after(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "slow answer", "delay_ms": 1500}])
    await post(api, update(1))
    await texts(bot, 42, 1)
    typing = bot.calls("sendChatAction")
    assert typing, "no typing indicator"
    assert {c.payload["action"] for c in typing} == {"typing"}
    assert {c.payload["chat_id"] for c in typing} == {42}
    first_reply = bot.calls("sendMessage")[0].at
    assert typing[0].at < first_reply
    count = len(bot.calls("sendChatAction"))
    await asyncio.sleep(0.5)  # (0.1 s period: a live indicator would have sent more)
    assert len(bot.calls("sendChatAction")) <= count + 1


async def test_typing_can_be_switched_off(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "ok", "delay_ms": 500}], typing=False)
    await post(api, update(1))
    await texts(bot, 42, 1)
    assert bot.calls("sendChatAction") == []


async def test_a_proactive_post_into_the_chats_session_is_delivered(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, tools=["message_post"], turns=[
        {"text": "hi"},
        {"tool_calls": [{"name": "message_post", "arguments": {
            "session": "telegram:42", "content": "Your report is ready."}}]},
        {"text": "posted"}])
    await post(api, update(1))
    await texts(bot, 42, 1)
    sent = await runtime.send("bot", "ops", "post it")
    await runtime.wait(sent.run.id)
    assert await texts(bot, 42, 2) == ["hi", "Your report is ready."]
    assert bot.texts(0) == []  # "posted" stayed in the session it was said in


async def test_schedule_output_in_the_chats_session_is_delivered(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    from datetime import UTC, datetime, timedelta

    await make_agent(runtime, turns=[{"text": "hi"}, {"text": "daily report: all good"}])
    await post(api, update(1))
    await texts(bot, 42, 1)
    at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    made = await api.post("/v1/agents/bot/schedules", json={
        "at": at, "session": "telegram:42", "content": "write the daily report"})
    assert made.status_code == 201, made.text
    assert await texts(bot, 42, 2) == ["hi", "daily report: all good"]


async def test_a_failed_run_is_told_by_its_code_only(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"tool_calls": [{"name": "no_such_tool",
                                                      "arguments": {}}]}] * 3,
                     )
    await runtime.update_agent("bot", {"settings": {
        "max_steps": 1, "channels": {"telegram": TELEGRAM}}})
    await post(api, update(1))
    got = await texts(bot, 42, 1)
    assert got == ["(the agent could not answer: max_steps)"]


# -- attachments ------------------------------------------------------------------------------


async def test_photos_and_documents_are_saved_in_the_workspace(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime)
    bot.add_file("small", b"\xff\xd8 small jpeg", file_path="photos/file_1.jpg")
    bot.add_file("big", b"\xff\xd8 the large jpeg", file_path="photos/file_2.jpg")
    bot.add_file("doc", b"%PDF-1.4 report", file_path="documents/file_3.pdf")
    await post(api, update(5, text=None, caption="look", photo=[
        {"file_id": "small", "file_unique_id": "a", "width": 90, "height": 90},
        {"file_id": "big", "file_unique_id": "b", "width": 800, "height": 800}]))
    await post(api, update(6, text=None, document={
        "file_id": "doc", "file_unique_id": "c", "file_name": "Q3 report.pdf",
        "mime_type": "application/pdf"}))
    got = await texts(bot, 42, 2)
    workspace = runtime.workspace_of(await runtime.get_agent("bot"))
    assert (workspace / "attachments" / "5-0-photo.jpg").read_bytes() == \
        b"\xff\xd8 the large jpeg"
    assert (workspace / "attachments" / "6-0-Q3_report.pdf").read_bytes() == \
        b"%PDF-1.4 report"
    assert "look" in got[0]
    assert "attachments/5-0-photo.jpg (image/jpeg, 17 bytes)" in got[0]
    assert "attachments/6-0-Q3_report.pdf (application/pdf, 15 bytes)" in got[1]


async def test_a_photo_and_a_document_reach_the_model(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """The largest size of a photo (getFile, then the file's download) reaches the
    model as an image, a PDF document as a file; each is also in the workspace. A
    document of a type not taken, or not what its type says, stays a file there."""
    await make_agent(runtime)
    bot.add_file("small", jpeg(9, 9), file_path="photos/file_1.jpg")
    bot.add_file("big", jpeg(80, 60), file_path="photos/file_2.jpg")
    bot.add_file("doc", pdf(2), file_path="documents/file_3.pdf")
    bot.add_file("zip", b"PK\x03\x04 zip", file_path="documents/file_4.zip")
    bot.add_file("fake", b"%PDF-1.4 not really a PDF", file_path="documents/file_5.pdf")
    await post(api, update(5, text=None, caption="look", photo=[
        {"file_id": "small", "file_unique_id": "a", "width": 9, "height": 9},
        {"file_id": "big", "file_unique_id": "b", "width": 80, "height": 60}]))
    await post(api, update(6, text=None, document={
        "file_id": "doc", "file_unique_id": "c", "file_name": "r.pdf",
        "mime_type": "application/pdf"}))
    await post(api, update(7, text="zip", document={
        "file_id": "zip", "file_unique_id": "d", "file_name": "a.zip",
        "mime_type": "application/zip"}))
    await post(api, update(8, text="fake", document={
        "file_id": "fake", "file_unique_id": "e", "file_name": "f.pdf",
        "mime_type": "application/pdf"}))
    got = await texts(bot, 42, 4)
    assert got[0].startswith("echo: look\n\n[attachment saved in the workspace: "
                             "attachments/5-0-photo.jpg (image/jpeg, ")
    assert got[0].endswith(" [image image/jpeg 5-0-photo.jpg 80x60]")
    assert got[1].endswith(" [file application/pdf 6-0-r.pdf 2 pages]")
    assert "[7-0-a.zip: not shown to the model: " in got[2]
    assert "application/zip is not taken" in got[2]
    assert "[8-0-f.pdf: not shown to the model: " in got[3]
    assert "not a readable PDF" in got[3]
    session = (await runtime.list_sessions("bot"))[0]
    user = [e for e in await runtime.read_events(session.id, after=0)
            if e.kind == "message.user"]
    assert [p["type"] for p in user[0].data["parts"]] == ["text", "image"]
    assert "parts" not in user[2].data and "parts" not in user[3].data


async def test_a_photo_for_a_model_without_vision_stays_a_file(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await make_agent(runtime)
    monkeypatch.setattr(type(runtime), "takes_images", lambda self, agent: False)
    bot.add_file("big", jpeg(80, 60), file_path="photos/file_2.jpg")
    await post(api, update(5, text=None, caption="look", photo=[
        {"file_id": "big", "file_unique_id": "b", "width": 80, "height": 60}]))
    [got] = await texts(bot, 42, 1)
    assert "[5-0-photo.jpg: not shown to the model, which takes no images]" in got
    assert "[image" not in got


@pytest.mark.parametrize(("hostile", "kept"), [
    ("../../../../etc/passwd", "passwd"),
    ("..\\..\\evil.sh", "evil.sh"),
    ("/abs/path/x.txt", "x.txt"),
    ("..", "document"),
    ("....//....//x", "x"),
    (".bashrc", "bashrc"),
    ("a\x00b\nc.txt", "a_b_c.txt"),
    ("\u202eexe.txt", "exe.txt"),
])
async def test_a_hostile_file_name_stays_inside_the_attachments_folder(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI, tmp_path: Path,
        hostile: str, kept: str) -> None:
    await make_agent(runtime)
    bot.add_file("f", b"payload", file_path="documents/f")
    await post(api, update(9, text=None, document={"file_id": "f", "file_name": hostile}))
    got = await texts(bot, 42, 1)
    workspace = runtime.workspace_of(await runtime.get_agent("bot"))
    assert os.listdir(workspace / "attachments") == [f"9-0-{kept}"]
    assert f"attachments/9-0-{kept} " in got[0]
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"payload"]
    assert found == [workspace / "attachments" / f"9-0-{kept}"]


async def test_links_the_agent_planted_are_not_followed(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI, tmp_path: Path) -> None:
    """The agent's tools made ``attachments`` a link out of the workspace: nothing is
    written through it, the message still arrives, saying why the file is missing."""
    await make_agent(runtime)
    workspace = runtime.workspace_of(await runtime.get_agent("bot"))
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "attachments").symlink_to(outside)
    bot.add_file("f", b"payload", file_path="documents/f")
    await post(api, update(3, document={"file_id": "f", "file_name": "x.txt"}))
    got = await texts(bot, 42, 1)
    assert list(outside.iterdir()) == []
    assert "hi" in got[0] and "attachment not saved: 3-0-x.txt" in got[0]


async def test_a_link_in_place_of_the_file_is_not_followed(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI, tmp_path: Path) -> None:
    await make_agent(runtime)
    workspace = runtime.workspace_of(await runtime.get_agent("bot"))
    (workspace / "attachments").mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_text("keep me")
    (workspace / "attachments" / "3-0-x.txt").symlink_to(target)
    bot.add_file("f", b"payload", file_path="documents/f")
    await post(api, update(3, document={"file_id": "f", "file_name": "x.txt"}))
    got = await texts(bot, 42, 1)
    assert target.read_text() == "keep me"
    assert "attachment not saved: 3-0-x.txt" in got[0]


async def test_a_file_over_the_limit_is_not_downloaded(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, max_file_mb=1)
    bot.add_file("big", b"x" * ((1 << 20) + 1), file_path="documents/big")
    bot.add_file("liar", b"y" * ((1 << 20) + 1), file_path="documents/liar")
    await post(api, update(1, document={"file_id": "big", "file_name": "a.bin",
                                        "file_size": (1 << 20) + 1}))
    # A size announced small that is not: the download stops at the limit.
    await post(api, update(2, document={"file_id": "liar", "file_name": "b.bin",
                                        "file_size": 10}))
    got = await texts(bot, 42, 2)
    assert "larger than the 1 MB limit" in got[0]
    assert "attachment not saved: 2-0-b.bin: larger than" in got[1]
    assert bot.downloads() == ["documents/liar"]
    workspace = runtime.workspace_of(await runtime.get_agent("bot"))
    leftovers = [p.stat().st_size for p in (workspace / "attachments").iterdir()]
    assert all(size <= 1 << 20 for size in leftovers)


async def test_a_download_outage_is_retried_and_the_message_still_goes_in_order(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime)
    bot.add_file("f", b"payload", file_path="documents/f")
    bot.fail("getFile", 502)
    bot.fail("download", 503)
    await post(api, update(1, text="first", document={"file_id": "f", "file_name": "a"}))
    await post(api, update(2, text="second"))
    got = await texts(bot, 42, 2)
    assert got[0].startswith("echo: first") and "attachments/1-0-a (" in got[0]
    assert got[1] == "echo: second"


# -- Bot API failures ---------------------------------------------------------------------


async def test_a_429_is_waited_out_for_its_retry_after(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "after the flood"}])
    bot.fail("sendMessage", 429, retry_after=1)
    await post(api, update(1))
    assert await texts(bot, 42, 1) == ["after the flood"]
    calls = bot.calls("sendMessage")
    assert [c.answered for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9  # not before Telegram said it may


async def test_server_errors_and_dropped_connections_are_retried(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "eventually"}])
    bot.fail("sendMessage", 500)
    bot.fail("sendMessage", 502)
    bot.fail("sendMessage", "drop")
    bot.fail("sendMessage", 503)
    await post(api, update(1))
    assert await texts(bot, 42, 1) == ["eventually"]
    assert [c.answered for c in bot.calls("sendMessage")] == [500, 502, None, 503, 200]


async def test_a_timeout_is_retried_and_may_repeat_a_message_telegram_took(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    """A call answered after the client's timeout (2 s here) was processed by
    Telegram: the retry sends it again. The documented price of never losing one."""
    await make_agent(runtime, turns=[{"text": "said twice"}])
    bot.fail("sendMessage", "slow", delay_s=3.0)
    await post(api, update(1))
    assert await texts(bot, 42, 2) == ["said twice", "said twice"]
    await asyncio.sleep(0.5)
    assert len(bot.texts(42)) == 2


async def test_a_chat_that_blocked_the_bot_is_given_up_visibly_and_the_next_goes(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI,
        caplog: pytest.LogCaptureFixture) -> None:
    await make_agent(runtime, turns=[{"text": "lost"}, {"text": "found"}])
    bot.fail("sendMessage", 403)
    await post(api, update(1))

    async def given_up() -> dict[str, Any] | None:
        seen = await state(api)
        chats = seen["chats"]
        return seen if chats and chats[0]["last_error"] else None

    seen = await eventually(given_up)
    assert "403" in seen["chats"][0]["last_error"]
    assert "blocked" in seen["chats"][0]["last_error"]
    assert any("given up" in r.getMessage() for r in caplog.records)
    await post(api, update(2))
    assert await texts(bot, 42, 1) == ["found"]
    await eventually(lambda: _no_error(api))


async def _no_error(api: httpx.AsyncClient) -> bool:
    return (await state(api))["chats"][0]["last_error"] is None


async def test_one_chats_outage_does_not_hold_up_another(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime)
    bot.fail("sendMessage", 503, chat_id=100, times=10_000)
    await post(api, update(1, chat_id=100, text="stuck"))
    await eventually(lambda: len(bot.calls("sendMessage")) >= 3)
    await post(api, update(2, chat_id=200, text="free"))
    assert await texts(bot, 200, 1) == ["echo: free"]
    assert bot.texts(100) == []
    bot.clear_faults()
    assert await texts(bot, 100, 1) == ["echo: stuck"]


async def test_the_token_never_reaches_logs_answers_or_events(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await make_agent(runtime, turns=[{"text": "a"}, {"text": "b"}])
    bot.add_file("f", b"data", file_path="documents/f")
    for kind in (429, 500, "drop", 403):
        bot.fail("sendMessage", kind, retry_after=0.1)
    bot.fail("getFile", 502)
    bot.fail("download", 500)
    bot.fail("sendChatAction", 500)
    await post(api, update(1, document={"file_id": "f", "file_name": "d"}))
    await post(api, update(2))
    await texts(bot, 42, 1)
    # (The stub is Telegram's side: its own access log holds the path, as Telegram's
    # would; only the daemon's records are checked.)
    ours = [r for r in caplog.records if not r.threadName.startswith("stub-telegram")]
    assert any(r.name.startswith("agentd.channels") for r in ours)
    everything = [*(r.getMessage() for r in ours), *(str(r.args) for r in ours),
                  (await api.get("/v1/agents/bot/channels/telegram")).text,
                  (await api.get("/v1/agents/bot")).text,
                  (await api.get("/v1/agents/bot/sessions/telegram:42/events")).text]
    assert not [t for t in everything if TOKEN in t or TOKEN.split(":")[1] in t]
    # httpx's request lines were logged, with the token taken out.
    assert "bot<token>/sendMessage" in caplog.text


async def test_a_missing_bot_token_variable_is_a_clear_given_up_reason(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await make_agent(runtime)
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    await post(api, update(1))

    async def given_up() -> str | None:
        chats = (await state(api))["chats"]
        return chats[0]["last_error"] if chats and chats[0]["last_error"] else None

    reason = await eventually(given_up)
    assert "TELEGRAM_BOT_TOKEN" in reason and "not set" in reason
    assert bot.calls() == []


async def test_deleting_the_agent_stops_its_chats_and_closes_its_webhook(
        runtime: Runtime, api: httpx.AsyncClient, bot: StubBotAPI) -> None:
    await make_agent(runtime, turns=[{"text": "never sent", "delay_ms": 5000}])
    await post(api, update(1))
    await eventually(lambda: bot.calls("sendChatAction"), what="typing shown")
    assert (await api.delete("/v1/agents/bot")).status_code == 204
    outbox = runtime.telegram.outbox
    await eventually(lambda: not outbox._typing and not outbox._by_session,
                     what="the deleted agent's chats forgotten")
    shown = len(bot.calls("sendChatAction"))
    await asyncio.sleep(0.5)  # (0.1 s period: a live indicator would have sent more)
    assert len(bot.calls("sendChatAction")) <= shown + 1
    assert (await post(api, update(2))).status_code == 403
    assert bot.texts(42) == []


# -- several nodes on one PostgreSQL store ---------------------------------------------------


@pytest.mark.postgres
async def test_two_nodes_serve_each_chat_once_and_in_order(
        pg_url: str, tmp_path: Path, bot: StubBotAPI, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Two daemons share the store and both run the channel's workers; updates come in
    through either. Each chat's lease gives it to one node at a time: every message is
    handed over once and answered once, in order."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_SECRET", SECRET)
    nodes = []
    for name in ("node-a", "node-b"):
        node_settings = Settings(
            home=tmp_path / name, demo_agent=False, shutdown_grace_s=2.0,
            database_url=pg_url, node_id=name,
            channels={"telegram": {"api_base": bot.url, "retry_base_s": 0.05,
                                   "retry_max_s": 0.2, "timeout_s": 2.0}})
        nodes.append(await Runtime.open(node_settings))
    try:
        a = nodes[0]
        await make_agent(a)
        chats = [501, 502, 503, 504]
        uid = 0
        for round_ in range(5):
            for chat in chats:
                uid += 1
                node = nodes[uid % 2]
                answer = await node.telegram.accept(
                    "bot", SECRET, orjson_dumps(update(uid, chat_id=chat,
                                                       text=f"r{round_}")))
                assert answer["duplicate"] is False
        for chat in chats:
            got = await texts(bot, chat, 5)
            assert got == [f"echo: r{i}" for i in range(5)], (chat, got)
        await asyncio.sleep(1.0)  # (a second node sending late would show here)
        for chat in chats:
            assert len(bot.texts(chat)) == 5, bot.texts(chat)
        runs = await a.list_runs(agent="bot", limit=100)
        assert len(runs.runs) == 20
    finally:
        for node in nodes:
            await node.close()


def orjson_dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


async def test_only_the_webhook_is_public(
        runtime: Runtime, api: httpx.AsyncClient) -> None:
    await make_agent(runtime)
    no_token = {"Authorization": ""}
    assert (await api.get("/v1/agents/bot/channels/telegram",
                          headers=no_token)).status_code == 401
    assert (await api.get("/v1/channels/telegram/bot/webhook",
                          headers=no_token)).status_code in (404, 405)
    assert (await api.get("/v1/agents/bot/channels/telegram")).status_code == 200
    assert (await api.get("/v1/agents/nobody/channels/telegram")).status_code == 404
