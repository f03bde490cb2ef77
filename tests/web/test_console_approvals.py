"""The approvals inbox in a real browser against a real daemon: a tool call the policy
asks about appears live (and in the header's count) and is approved there, the run
finishes; approve with edited arguments (bad JSON and the API's 422 said beside the
editor); deny with a reason and remember it; a decision made elsewhere removes the item
live; hostile arguments shown as text."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon
from tests.web.conftest import log_of, make_agent, session_path, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def guarded(api: httpx.Client, name: str = "guard", expression: str = "6*7") -> None:
    """An agent whose first step calls the calculator, which its policy asks about."""
    make_agent(api, name, tools=["calculator"], settings={
        "script": [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]},
            {"text": "done"}],
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]}})


def ask(api: httpx.Client, key: str, agent: str = "guard") -> str:
    """Start a run that will wait for approval; returns its id."""
    sent = api.post(f"{session_path(agent, key)}/messages",
                    json={"content": "compute", "wait": False})
    assert sent.status_code == 202, sent.text
    run_id: str = sent.json()["id"]
    return run_id


def run_status(api: httpx.Client, run_id: str) -> str:
    status: str = api.get(f"/v1/runs/{run_id}").json()["status"]
    return status


def open_inbox(page: Any, daemon: Daemon) -> None:
    sign_in(page, daemon, at="#/approvals")
    page.wait_for_selector(".approvals-page")


def card(page: Any, session: str) -> Any:
    return page.locator(".ap-card").filter(has=page.locator(f'a:text-is("{session}")'))


def test_a_request_appears_live_and_is_approved_there(page: Any, daemon: Daemon,
                                                      api: httpx.Client) -> None:
    guarded(api)
    open_inbox(page, daemon)
    page.get_by_text("Nothing is waiting for a decision.").wait_for()
    assert page.locator("#nav-approvals").is_hidden()

    run_id = ask(api, "s1")
    item = card(page, "s1")
    item.wait_for()  # live, without reloading
    page.locator("#nav-approvals").filter(has_text="1").wait_for()
    assert "calculator" in item.locator(".ap-tool").inner_text()
    assert '"expression": "6*7"' in item.locator(".ap-args").inner_text()
    assert "agent policy rule" in item.inner_text()
    assert item.get_by_role("link", name="guard").get_attribute("href") == "#/agents/guard"

    item.get_by_role("button", name="Approve", exact=True).click()
    item.wait_for(state="detached")
    page.locator("#nav-approvals").wait_for(state="hidden")
    page.get_by_text("Nothing is waiting for a decision.").wait_for()
    wait_until(lambda: run_status(api, run_id) == "completed", what="the run finished")
    finished = [e for e in log_of(api, "guard", "s1") if e["kind"] == "tool.finished"]
    assert [e["data"]["output"] for e in finished] == ["42"]
    decided = [e for e in log_of(api, "guard", "s1") if e["kind"] == "approval.decided"]
    assert decided[0]["data"]["action"] == "approve"


def test_approve_with_edited_arguments(page: Any, daemon: Daemon, api: httpx.Client) -> None:
    guarded(api)
    run_id = ask(api, "s2")
    open_inbox(page, daemon)
    item = card(page, "s2")
    item.get_by_role("button", name="Edit arguments").click()
    editor = item.locator(".ap-editor")
    assert '"expression": "6*7"' in editor.input_value()
    approve = item.get_by_role("button", name="Approve with these arguments")

    editor.fill('{"expression": "2+2"')  # not JSON: said beside, nothing sent
    approve.click()
    error = item.locator(".ap-edit-panel .field-error")
    error.filter(has_text="Not JSON").wait_for()
    assert editor.get_attribute("aria-invalid") == "true"
    assert run_status(api, run_id) == "waiting_approval"

    editor.fill('{"expression": 5}')  # JSON the tool's schema refuses: the API's 422
    approve.click()
    error.filter(has_text="expression").wait_for()
    assert "Not JSON" not in error.inner_text()
    assert run_status(api, run_id) == "waiting_approval"

    editor.fill('{"expression": "2+2"}')
    approve.click()
    item.wait_for(state="detached")
    wait_until(lambda: run_status(api, run_id) == "completed", what="the run finished")
    log = log_of(api, "guard", "s2")
    assert [e["data"]["output"] for e in log if e["kind"] == "tool.finished"] == ["4"]
    decided = next(e for e in log if e["kind"] == "approval.decided")
    assert decided["data"]["arguments"] == {"expression": "2+2"}


def test_deny_with_a_reason_and_remember_it(page: Any, daemon: Daemon,
                                            api: httpx.Client) -> None:
    guarded(api)
    run_id = ask(api, "s3")
    open_inbox(page, daemon)
    item = card(page, "s3")
    item.get_by_role("button", name="Deny…").click()
    item.locator(".ap-reason").fill("not on a Friday")
    # A rule for the whole tool can only deny: approving is off while it is chosen.
    item.locator(".ap-remember").select_option("tool")
    assert item.get_by_role("button", name="Approve", exact=True).is_disabled()
    item.get_by_text("A rule for the whole tool can only deny.").wait_for()
    item.locator(".ap-confirm-deny").click()
    item.wait_for(state="detached")
    wait_until(lambda: run_status(api, run_id) == "completed", what="the run finished")
    log = log_of(api, "guard", "s3")
    decided = next(e for e in log if e["kind"] == "approval.decided")
    assert (decided["data"]["action"], decided["data"]["reason"]) == ("deny", "not on a Friday")
    finished = next(e for e in log if e["kind"] == "tool.finished")
    assert finished["data"]["is_error"] and "not on a Friday" in finished["data"]["output"]
    rules = api.get("/v1/agents/guard").json()["settings"]["policy"]["rules"]
    assert rules[0]["tool"] == "calculator" and rules[0]["action"] == "deny"


def test_a_decision_made_elsewhere_removes_the_item_live(page: Any, daemon: Daemon,
                                                         api: httpx.Client) -> None:
    guarded(api)
    ask(api, "a")
    ask(api, "b")
    open_inbox(page, daemon)
    card(page, "a").wait_for()
    card(page, "b").wait_for()
    page.locator("#nav-approvals").filter(has_text="2").wait_for()
    pending = api.get("/v1/approvals").json()["approvals"]
    on_b = next(a for a in pending if a["session"] == "b")
    decided = api.post(f"/v1/approvals/{on_b['approval_id']}", json={"action": "approve"})
    assert decided.status_code == 200, decided.text
    card(page, "b").wait_for(state="detached")
    page.locator("#nav-approvals").filter(has_text="1").wait_for()
    assert card(page, "a").is_visible()
    # The filter narrows what is shown.
    page.locator("#ap-filter").fill("nothing-matches")
    card(page, "a").wait_for(state="hidden")
    page.locator("#ap-filter").fill("")
    card(page, "a").wait_for()


def test_hostile_arguments_are_shown_as_text(page: Any, daemon: Daemon,
                                             api: httpx.Client) -> None:
    guarded(api, expression=PAYLOAD)
    ask(api, "x")
    open_inbox(page, daemon)
    item = card(page, "x")
    item.wait_for()
    assert json.loads(item.locator(".ap-args").inner_text()) == {"expression": PAYLOAD}
    assert item.locator(".ap-args").evaluate(
        "el => el.childNodes.length === 1 && el.firstChild.nodeType === 3")
    item.get_by_role("button", name="Edit arguments").click()
    assert json.loads(item.locator(".ap-editor").input_value()) == {"expression": PAYLOAD}
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0
