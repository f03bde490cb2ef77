"""Fixtures for the sandbox tests: each backend (skipped where it cannot run here,
except bubblewrap in CI, which must), and a workspace given to the sandbox's uid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import eventually

from agentd.sandbox.backends import (
    Backend,
    BubblewrapBackend,
    GVisorBackend,
    ProcessBackend,
)


class GVisorDespiteOldStatx(GVisorBackend):
    """gVisor whose only fault is the old runsc's statx (``ls``/``stat`` fail)."""

    @classmethod
    def _probe(cls) -> str | None:
        return None


def backend_or_skip(cls: type[Backend]) -> Backend:
    reason = cls.unavailable()
    if reason is None:
        return cls()
    if cls is BubblewrapBackend and os.environ.get("CI"):
        pytest.fail(f"bubblewrap must work in CI: {reason}")
    if cls is GVisorBackend and "AT_NO_AUTOMOUNT" in reason:
        return GVisorDespiteOldStatx()
    pytest.skip(f"{cls.name}: {reason}")


@pytest.fixture(params=[BubblewrapBackend, GVisorBackend, ProcessBackend],
                ids=lambda cls: cls.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_or_skip(request.param)


@pytest.fixture
def ws(workspace: Path) -> Path:
    return workspace


# -- leftovers: processes of a sandbox found by a marker in their environment ----------


def marked(marker: str, owner: int | None = None) -> list[int]:
    """Pids of the processes started with ``AGENTD_MARK=<marker>`` in their environment
    (and gVisor's host processes, found by their bundle directory, which carries the pid
    of the process that made it, ``owner``, this one by default: the sandbox's own
    processes live inside its sentry). Only this test's: the bundles of other xdist
    workers' sandboxes carry their own pids."""
    needle = f"AGENTD_MARK={marker}".encode()
    bundle = f"agentd-gvisor-{owner or os.getpid()}-".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ or bundle in cmdline:
            found.append(int(entry))
    return found


async def all_gone(marker: str, owner: int | None = None) -> None:
    """Wait until no process of the sandbox is left (SIGKILLed ones may take a moment
    to be reaped); fail if some stay."""
    await eventually(lambda: not marked(marker, owner),
                     what=f"the processes marked {marker} gone")


async def appeared(marker: str, owner: int | None = None, *, running: str = "",
                   count: int = 1) -> None:
    """Wait until a process of the sandbox runs; with ``running``, until ``count`` of
    its processes run that program (``/proc/<pid>/comm``): the command itself, not
    only a launcher above it that carries the same environment."""
    def seen() -> bool:
        found = marked(marker, owner)
        if not running:
            return bool(found)
        return sum(_comm(pid) == running for pid in found) >= count

    await eventually(seen, what=f"{count} process(es) {running or ''} marked {marker}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
