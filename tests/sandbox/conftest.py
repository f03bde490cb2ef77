"""Fixtures for the sandbox tests: each backend (skipped where it cannot run here,
except bubblewrap in CI, which must), and a workspace given to the sandbox's uid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
