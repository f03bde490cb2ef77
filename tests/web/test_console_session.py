"""The console's session page in a real browser against a real daemon: the chat streams
a reply token by token, the composer's keys and modes (steer, interrupt), cancel,
checkpoints restored and forked, and hostile text (a reply, tool arguments, a tool's
output, the session key itself) shown as text that runs nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import log_of, make_agent, session_hash, session_path, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

WORDS = " ".join(f"w{i:02d}" for i in range(1, 25))
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def open_session(page: Any, daemon: Daemon, agent: str, key: str) -> None:
    sign_in(page, daemon, at=session_hash(agent, key))
    page.wait_for_selector("#composer")


def chat(page: Any, selector: str = "") -> Any:
    return page.locator(f"#pane-chat {selector}")


def send_in_page(page: Any, text: str, mode: str | None = None) -> None:
    if mode is not None:
        page.select_option("#mode", mode)
    page.locator("#composer").fill(text)
    page.locator("#composer").press("Enter")


def test_a_new_session_streams_its_reply_token_by_token(page: Any, daemon: Daemon,
                                                         api: httpx.Client) -> None:
    # Half a second per word: a page starved by a loaded machine still gets the stream
    # in several pieces.
    make_agent(api, "talker", settings={"script": [{"text": WORDS, "delay_ms": 12000}]})
    open_session(page, daemon, "talker", "user:1")
    # A key with no session yet: an empty chat whose first message creates it.
    page.get_by_text("A new session: your first message creates it.").wait_for()
    assert api.get(session_path("talker", "user:1")).status_code == 404

    # Every text the stream's bubble shows, recorded as the page changes it (polling
    # for a partial reply from the test would race a loaded machine).
    page.evaluate("""() => {
        window.__partials = [];
        new MutationObserver(() => {
            const t = document.querySelector('#pane-chat .streaming .msg-text');
            if (t) window.__partials.push(t.textContent);
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")

    # Shift+Enter is a new line, Enter sends.
    composer = page.locator("#composer")
    composer.press_sequentially("first line")
    composer.press("Shift+Enter")
    composer.press_sequentially("second line")
    composer.press("Enter")
    chat(page, ".msg-user").filter(has_text="second line").wait_for()
    assert composer.input_value() == ""

    final = chat(page, ".msg-assistant:not(.streaming)").filter(has_text="w24")
    final.wait_for(timeout=60_000)
    assert final.locator(".msg-text").inner_text() == WORDS
    assert chat(page, ".streaming").count() == 0
    # Tokens arrived while the run was under way: part of the reply was on the page
    # before the rest existed (the bubble is the stream's; it went when the run ended).
    partials: list[str] = page.evaluate("() => window.__partials")
    assert any(p.startswith("w01 w02") and "w24" not in p for p in partials), partials

    log = log_of(api, "talker", "user:1")
    assert log[0]["kind"] == "message.user"
    assert log[0]["data"]["content"] == "first line\nsecond line"
    # A person typing is scheduled ahead of batch work (it was background).
    run = api.get(f"/v1/runs/{log[0]['run_id']}").json()
    assert run["priority"] == "interactive", run
    # The timeline has the model call with its usage and queue wait.
    step = page.locator("#pane-timeline .step-message-assistant")
    step.wait_for()
    assert "usage" in step.inner_text() and "queue" in step.inner_text()
    page.wait_for_selector(".s-status .pill-closed")  # idle once the run ended


def test_restore_a_checkpoint_sets_the_chat_back(page: Any, daemon: Daemon,
                                                  api: httpx.Client) -> None:
    make_agent(api, "echo")
    base = session_path("echo", "k")
    assert api.post(f"{base}/messages", json={"content": "first"}).json()["status"] == "completed"
    assert api.post(f"{base}/checkpoints", json={"name": "before"}).status_code == 201
    assert api.post(f"{base}/messages", json={"content": "second"}).json()["status"] == "completed"
    open_session(page, daemon, "echo", "k")
    second = chat(page, ".msg-assistant").filter(has_text="echo: second")
    second.wait_for()

    page.get_by_role("tab", name="Checkpoints").click()
    checkpoint = page.locator("#pane-checkpoints li.cp").filter(has_text="before")
    checkpoint.get_by_role("button", name="Restore").click()

    chat(page, ".chat-note").filter(has_text="Restored to").wait_for()
    # The later turn is archived: gone from the chat, still in the log.
    second.wait_for(state="hidden")
    assert chat(page, ".msg-user").filter(has_text="second").is_hidden()
    assert chat(page, ".msg-assistant").filter(has_text="echo: first").is_visible()
    assert log_of(api, "echo", "k")[-1]["kind"] == "session.restored"
    page.get_by_role("button", name="Show archived").click()
    second.wait_for()

    # The conversation goes on from the checkpoint: the model no longer sees "second".
    page.get_by_role("button", name="Hide archived").click()
    send_in_page(page, "third")
    chat(page, ".msg-assistant").filter(has_text="echo: third").wait_for()
    context = api.get(f"{base}/context").json()["messages"]
    said = [m.get("content") for m in context if m["kind"] == "user"]
    assert said == ["first", "third"]


def test_fork_opens_the_new_session(page: Any, daemon: Daemon, api: httpx.Client) -> None:
    make_agent(api, "echo")
    base = session_path("echo", "main")
    api.post(f"{base}/messages", json={"content": "kept"})
    assert api.post(f"{base}/checkpoints", json={"name": "here"}).status_code == 201
    api.post(f"{base}/messages", json={"content": "not in the fork"})
    open_session(page, daemon, "echo", "main")
    chat(page, ".msg-assistant").filter(has_text="not in the fork").wait_for()

    page.get_by_role("tab", name="Checkpoints").click()
    page.locator("#pane-checkpoints li.cp").filter(has_text="here").get_by_role(
        "button", name="Fork").click()
    page.wait_for_function("() => decodeURIComponent(location.hash).includes('/sessions/main~')")
    key = page.locator("h1.s-key").inner_text()
    assert key.startswith("main~")
    chat(page, ".chat-note").filter(has_text="Forked from main").wait_for()
    assert chat(page, ".msg-assistant").filter(has_text="echo: kept").is_visible()
    assert chat(page, ".msg-assistant").filter(has_text="not in the fork").count() == 0
    assert api.get(session_path("echo", key)).status_code == 200


def test_steer_interrupt_and_cancel_the_run_under_way(page: Any, daemon: Daemon,
                                                      api: httpx.Client) -> None:
    make_agent(api, "slow", settings={"script": [{"text": WORDS, "delay_ms": 20_000}]})
    open_session(page, daemon, "slow", "k")
    send_in_page(page, "start")
    page.locator("#pane-chat .streaming").wait_for()
    bar = page.locator(".runbar")
    bar.get_by_text("running").wait_for()

    # Steer: no new run; the message joins the one under way.
    send_in_page(page, "and mention the weather", mode="steer")
    chat(page, ".msg-user").filter(has_text="mention the weather").locator(".pill").filter(
        has_text="steer").wait_for()
    log = log_of(api, "slow", "k")
    first_run = log[0]["run_id"]
    steered = [e for e in log if e["kind"] == "message.user" and e["data"].get("steer")]
    assert [e["run_id"] for e in steered] == [first_run]

    # Interrupt: a new run, and the busy one is cancelled at its next step boundary.
    send_in_page(page, "never mind, stop", mode="interrupt")
    chat(page, ".chat-note").filter(has_text="interrupted by a newer message").wait_for()
    assert api.get(f"/v1/runs/{first_run}").json()["status"] == "cancelled"

    # Cancel the new run from the run bar.
    page.locator("#pane-chat .streaming").wait_for()
    bar.get_by_role("button", name="Cancel run").click()
    page.wait_for_function("""() => [...document.querySelectorAll('#pane-chat .chat-note')]
        .filter((n) => n.textContent.startsWith('Run cancelled')).length >= 2""")
    bar.wait_for(state="hidden")
    page.wait_for_selector(".s-status .pill-closed")
    runs = api.get("/v1/runs", params={"agent": "slow"}).json()["runs"]
    assert {r["status"] for r in runs} == {"cancelled"} and len(runs) == 2
    assert chat(page, ".streaming").count() == 0


def test_hostile_text_is_shown_as_text_and_runs_nothing(page: Any, daemon: Daemon,
                                                       api: httpx.Client) -> None:
    make_agent(api, "x", tools=["calculator"], settings={"script": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": PAYLOAD}}]},
        {"text": PAYLOAD}]})
    key = f"k{PAYLOAD}"
    sent = api.post(f"{session_path('x', key)}/messages", json={"content": PAYLOAD})
    assert sent.json()["status"] == "completed", sent.text
    nodes_before = None
    open_session(page, daemon, "x", key)
    reply = chat(page, ".msg-assistant").filter(has_text="onerror")
    reply.wait_for()
    page.locator("#pane-timeline .step-tool-finished").wait_for()

    # The key, the user's message, the reply: text, one text node each.
    assert page.locator("h1.s-key").inner_text() == key
    assert reply.locator(".msg-text").inner_text() == PAYLOAD
    assert chat(page, ".msg-user .msg-text").inner_text() == PAYLOAD
    for selector in ("h1.s-key", "#pane-chat .msg-assistant .msg-text",
                     "#pane-chat .msg-user .msg-text"):
        assert page.eval_on_selector(
            selector, "el => el.childNodes.length === 1 && el.firstChild.nodeType === 3")
    # Tool arguments and the tool's output (which quotes them) in the timeline.
    started = page.locator("#pane-timeline .step-tool-started .args")
    assert started.inner_text() == f'{{"expression":{_json(PAYLOAD)}}}'
    finished = page.locator("#pane-timeline .step-tool-finished .output")
    assert PAYLOAD in finished.inner_text()
    # Nothing ran, nothing was parsed into elements.
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script, #toasts img").count() == 0
    nodes_before = page.evaluate("document.querySelectorAll('main *').length")
    page.get_by_role("tab", name="Checkpoints").click()
    page.get_by_role("tab", name="Timeline").click()
    assert page.evaluate("window.__xss") is None
    assert nodes_before == page.evaluate("document.querySelectorAll('main *').length")
    assert "<img" in page.title()  # the title is text too


def _json(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def test_a_snapshot_lists_the_files_its_step_changed(page: Any, daemon: Daemon,
                                                    api: httpx.Client) -> None:
    hostile = 'x<img src=x onerror="window.__xss=3">.txt'
    make_agent(api, "writer", tools=["write_file"], settings={"script": [
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "notes/a.txt",
                                                              "content": "hello"}}]},
        {"tool_calls": [{"name": "write_file", "arguments": {"path": hostile,
                                                              "content": "boo"}}]},
        {"text": "written"}]})
    sent = api.post(f"{session_path('writer', 'k')}/messages", json={"content": "write"})
    assert sent.json()["status"] == "completed", sent.text
    open_session(page, daemon, "writer", "k")
    chat(page, ".msg-assistant").filter(has_text="written").wait_for()
    snapshots = page.locator("#pane-timeline .step-workspace-snapshot")
    assert snapshots.count() == 3  # before the first write, after each write

    first_write = snapshots.nth(1)
    first_write.locator("summary", has_text="Files changed").click()
    listed = first_write.locator("ul.files li")
    listed.first.wait_for()
    assert listed.all_text_contents() == ["+ notes dir", "+ notes/a.txt 5 B"]
    assert "2 added · 0 modified · 0 removed" in first_write.inner_text()

    second_write = snapshots.nth(2)
    second_write.locator("summary", has_text="Files changed").click()
    second_write.locator("ul.files li").first.wait_for()
    assert second_write.locator("ul.files li code").all_inner_texts() == [hostile]
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0


