"""A sandbox that cannot start for want of a process is started again, and only then.

``RLIMIT_NPROC`` counts every process of the sandbox's uid: an agent's other commands,
or for ``nobody`` every sandbox without an agent (tests on four workers). At the limit,
bubblewrap's clone into its namespaces fails ("Creating new namespace failed: Resource
temporarily unavailable") before anything ran; the backend waits and starts it again,
and gives the plain result once its waits are spent. Whether bubblewrap got that far is
read from its info descriptor: a command that prints the same words ran, and is not run
again.

Real bubblewrap, a real uid held at its process limit by a real sandbox (root only, as
CI runs: without root every sandbox keeps the daemon's uid, exempt from nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import eventually, worker_uid
from tests.sandbox.conftest import backend_or_skip
from tests.sandbox.test_agent_isolation import FORK_TO_LIMIT

from agentd.sandbox import backends
from agentd.sandbox.backends import BubblewrapBackend, Limits, prepare_workspace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a uid of the sandbox's own "
                                "needs a root daemon")

USER = worker_uid(3)
LIMITS = Limits(processes=12, wall_s=60)



@pytest.fixture
def shared() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentd-retry-") as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


def workspace(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(mode=0o700)
    prepare_workspace(path, user=USER)
    return path


@contextlib.asynccontextmanager
async def uid_at_its_limit(backend: BubblewrapBackend, shared: Path
                           ) -> Iterator[asyncio.Future[object]]:  # type: ignore[misc]
    """A sandbox of USER holding every process USER may have, until cancelled."""
    ws = workspace(shared, "holder")
    holding = asyncio.ensure_future(backend.run(["python3", "-c", FORK_TO_LIMIT],
                                                workspace=ws, limits=LIMITS))
    try:
        await eventually((ws / "full").exists, what="the uid at its process limit")
        yield holding
    finally:
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == backends.__name__ and "could not start" in r.getMessage()]


@pytest.fixture
def bwrap(caplog: pytest.LogCaptureFixture) -> BubblewrapBackend:
    backend_or_skip(BubblewrapBackend)
    caplog.set_level(logging.INFO, logger=backends.__name__)
    return BubblewrapBackend(user=USER)


async def test_at_the_limit_it_waits_then_gives_the_plain_result(
        bwrap: BubblewrapBackend, shared: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "RETRY_DELAYS_S", (0.01, 0.01))
    ws = workspace(shared, "ws")
    async with uid_at_its_limit(bwrap, shared):
        result = await bwrap.run(["sh", "-c", "echo ran > ran"], workspace=ws,
                                 limits=LIMITS)
    assert result.exit_code not in (0, None), result
    assert "Resource temporarily unavailable" in result.stderr, result
    assert not (ws / "ran").exists()
    assert len(retries(caplog)) == 2, caplog.text


async def test_it_starts_once_the_uid_has_room(
        bwrap: BubblewrapBackend, shared: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "RETRY_DELAYS_S", (0.05,) * 1200)  # a minute
    ws = workspace(shared, "ws")
    async with uid_at_its_limit(bwrap, shared):
        starting = asyncio.ensure_future(bwrap.run(
            ["sh", "-c", "echo ran >> ran; echo ran"], workspace=ws, limits=LIMITS))
        await eventually(lambda: retries(caplog) or starting.done(),
                         what="a start refused at the limit")
        assert not starting.done(), starting.result()
    # The holder is gone: the next attempt starts it, and it runs once.
    result = await starting
    assert result.exit_code == 0 and result.stdout == "ran\n", result
    assert (ws / "ran").read_text() == "ran\n"
    assert "Resource temporarily unavailable" in retries(caplog)[0]


async def test_the_persistent_shell_starts_once_the_uid_has_room(
        bwrap: BubblewrapBackend, shared: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "RETRY_DELAYS_S", (0.05,) * 1200)
    ws = workspace(shared, "ws")
    async with uid_at_its_limit(bwrap, shared):
        starting = asyncio.ensure_future(bwrap.shell(workspace=ws, limits=LIMITS))
        await eventually(lambda: retries(caplog) or starting.done(),
                         what="a shell refused at the limit")
        assert not starting.done()
    shell = await starting
    try:
        result = await shell.run("echo up")
        assert result.exit_code == 0 and result.stdout == "up\n", result
    finally:
        await shell.close()


async def test_a_command_that_prints_the_words_is_not_run_again(
        bwrap: BubblewrapBackend, shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The sandbox existed and the command ran: its output is the model's, not
    # bubblewrap's, whatever it says.
    ws = workspace(shared, "ws")
    result = await bwrap.run(
        ["sh", "-c", "echo ran >> ran; echo 'bwrap: Creating new namespace failed: "
                     "Resource temporarily unavailable' >&2; exit 1"],
        workspace=ws, limits=LIMITS)
    assert result.exit_code == 1, result
    assert (ws / "ran").read_text() == "ran\n"
    assert retries(caplog) == []

