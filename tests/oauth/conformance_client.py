"""agentd as the client of the MCP conformance suite's auth scenarios
(``@modelcontextprotocol/conformance client --command ...``): the suite runs this with
its test server's URL; this drives a running daemon (``AGENTD_URL``, ``AGENTD_TOKEN``)
as an operator would.

1. An agent whose MCP server is the suite's, with an ``oauth`` block (the suite's
   pre-registered client from ``MCP_CONFORMANCE_CONTEXT``, its secret set as a named
   secret of the tenant, when the scenario gives one; else dynamic registration).
2. ``POST .../mcp/c/login``, and the link opened as a browser would (the suite's
   authorization server sends it straight back to the daemon's callback).
3. A message whose run calls the server's ``test-tool``: exit 0 when it answered;
   when the call says it needs authorization (a scope the token lacks: the server's
   403 ``insufficient_scope``), 2 and 3 again, once, as an operator would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time

import httpx


def main() -> int:
    server_url = sys.argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "scenario")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    daemon = httpx.Client(base_url=os.environ["AGENTD_URL"], timeout=60, headers={
        "Authorization": f"Bearer {os.environ['AGENTD_TOKEN']}"})
    agent = "conf-" + re.sub(r"[^a-z0-9]+", "-", scenario.lower()).strip("-")[:40] + \
        "-" + secrets.token_hex(3)
    oauth: dict[str, object] = {}
    if context.get("client_id"):
        oauth["client_id"] = context["client_id"]
    if context.get("client_secret"):
        # The secret is set (the tenant's) first, then named by the oauth block.
        name = f"conformance_{secrets.token_hex(4)}"
        set_secret = daemon.post("/v1/secrets", json={
            "name": name, "value": context["client_secret"]})
        if set_secret.status_code != 201:
            print("secret:", set_secret.status_code, set_secret.text, file=sys.stderr)
            return 1
        oauth["client_secret"] = f"secret:{name}"
    made = daemon.post("/v1/agents", json={"name": agent, "model": "scripted", "settings": {
        "mcp": [{"name": "c", "url": server_url, "trusted": True, "oauth": oauth}],
        # (The suite's tool says nothing of itself: destructive by default, so asked
        # about; allowed here, as an operator's rule would.)
        "policy": {"rules": [{"tool": "c__*", "action": "allow"}]},
        "script": [{"tool_calls": [{"name": "c__test-tool", "arguments": {}}]},
                   {"text": "done"}]}})
    if made.status_code != 201:
        print("agent:", made.status_code, made.text, file=sys.stderr)
        return 1
    # A second login when the first token's scope was not enough (the server's 403
    # insufficient_scope: the operator logs in again, for the scope it named).
    for attempt in range(2):
        problem = _login(daemon, agent)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        finished = _call(daemon, agent, f"k{attempt}")
        print(json.dumps(finished))
        if finished and not finished[0]["is_error"]:
            return 0
        if not finished or "needs authorization" not in finished[0]["output"]:
            return 1
    return 1


def _login(daemon: httpx.Client, agent: str) -> str | None:
    """Start a login and open its link as a browser would: None, or what failed."""
    started = daemon.post(f"/v1/agents/{agent}/mcp/c/login")
    if started.status_code != 201:
        return f"login: {started.status_code} {started.text}"
    with httpx.Client(follow_redirects=True, timeout=60) as browser:
        page = browser.get(started.json()["authorization_url"])
    if page.status_code != 200:
        return f"callback: {page.status_code} {page.text}"
    return None


def _call(daemon: httpx.Client, agent: str, session: str) -> list[dict[str, object]]:
    """Send the message whose run calls the tool; the tool's results."""
    run = daemon.post(f"/v1/agents/{agent}/sessions/{session}/messages",
                      json={"content": "go", "wait": True}).json()
    deadline = time.monotonic() + 60
    while run.get("status") not in ("completed", "failed", "cancelled") and \
            time.monotonic() < deadline:
        time.sleep(0.2)
        run = daemon.get(f"/v1/runs/{run['id']}").json()
    events = daemon.get(f"/v1/agents/{agent}/sessions/{session}/events").json()["events"]
    return [e["data"] for e in events if e["kind"] == "tool.finished"]


if __name__ == "__main__":
    sys.exit(main())
