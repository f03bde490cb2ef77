"""A2A file parts, with the official ``a2a-sdk`` client, unmodified: bytes (``raw``)
and URLs (``url``, fetched by the daemon under the egress rules) with their media type
and file name, and what is refused: a type not taken, a file under another media type,
a URL to a private address or the metadata endpoint, with nothing written."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest, Task, TaskState
from a2a.utils.errors import A2AError
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
    with serving({
        "/doc.pdf": (200, {"Content-Type": "application/pdf"}, pdf(3)),
        "/moved.png": (302, {"Location": f"{private.base}/secret.png"}, b""),
    }, tmp_path_factory.mktemp("web") / "hits") as host:
        yield host


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, web: Host) -> Iterator[ThreadDaemon]:
    process = media_daemon(tmp_path_factory.mktemp("a2a-media"), web, "t0ken-a2a-media",
                           ("eye", "scripted"))
    try:
        yield process
    finally:
        process.cleanup()


@contextlib.asynccontextmanager
async def a2a(daemon: ThreadDaemon) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {daemon.token}"},
                                 timeout=60) as http:
        client = await create_client(f"{daemon.url}/a2a/eye",
                                     client_config=ClientConfig(streaming=False, httpx_client=http))
        async with client:
            yield client


async def send(daemon: ThreadDaemon, *parts: Part) -> Task:
    request = SendMessageRequest(message=Message(
        role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=list(parts)))
    async with a2a(daemon) as client:
        [event] = [e async for e in client.send_message(request)]
    return event.task


def reply(task: Task) -> str:
    return "".join(p.text for a in task.artifacts for p in a.parts)


async def test_a_file_part_with_bytes(daemon: ThreadDaemon) -> None:
    task = await send(daemon, Part(text="see"),
                      Part(raw=png(12, 34), media_type="image/png", filename="a.png"),
                      Part(raw=b"plain words", media_type="text/plain", filename="n.txt"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert reply(task) == "echo: see [image image/png a.png 12x34] [file text/plain n.txt]"


async def test_a_file_part_with_a_url(daemon: ThreadDaemon, web: Host) -> None:
    task = await send(daemon, Part(url=f"{web.base}/doc.pdf", media_type="application/pdf"))
    assert reply(task) == "echo: [file application/pdf doc.pdf 3 pages]"
    assert "/doc.pdf" in web.hits


def sessions(daemon: ThreadDaemon) -> list[str]:
    with daemon.client() as api:
        return [s["key"] for s in api.get("/v1/agents/eye/sessions").json()["sessions"]]


@pytest.mark.parametrize(("part", "says"), [
    (Part(raw=b"PK\x03\x04zip", media_type="application/zip"), "is not taken"),
    (Part(raw=jpeg(), media_type="image/png"), "declared image/png, but the bytes are "
                                               "image/jpeg"),
    (Part(raw=pdf(), media_type="image/png"), "but the bytes are application/pdf"),
    (Part(url="http://169.254.169.254/latest/meta-data/", media_type="image/png"),
     "refused"),
    (Part(url="http://127.0.0.1:1/x.png"), "refused"),
    (Part(url="http://192.168.1.1/x.png"), "refused"),
])
async def test_refused_and_nothing_written(daemon: ThreadDaemon, part: Part, says: str
                                           ) -> None:
    before = sessions(daemon)
    with pytest.raises(A2AError, match=says):
        await send(daemon, Part(text="look"), part)
    assert sessions(daemon) == before


async def test_a_redirect_to_a_private_address_is_refused(daemon: ThreadDaemon, web: Host,
                                                          private: Host) -> None:
    with pytest.raises(A2AError, match="refused"):
        await send(daemon, Part(url=f"{web.base}/moved.png"))
    assert "/moved.png" in web.hits
    assert private.hits == []
