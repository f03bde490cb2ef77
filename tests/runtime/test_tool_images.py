"""Images tools return: checked like a message's, kept once in the store with the
call's result (the log holds a reference), given to a model that takes images as an
image, and, for one that takes none (or an image that does not pass), a note the model
can act on instead. SQLite and PostgreSQL (the ``runtime`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.media.images import bomb_png, jpeg, png

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.tools import ToolImage, ToolOutput, tool


@tool(read_only=True)
async def picture(kind: str = "png") -> ToolOutput:
    """Return a picture."""
    data = {"png": png(30, 20), "jpeg": jpeg(10, 5), "bomb": bomb_png(),
            "text": b"not an image"}[kind]
    return ToolOutput(text=f"here is a {kind}", images=(ToolImage(data=data),))


async def run(rt: Runtime, message: str, *, model: str = "scripted",
              settings: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The run's output and its tool.finished data."""
    rt.tools.register(picture)
    await rt.create_agent(name="a", model=model, tools=["picture"], settings=settings or {})
    sent = await rt.send("a", "k", message)
    done = await rt.wait(sent.run.id)
    events = await rt.read_events(sent.session.id, after=0)
    finished = [e.data for e in events if e.kind == "tool.finished"][-1]
    return done.output or str(done.error), dict(finished)


async def test_a_tools_image_reaches_the_model(runtime: Runtime) -> None:
    output, finished = await run(runtime, '/tool picture {"kind": "png"}')
    assert output == "picture returned: here is a png [image image/png 30x20]"
    [part] = finished["parts"]
    assert part["type"] == "image" and (part["width"], part["height"]) == (30, 20)
    assert "iVBOR" not in str(finished)  # a reference, not the bytes
    session = (await runtime.list_sessions("a"))[0]
    stored = await runtime.store.blob(session.id, part["blob"])
    assert stored is not None and stored[1] == png(30, 20)


@pytest.mark.parametrize(("kind", "says"), [
    ("bomb", "over the limit of 40000000 pixels"), ("text", "not an image of a type taken")])
async def test_an_image_that_does_not_pass_is_a_note(runtime: Runtime, kind: str,
                                                     says: str) -> None:
    output, finished = await run(runtime, f'/tool picture {{"kind": "{kind}"}}')
    assert "parts" not in finished
    assert not finished["is_error"]
    assert says in finished["output"]
    assert output.startswith(f"picture returned: here is a {kind}\n[picture image 1: ")
    count = await runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM blobs"))
    assert count is not None and count[0] == 0


@pytest.fixture
async def no_vision(settings: Settings, store_url: str) -> AsyncIterator[Runtime]:
    """A daemon whose catalog says the scripted model takes no images."""
    settings.database_url = store_url
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text(
        '[models."scripted:blind"]\ncontext_window = 100000\nmax_output_tokens = 1000\n'
        "input = 0\noutput = 0\nvision = false\n")
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()


async def test_a_model_without_vision_gets_a_note_instead(no_vision: Runtime) -> None:
    output, finished = await run(no_vision, '/tool picture {"kind": "jpeg"}',
                                 model="scripted:blind")
    assert "parts" not in finished
    assert finished["output"] == ("here is a jpeg\n[picture returned 1 image(s), not shown: "
                                  "this model takes no images]")
    assert "[image" not in output


@pytest.fixture
async def full(settings: Settings, store_url: str) -> AsyncIterator[Runtime]:
    """A daemon whose tenant ``t`` may keep 10 bytes of images."""
    from agentd.config import TenantConfig, TenantQuotas

    settings.database_url = store_url
    settings.tenants = {"t": TenantConfig(quotas=TenantQuotas(storage_bytes=10))}
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()


async def test_an_image_over_the_storage_quota_is_a_note(full: Runtime) -> None:
    output, finished = await run(full, '/tool picture {"kind": "png"}',
                                 settings={"tenant": "t"})
    assert "parts" not in finished and not finished["is_error"]
    assert finished["output"].startswith("here is a png\n[its images were not kept: tenant "
                                         "'t' is at its storage_bytes quota")
    assert output.startswith("picture returned: here is a png")
    count = await full.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM blobs"))
    assert count is not None and count[0] == 0
