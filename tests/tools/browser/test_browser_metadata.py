"""The browser tools' metadata and how the policy reads it: no browser needed."""

from __future__ import annotations

import json


def test_the_tools_metadata() -> None:
    from agentd.browser import BROWSER_TOOLS

    spec = {name: (t.needs_network, t.untrusted_output, t.read_only)
            for name, t in BROWSER_TOOLS.items()}
    assert spec == {"browser_open": (True, True, False),
                    "browser_observe": (False, True, True),
                    "browser_act": (True, True, False),
                    "browser_screenshot": (False, True, False)}
    assert json.dumps(BROWSER_TOOLS["browser_act"].parameters)


def test_policy_lets_a_hostless_network_tool_run_under_any_grant() -> None:
    """browser_act names no host (it acts on the open page, each request checked):
    a grant of some hosts lets it run; no grant does not. http_fetch is unchanged."""
    from agentd.browser import BROWSER_TOOLS
    from agentd.runtime._toolsteps import facts_of
    from agentd.security.policy import Policy, PolicyConfig

    act = facts_of(BROWSER_TOOLS["browser_act"])
    opened = facts_of(BROWSER_TOOLS["browser_open"])
    some = Policy(daemon=PolicyConfig(), agent=PolicyConfig(network=("example.org",)))
    none = Policy(daemon=PolicyConfig(), agent=PolicyConfig())
    assert some.decide(act, {"action": "click", "ref": "e1"}).action == "allow"
    assert none.decide(act, {"action": "click", "ref": "e1"}).action == "deny"
    assert some.decide(opened, {"url": "http://example.org/"}).action == "allow"
    assert some.decide(opened, {"url": "http://other.org/"}).action == "deny"
    # Once the session is tainted, acting asks (it can send data out: a form).
    assert some.decide(act, {"action": "click", "ref": "e1"}, tainted=True).action == "ask"
