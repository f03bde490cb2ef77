"""A message's images and files survive what happens to its session: compaction (the
summary names them, the log and the blob keep them), checkpoints and restores, forks
(references copied, bytes not), a cache of histories emptied (the bytes are read from
the store again). Each is checked where it matters: the model (an OpenAI-compatible one,
through the official SDK, against the stub LLM server, which reads the image) gets the
image's bytes on the next call. SQLite and PostgreSQL (the ``runtime`` fixture)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from tests.media.images import png

from agentd.assembly import Runtime
from agentd.media import RawPart
from agentd.testing import StubLLMServer

IMAGE = png(12, 34)
SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer) -> Iterator[StubLLMServer]:
    stub_server.clear()
    yield stub_server
    stub_server.clear()


async def with_image(runtime: Runtime, stub: StubLLMServer) -> str:
    """An agent on the stub, and a first message carrying the image; its session id."""
    await runtime.create_agent(name="a", model="openai-compatible:stub-model",
                               settings={"base_url": stub.base_url, "max_retries": 0})
    attachments = await runtime.media.prepare([RawPart(kind="text", text="remember"),
                                               RawPart(kind="image", data=IMAGE)])
    sent = await runtime.send("a", "k", attachments.content, attachments=attachments)
    done = await runtime.wait(sent.run.id)
    assert done.output == "stub: remember [image image/png 12x34]", done
    return sent.session.id


def images_in(body: dict[str, Any]) -> list[bytes]:
    """The images a request to the stub carried (decoded)."""
    found = []
    for message in body["messages"]:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "image_url":
                found.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
    return found


async def turn(runtime: Runtime, stub: StubLLMServer, key: str, text: str
               ) -> dict[str, Any]:
    """One more turn in session ``key``; the request the model got."""
    sent = await runtime.send("a", key, text)
    assert (await runtime.wait(sent.run.id)).status == "completed"
    return stub.requests[-1]


async def test_a_later_turn_sends_the_image_again(runtime: Runtime, stub: StubLLMServer
                                                  ) -> None:
    await with_image(runtime, stub)
    assert images_in(await turn(runtime, stub, "k", "and now?")) == [IMAGE]


async def test_the_history_rebuilt_from_the_log_reads_the_bytes_again(
        runtime: Runtime, stub: StubLLMServer) -> None:
    session_id = await with_image(runtime, stub)
    runtime.histories.drop(session_id)  # (a restart, or the LRU: folded from the log)
    assert images_in(await turn(runtime, stub, "k", "still there?")) == [IMAGE]


async def test_a_fork_holds_the_image_by_reference(runtime: Runtime, stub: StubLLMServer
                                                   ) -> None:
    await with_image(runtime, stub)
    head = await runtime.create_checkpoint("a", "k", "head")
    forked = await runtime.fork("a", "k", new_key="f", checkpoint=head.id)
    assert images_in(await turn(runtime, stub, "f", "in the fork")) == [IMAGE]
    assert await runtime.session_blob("a", "f", SHA) == ("image/png", IMAGE)
    count = await runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM blobs"))
    assert count is not None and count[0] == 1  # bytes kept once
    await runtime.delete_session("a", "k")
    assert images_in(await turn(runtime, stub, "f", "after the source went")) == [IMAGE]
    assert forked.key == "f"


async def test_a_restore_to_a_checkpoint_before_and_after_the_image(
        runtime: Runtime, stub: StubLLMServer) -> None:
    await with_image(runtime, stub)
    after = await runtime.create_checkpoint("a", "k", "with-image")
    await turn(runtime, stub, "k", "more")
    await runtime.restore("a", "k", checkpoint=after.id)
    assert images_in(await turn(runtime, stub, "k", "restored")) == [IMAGE]
    await runtime.restore("a", "k", seq=1)  # before the message
    assert images_in(await turn(runtime, stub, "k", "from the start")) == []
    # The log's archive keeps it: restoring forward brings it back.
    await runtime.restore("a", "k", checkpoint=after.id)
    assert images_in(await turn(runtime, stub, "k", "again")) == [IMAGE]


async def test_compaction_names_the_image_and_keeps_it_in_the_log(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="s", model="scripted")
    attachments = await runtime.media.prepare([RawPart(kind="text", text="this photo"),
                                               RawPart(kind="image", data=IMAGE)])
    first = await runtime.send("s", "k", attachments.content, attachments=attachments)
    await runtime.wait(first.run.id)
    for text in ("two", "three", "four"):
        await runtime.wait((await runtime.send("s", "k", text)).run.id)
    done = await runtime.compact_session("s", "k", strategy="summarize", keep_turns=1)
    assert done.data["messages"] >= 2, done.to_api()
    history = await runtime.session_context("s", "k")
    assert history.summary is not None
    assert f"[image image/png 12x34 blob:{SHA[:12]}]" in history.summary
    assert await runtime.session_blob("s", "k", SHA) == ("image/png", IMAGE)
    events = await runtime.read_events(first.session.id, after=0)
    assert any(e.data.get("parts") for e in events if e.kind == "message.user")
