"""Images and files through the OpenAI-compatible door, with the official ``openai``
SDK, unmodified: Chat Completions ``image_url`` and ``file`` parts, Responses
``input_image`` and ``input_file``, as data URLs and as http URLs the daemon fetches
under the egress rules; and the attacks: a URL to the loopback, to the metadata
address, to a private address, a redirect to one, a file smuggled under another type."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from tests.daemons import ThreadDaemon
from tests.media.hosts import Host, media_daemon, private_host, serving
from tests.media.images import jpeg, pdf, png

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    with private_host(tmp_path_factory.mktemp("private") / "hits") as host:
        yield host


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, private: Host) -> Iterator[Host]:
    """The "public" web: a local server the daemon's settings list as an endpoint."""
    with serving({
        "/cat.png": (200, {"Content-Type": "image/png"}, png(9, 9)),
        "/moved-local.png": (302, {"Location": f"{private.base}/secret.png"}, b""),
        "/moved-meta.png": (302, {"Location": "http://169.254.169.254/latest/meta-data/"},
                            b""),
        "/moved-here.png": (302, {"Location": "/cat.png"}, b""),
    }, tmp_path_factory.mktemp("web") / "hits") as host:
        yield host


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, web: Host) -> Iterator[ThreadDaemon]:
    process = media_daemon(tmp_path_factory.mktemp("openai-media"), web, "t0ken-media",
                           ("eye", "scripted"), ("blind", "deepseek:deepseek-chat"))
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def client(daemon: ThreadDaemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=daemon.token, timeout=60,
                       max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def api(daemon: ThreadDaemon) -> Iterator[httpx.Client]:
    with daemon.client() as native:
        yield native


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def chat(client: openai.OpenAI, content: list[dict[str, Any]], model: str = "eye") -> str:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}])  # type: ignore[misc,list-item]
    return completion.choices[0].message.content or ""


def test_chat_image_url_and_file_parts(client: openai.OpenAI, api: httpx.Client) -> None:
    said = chat(client, [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": data_url(png(12, 34), "image/png")}},
        {"type": "file", "file": {"file_data": data_url(pdf(2), "application/pdf"),
                                  "filename": "doc.pdf"}}])
    assert said == ("echo: compare [image image/png 12x34] "
                    "[file application/pdf doc.pdf 2 pages]")


def test_responses_input_image_and_input_file(client: openai.OpenAI) -> None:
    response = client.responses.create(model="eye", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is"},
        {"type": "input_image", "image_url": data_url(jpeg(20, 10), "image/jpeg"),
         "detail": "auto"},
        {"type": "input_file", "filename": "n.txt",
         "file_data": data_url(b"some notes", "text/plain")}]}])
    assert response.output_text == ("echo: what is [image image/jpeg 20x10] "
                                    "[file text/plain n.txt]")


def test_an_http_url_is_fetched(client: openai.OpenAI, web: Host) -> None:
    said = chat(client, [{"type": "image_url", "image_url": {"url": f"{web.base}/cat.png"}}])
    assert said == "echo: [image image/png 9x9]"
    assert "/cat.png" in web.hits
    response = client.responses.create(model="eye", input=[{"role": "user", "content": [
        {"type": "input_file", "file_url": f"{web.base}/moved-here.png"}]}])
    assert response.output_text == "echo: [image image/png cat.png 9x9]"


def refused(client: openai.OpenAI, content: list[dict[str, Any]], model: str = "eye"
            ) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, content, model)
    assert 400 <= caught.value.status_code < 500, caught.value
    assert "Traceback" not in str(caught.value.body)
    return caught.value


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{private}/secret.png",   # the loopback
    "http://localhost:{private}/secret.png",
    "http://169.254.169.254/latest/meta-data/iam",  # the cloud metadata address
    "http://10.1.2.3/x.png",                   # a private address
    "http://[::1]:{private}/secret.png",
    "http://127.0.0.1:{daemon}/v1/agents",     # the daemon's own API
    "file:///etc/passwd",
    "gopher://127.0.0.1:{private}/",
])
def test_ssrf_urls_are_refused(client: openai.OpenAI, private: Host, daemon: ThreadDaemon,
                               url: str) -> None:
    before = len(private.hits)
    target = url.format(private=private.port, daemon=daemon.port)
    error = refused(client, [{"type": "image_url", "image_url": {"url": target}}])
    assert error.status_code == 400  # (OpenAI's status for the native 422)
    assert error.code == "url_refused", error.body
    assert len(private.hits) == before


@pytest.mark.parametrize("path", ["/moved-local.png", "/moved-meta.png"])
def test_a_redirect_to_a_private_address_is_refused(client: openai.OpenAI, web: Host,
                                                    private: Host, path: str) -> None:
    before = len(private.hits)
    error = refused(client, [{"type": "image_url", "image_url": {"url": f"{web.base}{path}"}}])
    assert error.code == "url_refused"
    assert path in web.hits
    assert len(private.hits) == before


@pytest.mark.parametrize(("content", "status", "code"), [
    ([{"type": "image_url", "image_url": {"url": data_url(pdf(), "image/png")}}], 400,
     "invalid_media"),
    ([{"type": "file", "file": {"file_data": data_url(png(), "application/pdf")}}], 400,
     "invalid_media"),
    ([{"type": "image_url", "image_url": {"url": data_url(b"<svg/>", "image/svg+xml")}}],
     415, "unsupported_media"),
    ([{"type": "file", "file": {"file_id": "file-abc"}}], 400, None),
])
def test_smuggled_and_unsupported_files(client: openai.OpenAI, api: httpx.Client,
                                        content: list[dict[str, Any]], status: int,
                                        code: str | None) -> None:
    before = api.get("/v1/agents/eye/sessions").json()["sessions"]
    error = refused(client, content)
    assert error.status_code == status, error.body
    if code is not None:
        assert error.code == code
    assert api.get("/v1/agents/eye/sessions").json()["sessions"] == before


def test_a_model_without_vision_is_refused_naming_it(client: openai.OpenAI) -> None:
    error = refused(client, [{"type": "image_url", "image_url": {
        "url": data_url(png(), "image/png")}}], model="blind")
    assert error.status_code == 400
    assert error.code == "model_no_vision"
    assert "deepseek:deepseek-chat" in str(error.body)
