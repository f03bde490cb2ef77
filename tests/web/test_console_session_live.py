"""The session page when things go wrong around it, and at scale: the daemon killed and
restarted under an open page (it reconnects and shows what happened meanwhile, with no
gap and no duplicate), the session or its agent deleted while open, a message the API
refuses, and a 10,000-event session opened at its tail and scrolled back to its start
with the DOM kept bounded."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import log_of, make_agent, session_hash, session_path, sign_in

pytestmark = pytest.mark.e2e

#: The session page renders at most this many rows of a list at once (session.js).
MAX_ROWS = 240


def open_session(page: Any, daemon: Daemon, agent: str, key: str) -> None:
    sign_in(page, daemon, at=session_hash(agent, key))
    page.wait_for_selector("#composer")


def seqs(page: Any, selector: str) -> list[int]:
    found: list[int] = page.eval_on_selector_all(
        selector, "els => els.map((e) => Number(e.dataset.seq))")
    return found


@pytest.mark.daemon_process
def test_a_killed_daemon_is_reconnected_to_with_no_gap_and_no_duplicate(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    make_agent(api, "r")
    base = session_path("r", "k")
    api.post(f"{base}/messages", json={"content": "before the crash"})
    open_session(page, daemon, "r", "k")
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: before the crash").wait_for()
    page.wait_for_selector('#conn[data-state="live"]')

    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=60)
    # The page says so, and keeps what it shows.
    page.wait_for_selector('#conn[data-state="reconnecting"]')
    page.get_by_text("Connection to the daemon lost").wait_for()
    assert page.locator("#pane-chat .msg-assistant").filter(
        has_text="echo: before the crash").is_visible()

    # Until the events below are made, the page's reconnects fail (as if the daemon
    # were still down), so they are surely made while it is away.
    away = re.compile(r".*/events$")
    page.route(away, lambda route: route.abort())
    daemon.start()
    for text in ("while away", "and again"):
        assert api.post(f"{base}/messages", json={"content": text}).json()["status"] == "completed"
    assert page.locator("#pane-chat .msg-assistant").filter(has_text="while away").count() == 0
    page.unroute(away)
    # They arrive when it reconnects, from where it left off.
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: and again").wait_for()
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_function("() => document.getElementById('banner').hidden")

    log = [e["seq"] for e in log_of(api, "r", "k")]
    page.wait_for_function(f"""() => {{
        const s = document.querySelectorAll('#pane-timeline .step[data-seq]');
        return s.length && Number(s[s.length - 1].dataset.seq) === {log[-1]}; }}""")
    shown = seqs(page, "#pane-timeline .step[data-seq]")
    assert shown == log  # every event once, in order: no gap, no duplicate
    chat = seqs(page, "#pane-chat .chat-row[data-seq]")
    assert len(chat) == len(set(chat)) == 6  # three messages and three replies
    assert page.locator("#pane-chat .msg-assistant").filter(
        has_text="echo: while away").count() == 1


def test_a_session_deleted_while_open_is_said_plainly(page: Any, daemon: Daemon,
                                                      api: httpx.Client) -> None:
    make_agent(api, "d")
    base = session_path("d", "gone")
    api.post(f"{base}/messages", json={"content": "hello"})
    open_session(page, daemon, "d", "gone")
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: hello").wait_for()

    assert api.delete(base).status_code == 204
    page.locator("#banner").filter(has_text="This session was deleted").wait_for()
    page.locator(".s-notice").filter(has_text="Sending a message starts a new one").wait_for()
    # What the page showed is still there.
    assert page.locator("#pane-chat .msg-assistant").filter(has_text="echo: hello").is_visible()
    # A message starts the session again under the same key.
    page.locator("#composer").fill("once more")
    page.locator("#composer").press("Enter")
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: once more").wait_for()
    # A new session: its log starts again from this message.
    fresh = log_of(api, "d", "gone")
    assert (fresh[0]["seq"], fresh[0]["data"]["content"]) == (1, "once more")


def test_an_agent_deleted_while_open_is_said_plainly(page: Any, daemon: Daemon,
                                                     api: httpx.Client) -> None:
    make_agent(api, "temp")
    api.post(f"{session_path('temp', 'k')}/messages", json={"content": "hi"})
    open_session(page, daemon, "temp", "k")
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: hi").wait_for()
    assert api.delete("/v1/agents/temp").status_code == 204
    page.locator("#banner").filter(has_text="The agent temp was deleted").wait_for()
    assert page.locator("#send").is_disabled()
    assert page.locator("#pane-chat .msg-assistant").filter(has_text="echo: hi").is_visible()


def test_a_refused_message_is_said_beside_the_composer_and_kept(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    make_agent(api, "p")
    api.post(f"{session_path('p', 'k')}/messages", json={"content": "hi"})
    open_session(page, daemon, "p", "k")
    page.locator("#pane-chat .msg-assistant").filter(has_text="echo: hi").wait_for()
    assert api.post("/v1/agents/p/pause").status_code == 200
    page.locator("#composer").fill("are you there?")
    page.locator("#composer").press("Enter")
    error = page.locator("#composer-error")
    error.wait_for()
    assert "paused" in error.inner_text()
    assert page.locator("#composer").input_value() == "are you there?"
    assert page.locator("#composer").get_attribute("aria-invalid") == "true"

    # "Refuse if busy" with a run under way: 409 session_busy, said in words.
    assert api.post("/v1/agents/p/resume").status_code == 200
    api.patch("/v1/agents/p", json={"settings": {"script": [{"text": "slow", "delay_ms": 15_000}]}})
    api.post(f"{session_path('p', 'k')}/messages", json={"content": "busy", "wait": False})
    page.locator(".runbar").get_by_text("running").wait_for()
    page.select_option("#mode", "reject")
    page.locator("#send").click()
    page.locator("#composer-error").filter(has_text="nothing was sent").wait_for()
    assert page.locator("#composer").input_value() == "are you there?"


def build_long_session(api: httpx.Client, agent: str, key: str, *, steps: int = 50,
                       calls: int = 100) -> int:
    """A real session of about ``steps * (2 * calls + 1)`` events: one run whose model
    (scripted) calls the calculator ``calls`` times a step. Returns its last seq."""
    turn = {"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i}+1"}}
                           for i in range(calls)]}
    make_agent(api, agent, tools=["calculator"],
               settings={"script": [turn] * steps + [{"text": "done"}],
                         "max_steps": steps + 1})
    run = api.post(f"{session_path(agent, key)}/messages", json={"content": "go"},
                   timeout=600).json()
    assert run["status"] == "completed", run
    last: int = api.get(session_path(agent, key)).json()["last_seq"]
    return last


def test_ten_thousand_events_open_at_the_tail_and_scroll_back(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    last = build_long_session(api, "big", "long", steps=50)
    assert last >= 10_000
    open_session(page, daemon, "big", "long")
    page.locator("#pane-chat .msg-assistant").filter(has_text="done").wait_for()
    page.locator(f'#pane-timeline .step[data-seq="{last}"]').wait_for()
    assert page.locator("#pane-timeline .step").count() <= MAX_ROWS

    # Scroll the timeline back to the first event, a window at a time.
    timeline = "#pane-timeline .wlist"
    most = 0
    for _ in range(400):
        first = min(seqs(page, "#pane-timeline .step[data-seq]"))
        if first == 1:
            break
        page.eval_on_selector(timeline, "el => { el.scrollTop = 0; }")
        page.wait_for_function(
            f"""() => Math.min(...[...document.querySelectorAll('#pane-timeline .step[data-seq]')]
                .map((e) => Number(e.dataset.seq))) < {first}""")
        most = max(most, page.locator("#pane-timeline .step").count())
    else:
        pytest.fail("the timeline never reached the session's first event")
    assert most <= MAX_ROWS
    start = page.locator('#pane-timeline .step[data-seq="1"]')
    assert "User message" in start.inner_text() and "go" in start.inner_text()
    page.locator('#pane-timeline .wlist-edge[data-start="true"]').wait_for()
    # The chat went back too: its first message is the user's.
    page.eval_on_selector("#pane-chat .wlist", "el => { el.scrollTop = 0; }")
    page.locator('#pane-chat .msg-user[data-seq="1"]').wait_for()
    assert page.locator("#pane-chat .chat-row").count() <= MAX_ROWS

    # Back to the end with the keyboard; the newest event is there again.
    page.locator(timeline).press("End")
    page.locator(f'#pane-timeline .step[data-seq="{last}"]').wait_for()
    assert page.locator("#pane-timeline .step").count() <= MAX_ROWS
