"""A run's commit under way when its task is cancelled still lands, and is seen
(published) before the cancellation is handled: ``RunExecutor._commit`` waits on
the store's write through ``_Landing``, which a cancellation of the task does not
cancel, and which wakes the task from the write's own future."""

from __future__ import annotations

import asyncio

import pytest

from agentd.runtime.loop import _Landing
from agentd.store import LeaseLost


async def _commit(write: asyncio.Future[list[str]], seen: list[list[str]]) -> list[str]:
    """What ``RunExecutor._commit`` does with the write."""
    try:
        records = await _Landing(write)
    except asyncio.CancelledError:
        seen.append(await write)
        raise
    seen.append(records)
    return records


async def test_the_write_s_records_come_back() -> None:
    write: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    seen: list[list[str]] = []
    task = asyncio.create_task(_commit(write, seen))
    await asyncio.sleep(0)
    write.set_result(["e1", "e2"])
    assert await task == ["e1", "e2"]
    assert seen == [["e1", "e2"]]


async def test_a_write_already_done_is_not_waited_for() -> None:
    write: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    write.set_result(["e1"])
    assert await _Landing(write) == ["e1"]


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_cancel_waits_for_the_write_which_is_seen_first(cancels: int) -> None:
    write: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    seen: list[list[str]] = []
    task = asyncio.create_task(_commit(write, seen))
    await asyncio.sleep(0)
    for _ in range(cancels):
        assert task.cancel("stop")
        await asyncio.sleep(0)
    assert not write.cancelled()
    assert not task.done()  # (it waits for the write, not for the cancel)
    write.set_result(["e1"])
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [["e1"]]
    assert task.cancelled()


async def test_a_task_cancelled_before_it_waits_waits_for_the_write() -> None:
    write: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    seen: list[list[str]] = []

    async def cancelled_then_commits() -> list[str]:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # (asked while it runs: it reaches the task at its next wait)
        return await _commit(write, seen)

    task = asyncio.create_task(cancelled_then_commits())
    await asyncio.sleep(0)
    assert not task.done() and not write.cancelled()
    write.set_result(["e1"])
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [["e1"]]


async def test_a_failed_write_raises_its_error_cancelled_or_not() -> None:
    for cancel in (False, True):
        write: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(_commit(write, []))
        await asyncio.sleep(0)
        if cancel:
            task.cancel()
            await asyncio.sleep(0)
        write.set_exception(LeaseLost("taken"))
        with pytest.raises(LeaseLost):
            await task