def test_a_call_waiting_for_approval_is_decided_from_the_session(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    make_agent(api, "guard", tools=["calculator"], settings={
        "script": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                   {"text": "it is 42"}],
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]}})
    open_session(page, daemon, "guard", "k")
    send_in_page(page, "what is 6*7?")
    bar = page.locator(".runbar")
    bar.get_by_text("needs a decision").wait_for()
    assert "calculator" in bar.inner_text() and "6*7" in bar.inner_text()
    chat(page, ".chat-note").filter(has_text="Waiting for approval to run").wait_for()
    page.locator("#pane-timeline .step-approval-requested").get_by_text("waiting").wait_for()
    bar.get_by_role("button", name="Approve").click()
    chat(page, ".msg-assistant").filter(has_text="it is 42").wait_for()
    bar.wait_for(state="hidden")
    decided = [e for e in log_of(api, "guard", "k") if e["kind"] == "approval.decided"]
    assert [e["data"]["action"] for e in decided] == ["approve"]
    # Decided: the timeline's request offers no buttons any more.
    assert page.locator("#pane-timeline .step-approval-requested button",
                        has_text="Approve").count() == 0


def test_a_retried_model_call_shows_its_failed_attempt(page: Any, daemon: Daemon,
                                                      api: httpx.Client) -> None:
    """A real provider (OpenAI's wire format, from agentd.testing's stub server) that
    fails once: the step's row says it was retried and why; the reply streams as any."""
    from agentd.testing import StubLLMServer

    with StubLLMServer() as stub:
        stub.enqueue(fault="http_500")
        stub.enqueue("second time lucky", usage={"input_tokens": 12, "output_tokens": 3})
        make_agent(api, "flaky", model="openai-compatible:stub",
                   settings={"base_url": stub.base_url})
        open_session(page, daemon, "flaky", "k")
        send_in_page(page, "hello")
        chat(page, ".msg-assistant").filter(has_text="second time lucky").wait_for()
    row = page.locator("#pane-timeline .step-message-assistant")
    row.get_by_text("1 retry").wait_for()
    assert "12 in · 3 out" in row.inner_text()
    row.locator("summary", has_text="Failed attempts").click()
    attempt = row.locator(".attempt")
    assert "openai-compatible:stub" in attempt.inner_text()
    assert "HTTP 500" in attempt.inner_text()


