"""The OpenAI-compatible embedder, through the real SDK, over a socket to the stub server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import free_port

from agentd.errors import InvalidInput, InvalidModel, ModelError
from agentd.memory.embed import Embedder, clear_cache, resolve_embedder
from agentd.testing import StubLLMServer
from agentd.testing._embeddings import stub_vector

SPEC = "openai-compatible:stub-embed"


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer) -> Iterator[StubLLMServer]:
    stub_server.clear()
    yield stub_server
    stub_server.clear()


@pytest.fixture
async def embedder(stub: StubLLMServer) -> AsyncIterator[Embedder]:
    # No SDK retries, so a fault surfaces on the first call; a fresh client per test.
    instance = resolve_embedder(SPEC, settings={"base_url": stub.base_url, "max_retries": 0})
    assert instance is not None
    yield instance
    await instance.aclose()


def embedding_requests(stub: StubLLMServer) -> list[dict[str, Any]]:
    return [body for body in stub.requests if "input" in body]


# --- vectors --------------------------------------------------------------------------


async def test_vectors_come_back_normalised_in_order_with_the_dim_learned(
    stub: StubLLMServer, embedder: Embedder,
) -> None:
    assert embedder.dim == 0  # a model this version does not know: told by the server
    texts = ["the cat sat", "a dog barked at the cat", "invoices are due friday"]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    assert embedder.dim == 64
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for row, text in zip(vectors, texts, strict=True):
        assert np.allclose(row, stub_vector(text, 64), atol=1e-6)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    (request,) = embedding_requests(stub)
    assert request["model"] == "stub-embed"
    assert request["input"] == texts
    assert request["encoding_format"] == "base64"
    assert "dimensions" not in request


async def test_empty_input_makes_no_request(stub: StubLLMServer, embedder: Embedder) -> None:
    vectors = await embedder.embed([])
    assert vectors.shape == (0, 0)  # the dim is not known yet
    assert embedding_requests(stub) == []


async def test_an_empty_text_is_sent_as_a_space(stub: StubLLMServer,
                                                embedder: Embedder) -> None:
    vectors = await embedder.embed(["", "hello"])
    assert vectors.shape == (2, 64)
    assert embedding_requests(stub)[0]["input"] == [" ", "hello"]


async def test_many_texts_go_in_several_requests_and_keep_their_order(
    stub: StubLLMServer, embedder: Embedder,
) -> None:
    texts = [f"entry {i} word{i}" for i in range(embedder.max_batch * 2 + 3)]
    vectors = await embedder.embed(texts)
    sent = embedding_requests(stub)
    assert [len(body["input"]) for body in sent] == [embedder.max_batch,
                                                     embedder.max_batch, 3]
    expected = np.vstack([stub_vector(text, 64) for text in texts])
    assert np.allclose(vectors, expected, atol=1e-6)


async def test_dimensions_are_asked_for(stub: StubLLMServer) -> None:
    embedder = resolve_embedder("openai-compatible:text-embedding-3-small",
                                settings={"base_url": stub.base_url, "dimensions": 32})
    assert embedder is not None
    assert embedder.dim == 32
    vectors = await embedder.embed(["short vectors"])
    assert vectors.shape == (1, 32)
    assert embedding_requests(stub)[0]["dimensions"] == 32
    await embedder.aclose()


async def test_openai_uses_its_key_and_base_url_from_the_environment(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    monkeypatch.setenv("AGENTD_OPENAI_BASE_URL", stub.base_url)
    embedder = resolve_embedder("openai:text-embedding-3-small")
    assert embedder is not None
    assert embedder.dim == 1536  # known before any call
    vectors = await embedder.embed(["hello world"])
    assert vectors.shape == (1, 1536)
    assert stub.headers[-1]["authorization"] == "Bearer sk-test-123"
    await embedder.aclose()


async def test_a_changed_environment_gives_a_new_client(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", stub.base_url)
    first = resolve_embedder(SPEC)
    assert resolve_embedder(SPEC) is first
    monkeypatch.setenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", stub.root_url + "/other/v1")
    second = resolve_embedder(SPEC)
    assert second is not first
    for instance in (first, second):
        assert instance is not None
        await instance.aclose()


# --- configuration errors -----------------------------------------------------------


def test_openai_without_a_key_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    clear_cache()
    with pytest.raises(InvalidModel, match="OPENAI_API_KEY"):
        resolve_embedder("openai:text-embedding-3-small")


def test_openai_compatible_without_a_base_url_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", raising=False)
    with pytest.raises(InvalidModel, match="AGENTD_OPENAI_COMPATIBLE_BASE_URL"):
        resolve_embedder(SPEC)


@pytest.mark.parametrize(("settings", "says"), [
    ({"api_key": "sk-inline"}, "settings.api_key is not allowed"),
    ({"dimensions": 0}, "dimensions"),
    ({"dimensions": "64"}, "dimensions"),
    ({"timeout_s": -1}, "timeout_s"),
])
def test_bad_settings_are_refused(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        resolve_embedder(SPEC, settings={"base_url": "http://127.0.0.1:9/v1", **settings})


# --- HTTP errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "code", "retryable"), [
    ("http_401", "model_auth", False),
    ("http_400", "model_bad_request", False),
    ("http_429", "model_rate_limited", True),
    ("http_500", "model_unavailable", True),
])
async def test_http_errors_become_model_errors(
    stub: StubLLMServer, embedder: Embedder, fault: str, code: str, retryable: bool,
) -> None:
    stub.enqueue(fault=fault)
    with pytest.raises(ModelError) as caught:
        await embedder.embed(["hello"])
    error = caught.value
    assert (error.code, error.retryable) == (code, retryable)
    assert fault.removeprefix("http_") in error.message
    assert error.details["provider"] == "openai-compatible"
    # The fault was used up: the next call works.
    assert (await embedder.embed(["hello"])).shape == (1, 64)


async def test_sdk_retries_a_server_error_when_allowed(stub: StubLLMServer) -> None:
    embedder = resolve_embedder(SPEC, settings={"base_url": stub.base_url, "max_retries": 1})
    assert embedder is not None
    stub.enqueue(fault="http_503")
    vectors = await embedder.embed(["retried"])
    assert vectors.shape == (1, 64)
    assert len(embedding_requests(stub)) == 2
    await embedder.aclose()


async def test_a_server_without_the_route_is_a_clear_error(stub: StubLLMServer) -> None:
    embedder = resolve_embedder(SPEC, settings={"base_url": stub.root_url + "/nowhere",
                                                "max_retries": 0})
    assert embedder is not None
    with pytest.raises(ModelError) as caught:
        await embedder.embed(["hello"])
    assert caught.value.code == "model_bad_request"
    assert "404" in caught.value.message
    await embedder.aclose()


async def test_nothing_listening_is_a_retryable_error() -> None:
    embedder = resolve_embedder(SPEC, settings={
        "base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0})
    assert embedder is not None
    with pytest.raises(ModelError) as caught:
        await embedder.embed(["hello"])
    assert (caught.value.code, caught.value.retryable) == ("model_unavailable", True)
    await embedder.aclose()


# --- the stub's route, as other clients see it ------------------------------------------


async def test_stub_speaks_floats_and_base64_and_refuses_what_openai_refuses(
    stub: StubLLMServer,
) -> None:
    url = stub.base_url + "/embeddings"
    async with httpx.AsyncClient() as client:
        floats = (await client.post(url, json={"model": "m", "input": "a b"})).json()
        packed = (await client.post(url, json={"model": "m", "input": ["a b"],
                                               "encoding_format": "base64"})).json()
        empty = await client.post(url, json={"model": "m", "input": [""]})
        missing = await client.post(url, json={"input": ["x"]})
    assert floats["object"] == "list" and floats["model"] == "m"
    assert floats["data"][0]["object"] == "embedding" and floats["data"][0]["index"] == 0
    assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats["data"][0]["embedding"])
    assert (empty.status_code, missing.status_code) == (400, 400)
    assert "input" in empty.json()["error"]["message"]
