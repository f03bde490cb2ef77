"""The tool worker pool's start-up is its own: ``ready()`` starts the zygote (a fresh
interpreter importing the tools) before a caller times its work, as the policy's
judge does (a call judged within 10 s, not 10 s less the pool's start on a loaded
machine)."""

from __future__ import annotations

from agentd.tools.workers import WorkerPool


async def test_ready_starts_the_zygote_once_and_calls_then_fork_from_it() -> None:
    pool = WorkerPool(size=1)
    try:
        await pool.ready()
        zygote = pool._zygote
        assert zygote is not None and zygote.alive
        assert pool.started == 0  # no worker yet: only the zygote
        await pool.ready()
        assert pool._zygote is zygote  # running: not started again
        assert await pool.run("os.path", "join", "a", "b") == "a/b"
        assert pool.started == 1 and pool._zygote is zygote
    finally:
        await pool.close()


async def test_ready_after_the_zygote_died_starts_a_new_one() -> None:
    pool = WorkerPool(size=1)
    try:
        await pool.ready()
        first = pool._zygote
        assert first is not None
        first.stop()
        await pool.ready()
        assert pool._zygote is not None and pool._zygote is not first
        assert pool._zygote.alive
    finally:
        await pool.close()