def test_an_answer_sent_back_for_its_schema_shows_why_as_text(page: Any, daemon: Daemon,
                                                              api: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}},
              "required": ["n"]}
    make_agent(api, "shaped", settings={"output": {"json_schema": schema}, "script": [
        {"json": {"n": PAYLOAD}}, {"json": {"n": 7}}]})
    sent = api.post(f"{session_path('shaped', 'k')}/messages",
                    json={"content": "n?", "output_schema": schema})
    assert sent.json()["status"] == "completed", sent.text
    open_session(page, daemon, "shaped", "k")
    row = page.locator("#pane-timeline .step-output-invalid")
    row.wait_for()
    assert "asked again 1/2" in row.inner_text()
    # The model's value, quoted in the schema error, is text.
    assert row.locator(".step-text").inner_text().startswith("$.n: ")
    assert PAYLOAD in row.locator(".step-text").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0


def test_images_show_as_thumbnails_and_files_as_downloads(page: Any, daemon: Daemon,
                                                         api: httpx.Client) -> None:
    """A message's image is a thumbnail (its bytes fetched with the console's token,
    shown through an object URL the page's policy allows), its file a chip that
    downloads; in the chat and in the timeline."""
    import base64

    from tests.media.images import png

    make_agent(api, "eye")
    image = png(40, 30)
    sent = api.post(f"{session_path('eye', 'pics')}/messages", json={"content": [
        {"type": "text", "text": "a picture"},
        {"type": "image", "data": base64.b64encode(image).decode()},
        {"type": "file", "media_type": "text/plain", "name": "notes.txt",
         "data": base64.b64encode(b"some notes").decode()}]})
    assert sent.json()["status"] == "completed", sent.text
    open_session(page, daemon, "eye", "pics")
    thumb = chat(page, ".msg-user img.part-thumb")
    thumb.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#pane-chat .msg-user img.part-thumb');"
        " return i && i.complete && i.naturalWidth === 40 && i.naturalHeight === 30; }")
    assert thumb.get_attribute("src", timeout=5000).startswith("blob:")
    assert "image · image/png · 40x30" in (thumb.get_attribute("alt") or "")
    chip = chat(page, ".msg-user .part-file")
    assert "notes.txt" in chip.inner_text()
    with page.expect_download() as download:
        chip.click()
    assert download.value.suggested_filename == "notes.txt"
    assert Path(download.value.path()).read_bytes() == b"some notes"
    page.locator("#pane-timeline .step-message-user img.part-thumb").wait_for(state="attached")
