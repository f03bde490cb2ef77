"""Official suites copied unmodified under tests/conformance/ run against agentd: each
one's server is swapped for agentd here, never in the copied files."""

from __future__ import annotations

import pytest
from tests.conformance.termo_bridge import AgentdServer

#: The A2A TCK is a suite of its own, run by test_a2a_tck.py in its own environment.
collect_ignore = ["a2a_tck"]


@pytest.fixture(autouse=True)
def _agentd_in_place_of_termo(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """termo-agent's test_server.py builds ``AgentServer``: it gets agentd's."""
    if hasattr(request.module, "AgentServer"):
        monkeypatch.setattr(request.module, "AgentServer", AgentdServer)
