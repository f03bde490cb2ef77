"""Images and files in a message, on the native API: JSON parts and multipart uploads,
the blob route, and every bad input refused with a 4xx before anything is written.

Runs on SQLite and PostgreSQL (the ``runtime`` fixture)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from tests.media.images import b64, bomb_png, gif, jpeg, noise_png, pdf, png, webp
from tests.server.test_api import (
    ClientFactory,
    client,
    create_agent,
    error_code,
    events,
    make_client,
)

from agentd.assembly import Runtime

__all__ = ["client", "make_client"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def post(client: httpx.AsyncClient, content: Any, *, agent: str = "a", key: str = "k",
               **body: Any) -> httpx.Response:
    return await client.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                             json={"content": content, **body})


async def test_an_image_part_reaches_the_model_and_the_log_keeps_a_reference(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    await create_agent(client)
    image = png(12, 34)
    response = await post(client, [{"type": "text", "text": "what is this?"},
                                   {"type": "image", "media_type": "image/png",
                                    "data": b64(image)}])
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "echo: what is this? [image image/png 12x34]"
    user = next(e for e in await events(client) if e["kind"] == "message.user")
    assert user["data"]["content"] == "what is this?"
    assert user["data"]["parts"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "blob": sha(image), "media_type": "image/png", "size": len(image),
         "width": 12, "height": 34}]
    assert b64(image) not in response.text + str(user)  # the log holds no bytes
    blob = await client.get(f"/v1/agents/a/sessions/k/blobs/{sha(image)}")
    assert blob.status_code == 200
    assert blob.content == image
    assert blob.headers["content-type"] == "image/png"
    assert blob.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("data", "media_type", "label"), [
    (jpeg(20, 10), "image/jpeg", "image image/jpeg 20x10"),
    (webp(8, 8), "image/webp", "image image/webp 8x8"),
    (gif(3), "image/gif", "image image/gif 4x4"),
    (pdf(3), "application/pdf", "file application/pdf r.pdf 3 pages"),
    ("héllo\n".encode(), "text/plain", "file text/plain r.pdf"),
])
async def test_each_type_taken(client: httpx.AsyncClient, data: bytes, media_type: str,
                               label: str) -> None:
    await create_agent(client)
    kind = "image" if media_type.startswith("image/") else "file"
    part = {"type": kind, "media_type": media_type, "data": b64(data)}
    if kind == "file":
        part["name"] = "r.pdf"
    response = await post(client, [part])
    assert response.status_code == 200, response.text
    assert response.json()["output"] == f"echo: [{label}]"


async def test_a_multipart_upload(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    image, document = png(5, 6), pdf(1)
    response = await client.post("/v1/agents/a/sessions/k/messages", data={
        "content": "two files"}, files=[("file", ("a.png", image, "image/png")),
                                        ("file", ("b.pdf", document, "application/pdf"))])
    assert response.status_code == 200, response.text
    assert response.json()["output"] == (
        "echo: two files [image image/png a.png 5x6] [file application/pdf b.pdf 1 page]")


async def test_what_is_wrong_with_a_file_is_said_plainly(client: httpx.AsyncClient
                                                         ) -> None:
    """A program uploaded as ``application/octet-stream`` (what curl and browsers send
    for a type they do not know) is a type not taken, not "bad text"; a PNG that is not
    one says so without the decoder's internals."""
    await create_agent(client)
    upload = await client.post("/v1/agents/a/sessions/k/messages", data={
        "content": "run this"}, files=[("file", ("setup.exe", b"MZ\x90\x00\xff" * 50,
                                                 "application/octet-stream"))])
    assert upload.status_code == 415, upload.text
    message = upload.json()["error"]["message"]
    assert "not a type taken" in message and "application/pdf" in message, message
    assert "UTF-8 text (byte" not in message
    fake = await post(client, [{"type": "image", "media_type": "image/png",
                                "data": b64(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))}])
    assert fake.status_code == 422, fake.text
    assert fake.json()["error"]["message"] == (
        "body.content[0]: not a readable PNG image (its bytes do not decode as PNG)")
    assert (await client.get("/v1/agents/a/sessions/k")).status_code == 404


async def test_the_same_image_is_kept_once(client: httpx.AsyncClient, runtime: Runtime
                                           ) -> None:
    await create_agent(client)
    image = png()
    for key in ("one", "two"):
        response = await post(client, [{"type": "image", "data": b64(image)}], key=key)
        assert response.status_code == 200, response.text
    count = await runtime.store.engine.read(lambda tx: tx.one(
        "SELECT COUNT(*) FROM blobs WHERE sha256 = ?", (sha(image),)))
    assert count is not None and count[0] == 1


