"""Fixtures of the tool tests that run commands: the real sandbox (the workspace is
the root conftest's)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from agentd.sandbox import ShellPool, choose
from agentd.sandbox.backends import Limits
from agentd.sandbox.context import Sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The strongest backend here (CI must have an isolating one)."""
    pool = ShellPool()
    backend = choose()
    if not backend.isolated and os.environ.get("CI"):
        pytest.fail("CI must have an isolating sandbox backend")
    yield Sandbox(backend=backend, limits=Limits(wall_s=20), shells=pool, shell_key="s1")
    await pool.close_all()

