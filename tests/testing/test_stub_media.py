"""The stub LLM server checks images and files as the real APIs do: each part against
the official SDK's type for it, and the bytes against what they claim to be. Requests
are sent with the official ``openai`` and ``anthropic`` clients."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from tests.media.images import jpeg, pdf, png

from agentd.testing import StubLLMServer


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


def url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def chat(stub: StubLLMServer, messages: list[Any]) -> str:
    with openai.OpenAI(base_url=stub.base_url, api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(model="m", messages=messages)
    return reply.choices[0].message.content or ""


def claude(stub: StubLLMServer, messages: list[Any]) -> str:
    with anthropic.Anthropic(base_url=stub.root_url, api_key="x", max_retries=0) as client:
        reply = client.messages.create(model="claude-x", max_tokens=100, messages=messages)
    block = reply.content[0]
    return block.text if block.type == "text" else ""


def test_openai_sees_a_valid_image(stub: StubLLMServer) -> None:
    said = chat(stub, [{"role": "user", "content": [
        {"type": "text", "text": "what"},
        {"type": "image_url", "image_url": {"url": url(png(3, 4), "image/png")}}]}])
    assert said == "stub: what [image image/png 3x4]"


@pytest.mark.parametrize(("messages", "says"), [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": url(jpeg(), "image/png")}}]}], "the data URL says image/png"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": url(b"not an image", "image/png")}}]}], "unsupported image"),
    ([{"role": "user", "content": [{"type": "file", "file": {
        "file_data": url(png(), "application/pdf"), "filename": "x.pdf"}}]}],
     "only PDF files"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "content": None, "tool_calls": [{
          "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url", "image_url": {
          "url": url(png(), "image/png")}}]}], "only supported for user messages"),
])
def test_openai_refuses_what_the_api_refuses(stub: StubLLMServer, messages: list[Any],
                                             says: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(stub, messages)
    assert says in str(caught.value)


def test_anthropic_sees_images_and_documents(stub: StubLLMServer) -> None:
    said = claude(stub, [{"role": "user", "content": [
        {"type": "text", "text": "read"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": base64.b64encode(jpeg(6, 5)).decode()}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": base64.b64encode(pdf()).decode()}}]}])
    assert said == "stub: read [image image/jpeg 6x5] [file application/pdf]"


@pytest.mark.parametrize(("block", "says"), [
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                  "data": base64.b64encode(jpeg()).decode()}},
     "does not match the provided media type"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/bmp",
                                  "data": "AAAA"}}, "image/jpeg"),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                     "data": base64.b64encode(png()).decode()}},
     "not valid"),
])
def test_anthropic_refuses_what_the_api_refuses(stub: StubLLMServer, block: dict[str, Any],
                                                says: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(stub, [{"role": "user", "content": [block]}])
    assert says in str(caught.value)
