"""Core memory blocks in the store, unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.store import Store
from agentd.store.blocks import BlockChange, BlockRecord, BlockWrite

API = BlockWrite(changed_by="api:test", create=True)
TOOL = BlockWrite(changed_by="run:r1", run_id="r1", honour_read_only=True)


def setting(value: str, **kw: object) -> object:
    def edit(_b: BlockRecord) -> BlockChange:
        return BlockChange(value=value, **kw)  # type: ignore[arg-type]
    return edit


async def agent(store: Store, name: str) -> str:
    return (await store.create_agent(name=name, model="scripted", instructions="",
                                     tools=[], settings={})).id


async def test_create_update_history_restore(store: Store) -> None:
    a = await agent(store, "a")
    b1 = await store.write_block(a, "persona", setting("I am terse.", limit=50), API)
    assert (b1.version, b1.value, b1.limit, b1.read_only) == (1, "I am terse.", 50, False)
    b2 = await store.write_block(a, "persona", setting("I am verbose."), TOOL)
    assert (b2.version, b2.limit) == (2, 50)
    await store.write_block(a, "human", setting("Ann"), API)
    assert [b.label for b in await store.list_blocks(a)] == ["persona", "human"]
    hist = await store.block_history(a, "persona")
    assert [(v.version, v.value, v.changed_by, v.run_id) for v in hist] == [
        (1, "I am terse.", "api:test", None), (2, "I am verbose.", "run:r1", "r1")]
    b3 = await store.restore_block(a, "persona", 1, BlockWrite(changed_by="api:test"))
    assert (b3.version, b3.value) == (3, "I am terse.")
    with pytest.raises(NotFound):
        await store.restore_block(a, "persona", 9, API)
    with pytest.raises(NotFound):
        await store.block_history(a, "nope")


async def test_refusals_write_nothing(store: Store) -> None:
    a = await agent(store, "a")
    await store.write_block(a, "p", setting("abc", limit=5), API)
    with pytest.raises(InvalidInput) as over:
        await store.write_block(a, "p", setting("abcdef"), TOOL)
    assert over.value.details["limit"] == 5 and over.value.details["size"] == 6
    with pytest.raises(InvalidInput):  # lowering the limit under the value
        await store.write_block(a, "p", lambda _b: BlockChange(limit=2), API)
    with pytest.raises(InvalidInput):  # a new block over its limit is not created
        await store.write_block(a, "q", setting("x" * 6, limit=5), API)
    await store.write_block(a, "p", lambda _b: BlockChange(read_only=True), API)
    with pytest.raises(Conflict):
        await store.write_block(a, "p", setting("x"), TOOL)
    with pytest.raises(NotFound):
        await store.write_block(a, "missing", setting("x"), TOOL)
    blocks = await store.list_blocks(a)
    assert [(b.label, b.value, b.version) for b in blocks] == [("p", "abc", 2)]
    assert len(await store.block_history(a, "p")) == 2


async def test_shared_block_and_delete(store: Store) -> None:
    a, b = await agent(store, "a"), await agent(store, "b")
    await store.write_block(a, "team", setting("shared notes"), API)
    await store.attach_block(a, "team", b)
    with pytest.raises(Conflict):
        await store.attach_block(a, "team", b)
    await store.write_block(b, "team", setting("changed by b"), TOOL)
    got = await store.get_block(a, "team")
    assert got is not None and got.value == "changed by b"
    await store.delete_agent("a")  # b still links it: kept
    got = await store.get_block(b, "team")
    assert got is not None and got.version == 2
    await store.delete_block(b, "team")  # last link: gone, with its versions
    assert await store.get_block(b, "team") is None
    assert await store.count("memory_blocks") == 0
    assert await store.count("block_versions") == 0
    await store.write_block(b, "solo", setting("x"), API)
    await store.delete_agent("b")
    assert await store.count("memory_blocks") == 0
