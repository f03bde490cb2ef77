"""Official suites copied unmodified under tests/conformance/ run against agentd: each
one's server is swapped for agentd here, never in the copied files."""

from __future__ import annotations

import pytest
from tests.conformance.termo_bridge import AgentdServer


@pytest.fixture(autouse=True)
def _agentd_in_place_of_termo(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """termo-agent's test_server.py builds ``AgentServer``: it gets agentd's."""
    if hasattr(request.module, "AgentServer"):
        monkeypatch.setattr(request.module, "AgentServer", AgentdServer)