async def test_a_blob_sent_again_by_its_hash(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    image = png(7, 7)
    assert (await post(client, [{"type": "image", "data": b64(image)}])).status_code == 200
    again = await post(client, [{"type": "text", "text": "again"},
                                {"type": "image", "blob": sha(image)}], key="other")
    assert again.status_code == 200, again.text
    assert again.json()["output"] == "echo: again [image image/png 7x7]"


# -- bad input: a clear 4xx, nothing written ---------------------------------------------


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("not base64", {"type": "image", "data": "!!!"}, 422, "invalid_media"),
    ("a PNG that is not a PNG", {"type": "image", "media_type": "image/png",
                                 "data": b64(b"\x89PNG\r\n\x1a\nnot really")}, 422,
     "invalid_media"),
    ("a JPEG declared as PNG", {"type": "image", "media_type": "image/png",
                                "data": b64(jpeg())}, 422, "invalid_media"),
    ("a PDF smuggled as an image", {"type": "image", "media_type": "image/png",
                                    "data": b64(pdf())}, 422, "invalid_media"),
    ("a PNG smuggled as text", {"type": "file", "media_type": "text/plain",
                                "data": b64(png())}, 422, "invalid_media"),
    ("a decompression bomb", {"type": "image", "data": b64(bomb_png())}, 422,
     "invalid_media"),
    ("a type not taken", {"type": "file", "media_type": "application/zip",
                          "data": b64(b"PK\x03\x04")}, 415, "unsupported_media"),
    ("SVG", {"type": "image", "media_type": "image/svg+xml",
             "data": b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>")}, 415,
     "unsupported_media"),
    ("text that is not UTF-8", {"type": "file", "media_type": "text/plain",
                                "data": b64(b"\xff\xfe\x00")}, 422, "invalid_media"),
    ("a program sent without a type", {"type": "file", "name": "setup.exe",
                                       "data": b64(b"MZ\x90\x00\x03\xff\xfe" * 20)},
     415, "unsupported_media"),
    ("a PDF part as an image", {"type": "image", "media_type": "application/pdf",
                                "data": b64(pdf())}, 415, "unsupported_media"),
    ("too many frames", {"type": "image", "data": b64(gif(150))}, 422, "invalid_media"),
    ("an unknown blob", {"type": "image", "blob": "0" * 64}, 404, "blob_not_found"),
    ("a blob that is no hash", {"type": "image", "blob": "../etc/passwd"}, 422,
     "invalid_input"),
    ("two sources", {"type": "image", "data": "AAAA", "url": "data:,x"}, 422,
     "invalid_input"),
    ("an empty data URL", {"type": "image", "url": "data:image/png;base64,"}, 422,
     "invalid_media"),
    ("a file with a URL to nowhere", {"type": "file", "url": "ftp://example.com/x.pdf"},
     422, "url_refused"),
]


@pytest.mark.parametrize(("case", "part", "status", "code"), BAD, ids=[b[0] for b in BAD])
async def test_bad_parts_are_refused_and_nothing_is_written(
        client: httpx.AsyncClient, runtime: Runtime, case: str, part: dict[str, Any],
        status: int, code: str) -> None:
    await create_agent(client)
    response = await post(client, [{"type": "text", "text": "look"}, part])
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert "Traceback" not in response.text
    assert (await client.get("/v1/agents/a/sessions/k")).status_code == 404
    blobs = await runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM blobs"))
    assert blobs is not None and blobs[0] == 0


async def test_an_image_over_the_size_limit_is_413(make_client: ClientFactory,
                                                   runtime: Runtime) -> None:
    runtime.media.limits = type(runtime.media.limits)(max_part_bytes=1000)
    async with make_client() as client:
        await create_agent(client)
        response = await post(client, [{"type": "image", "data": b64(noise_png(200, 200))}])
    assert response.status_code == 413, response.text
    assert error_code(response) == "payload_too_large"


async def test_a_100mb_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    huge = b"x" * (100 << 20)
    response = await client.post("/v1/agents/a/sessions/k/messages", content=huge,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


@pytest.mark.parametrize("side", [100_000, 8_000])
async def test_a_decompression_bomb_is_refused_before_it_is_decoded(
        client: httpx.AsyncClient, side: int) -> None:
    """A few hundred bytes claiming side x side pixels: refused from its header (by
    the daemon's limit, 40 million pixels, or Pillow's own, twice its warning's)."""
    await create_agent(client)
    bomb = bomb_png(side, side)
    assert len(bomb) < 50_000
    response = await post(client, [{"type": "image", "data": b64(bomb)}])
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "over the limit of 40000000 pixels" in message, message


async def test_parts_with_nothing_in_them(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    response = await post(client, [{"type": "text", "text": ""},
                                   {"type": "text", "text": "  "}])
    assert response.status_code == 422
    assert "no text, image or file" in response.json()["error"]["message"]
    assert (await client.get("/v1/agents/a/sessions/k")).status_code == 404


async def test_too_many_parts(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    image = {"type": "image", "data": b64(png())}
    response = await post(client, [image] * 17)
    assert response.status_code == 422
    assert "over the limit of 16" in response.json()["error"]["message"]


async def test_a_model_without_vision_refuses_an_image_before_anything_is_written(
        client: httpx.AsyncClient) -> None:
    await create_agent(client, model="deepseek:deepseek-chat")
    response = await post(client, [{"type": "image", "data": b64(png())}])
    assert response.status_code == 422, response.text
    assert error_code(response) == "model_no_vision"
    assert "deepseek:deepseek-chat" in response.json()["error"]["message"]
    assert (await client.get("/v1/agents/a/sessions/k")).status_code == 404
    # A text file needs no vision.
    text = await post(client, [{"type": "file", "media_type": "text/plain",
                                "data": b64(b"plain")}], wait=False)
    assert text.status_code == 202, text.text


async def test_the_blob_route_reads_only_through_a_session_that_refers_to_it(
        client: httpx.AsyncClient) -> None:
    await create_agent(client)
    await create_agent(client, "b")
    image = png(3, 3)
    assert (await post(client, [{"type": "image", "data": b64(image)}])).status_code == 200
    assert (await post(client, "hi", agent="b")).status_code == 200
    # The hash is right, the session is not one that holds it.
    other = await client.get(f"/v1/agents/b/sessions/k/blobs/{sha(image)}")
    assert other.status_code == 404
    assert error_code(other) == "blob_not_found"
    bad = await client.get("/v1/agents/a/sessions/k/blobs/not-a-hash")
    assert bad.status_code == 422
