"""The tool worker pool's start-up is its own: ``ready()`` starts the zygote (a fresh
interpreter importing the tools) before a caller times its work, as the policy's
judge does (a call judged within 10 s, not 10 s less the pool's start on a loaded
machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

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



async def test_bashlex_is_imported_by_the_zygote_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bashlex builds its parser tables on import (about 0.15 s): a daemon whose
    tools never have a shell command judged does not pay it; once one is, every
    worker has it (the idle ones forked before are let go)."""
    (tmp_path / "probe_modules.py").write_text(
        "import sys\n\ndef loaded(name):\n    return name in sys.modules\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # (the zygote takes this sys.path)
    pool = WorkerPool(size=1)
    try:
        await pool.ready()
        # What every worker needs came with the zygote: the built-in isolated tools
        # (which agentd.tools names lazily) and the policy with its command analyser;
        # not the tools that run in the daemon.
        for module in ("agentd.tools.builtins", "agentd.tools.files",
                       "agentd.security.policy", "agentd.security.commands"):
            assert await pool.run("probe_modules", "loaded", module) is True, module
        for module in ("agentd.tools.net", "agentd.tools.commands", "httpx"):
            assert await pool.run("probe_modules", "loaded", module) is False, module
        assert await pool.run("probe_modules", "loaded", "bashlex") is False
        await pool.ready("bashlex")
        assert await pool.run("probe_modules", "loaded", "bashlex") is True
        assert pool.started == 2  # the idle worker without it was not used again
        await pool.ready("bashlex")  # imported once
        assert await pool.run("probe_modules", "loaded", "bashlex") is True
        assert pool.started == 2
        with pytest.raises(ValueError):
            await pool.ready("os")  # only what the daemon lists
    finally:
        await pool.close()


def test_the_zygote_preloads_every_built_in_isolated_tool() -> None:
    """A built-in tool that runs in a worker has its module imported by the zygote
    (else every worker would import it on its first call)."""
    from agentd.tools import ToolRegistry
    from agentd.tools._worker import PRELOADED

    registry = ToolRegistry()
    isolated = {tool.fn.__module__ for tool in registry.resolve(registry.names())
                if tool.isolated}
    assert isolated and isolated <= set(PRELOADED), isolated - set(PRELOADED)


PID_ONE = """
import asyncio, os
from agentd.tools.workers import WorkerPool
async def main():
    pool = WorkerPool(size=1)
    try:
        print(os.getpid(), await pool.run("os.path", "join", "a", "b"), flush=True)
    finally:
        await pool.close()
asyncio.run(main())
"""


def test_a_daemon_that_is_pid_1_gets_its_workers() -> None:
    """In a container the daemon may be pid 1: its zygote's parent is then pid 1, which
    is not a sign that the daemon died (the zygote used to exit, and every shell call
    was left unjudged: found by running the image)."""
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) here")
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, check=False, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode()[:200]}")
    done = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", sys.executable,
                           "-c", PID_ONE], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "a/b"]
