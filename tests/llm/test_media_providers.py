"""Images and files given to models in each provider's format, through the official
SDKs (the providers' clients) against the stub LLM server, which checks every part and
block against the SDKs' own types and reads the bytes (tests/llm/../testing)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tests.media.images import jpeg, pdf, png

from agentd.llm import attachments as _attachments
from agentd.llm.memo import PrefixMemo
from agentd.llm.messages import (
    AssistantMessage,
    MediaPart,
    ModelRequest,
    TextDelta,
    TextPart,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentd.llm.model import Model
from agentd.llm.registry import resolve_model
from agentd.testing import StubLLMServer


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[StubLLMServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    stub_server.clear()
    yield stub_server
    stub_server.clear()


@pytest.fixture(params=["openai", "anthropic"])
async def model(request: pytest.FixtureRequest, stub: StubLLMServer) -> AsyncIterator[Model]:
    if request.param == "openai":
        instance = resolve_model("openai-compatible:stub-model",
                                 settings={"base_url": stub.base_url, "max_retries": 0})
    else:
        instance = resolve_model("anthropic:claude-test-model",
                                 settings={"base_url": stub.root_url, "max_retries": 0})
    yield instance
    await instance.aclose()


def part(data: bytes, media_type: str, kind: str = "image", **more: Any) -> MediaPart:
    return MediaPart(kind=kind, blob=hashlib.sha256(data).hexdigest(),  # type: ignore[arg-type]
                     media_type=media_type, size=len(data), data=data, **more)


async def answer(model: Model, request: ModelRequest) -> str:
    return "".join([e.text async for e in model.stream(request) if isinstance(e, TextDelta)])


def provider(model: Model) -> str:
    return "anthropic" if "anthropic" in type(model).__module__ else "openai"


async def test_a_user_message_with_an_image_a_pdf_and_a_text_file(
        model: Model, stub: StubLLMServer) -> None:
    message = UserMessage(content="look\nand read", parts=[
        TextPart(text="look"), part(png(12, 34), "image/png", width=12, height=34),
        TextPart(text="and read"),
        part(pdf(2), "application/pdf", kind="file", name="r.pdf", pages=2),
        part(b"notes here", "text/plain", kind="file", name="n.txt")])
    said = await answer(model, ModelRequest(messages=[message]))
    body = stub.requests[-1]
    content = body["messages"][-1]["content"]
    if provider(model) == "openai":
        assert said == ("stub: look [image image/png 12x34] and read [file application/pdf] "
                        '<file name="n.txt" media_type="text/plain">\nnotes here\n</file>')
        assert [p["type"] for p in content] == ["text", "image_url", "text", "file", "text"]
        assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
        assert content[3]["file"]["filename"] == "r.pdf"
    else:
        assert said == ("stub: look [image image/png 12x34] and read [file application/pdf] "
                        "[file text/plain n.txt]")
        assert [b["type"] for b in content] == ["text", "image", "text", "document",
                                                "document"]
        assert content[1]["source"]["media_type"] == "image/png"
        assert content[3]["source"] == {"type": "base64", "media_type": "application/pdf",
                                        "data": content[3]["source"]["data"]}
        assert content[4]["source"] == {"type": "text", "media_type": "text/plain",
                                        "data": "notes here"}


def _tool_step(image: bytes) -> list[Any]:
    """Two calls in one step, the first returning an image."""
    return [
        UserMessage(content="take a screenshot"),
        AssistantMessage(tool_calls=[ToolCall(id="c1", name="shot", arguments={}),
                                     ToolCall(id="c2", name="other", arguments={})],
                         finish_reason="tool_calls"),
        ToolResultMessage(call_id="c1", name="shot", content="saved",
                          parts=[part(image, "image/jpeg", width=20, height=10)]),
        ToolResultMessage(call_id="c2", name="other", content="fine"),
    ]


async def test_an_image_a_tool_returned_reaches_the_model(model: Model,
                                                          stub: StubLLMServer) -> None:
    image = jpeg(20, 10)
    said = await answer(model, ModelRequest(messages=_tool_step(image)))
    messages = stub.requests[-1]["messages"]
    if provider(model) == "openai":
        # Tool messages hold text only: the image follows in a user message, after
        # the step's last tool message (never between two of them).
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
        assert messages[2]["content"] == "saved"
        assert said == ("stub: [the image the shot call c1 returned] "
                        "[image image/jpeg 20x10]")
    else:
        results = messages[-1]["content"]
        assert results[0]["type"] == "tool_result"
        assert [b["type"] for b in results[0]["content"]] == ["text", "image"]
        assert results[0]["content"][1]["source"]["media_type"] == "image/jpeg"
        assert results[1]["content"] == "fine"


async def test_bytes_that_are_gone_are_a_note(model: Model, stub: StubLLMServer) -> None:
    gone = MediaPart(kind="image", blob="a" * 64, media_type="image/png", size=9,
                     data=_missing())
    said = await answer(model, ModelRequest(messages=[UserMessage(content="x", parts=[
        TextPart(text="x"), gone])]))
    assert said.startswith("stub: x")
    assert said.endswith("[image image/png: its content is no longer available]")


def _missing() -> bytes:
    from agentd.runtime.media import MISSING
    return MISSING


async def test_an_image_is_encoded_once_per_session(model: Model, stub: StubLLMServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn does not encode the images of earlier turns again: the session's memo
    holds each message's encoding (the image a tool returned too)."""
    encoded: list[str] = []
    real = _attachments.b64

    def counting(p: MediaPart) -> str:
        encoded.append(p.blob)
        return real(p)

    monkeypatch.setattr(_attachments, "b64", counting)
    memo = PrefixMemo()
    messages: list[Any] = [UserMessage(content="", parts=[part(png(), "image/png")]),
                           AssistantMessage(text="a red image")]
    messages += _tool_step(jpeg())[1:]
    messages.insert(2, UserMessage(content="take a screenshot"))
    for turn in range(4):
        await answer(model, ModelRequest(messages=list(messages), memo=memo))
        messages += [AssistantMessage(text=f"turn {turn}"),
                     UserMessage(content=f"more {turn}")]
    assert len(encoded) == 2  # the user's image and the tool's, once each
    assert "image" in str(stub.requests[-1]["messages"][0])
