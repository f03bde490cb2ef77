"""Characters that show nothing or reorder what is around them (bidi overrides,
zero-width spaces and joiners, tag characters, controls), in a real browser against a
real daemon: the approval card, its editor, the session's key, chat and timeline show
each as a visible escape (``\\u202e``), as the CLI does, and what is approved is
exactly what was asked. The console's set is the CLI's, code point for code point."""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon
from tests.web.conftest import log_of, make_agent, session_hash, session_path, sign_in

from agentd.cli._safe import INVISIBLE, dumps, terminal_safe

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

#: Reads as `rm -rf /tmp/cache-gnp` with the override; carries a zero-width space, a
#: joiner, a tag character and an escape: none of them may reach the eye unseen.
HIDDEN = "rm -rf /\u202epng-ehcac/pmt/\u202c \u200bx\u200d\U000e0041\x1b[8m"
#: Legitimate text: an emoji with its presentation selector, an accent, a keycap.
KEPT = "\u26a0\ufe0f caf\u00e9 1\ufe0f\u20e3"


def _ui(page: Any, call: str, *args: Any) -> Any:
    """Call ``ui.js``'s export ``call`` in the page, as the console loads it."""
    return page.evaluate(
        f"async (args) => (await import('/ui/assets/ui.js')).{call}(...args)", list(args))


def test_the_console_and_the_cli_make_the_same_characters_visible(signed_in: Any) -> None:
    """Every code point, alone and after the characters that decide a variation
    selector's fate, is escaped by the console exactly as by the CLI; the set holds
    every control but newline and tab, every format character and separator this
    Python knows."""
    changed = signed_in.evaluate("""async () => {
        const { visible } = await import('/ui/assets/ui.js');
        const out = [];
        for (const before of ['', 'x', '1', '\\u00e9', '\\u26a0\\ufe0f']) {
            for (let c = 0; c <= 0x10ffff; c++) {
                if (c >= 0xd800 && c <= 0xdfff) continue;
                const text = before + String.fromCodePoint(c);
                const shown = visible(text);
                if (shown !== text) out.push([before, c, shown]);
            }
        }
        return out;
    }""")
    expected = []
    for before in ("", "x", "1", "\u00e9", "\u26a0\ufe0f"):
        for c in range(sys.maxunicode + 1):
            if 0xD800 <= c <= 0xDFFF:
                continue
            text = before + chr(c)
            shown = terminal_safe(text)
            if shown != text:
                expected.append([before, c, shown])
    assert changed == expected
    alone = {c for before, c, _ in expected if before == ""}
    for c in range(sys.maxunicode + 1):
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp") and chr(c) not in "\t\n":
            assert c in alone, f"U+{c:04X} ({unicodedata.name(chr(c), '?')}) is not escaped"
    # JSON: the same escapes (surrogate pairs past the BMP), and it parses back.
    value = {"hidden": HIDDEN, "kept": KEPT}
    shown = _ui(signed_in, "visibleJson", value, 2)
    assert shown == dumps(value, indent=2)
    assert json.loads(shown) == value and not INVISIBLE.search(shown)
    assert _ui(signed_in, "visible", KEPT) == KEPT


def guarded(api: httpx.Client, name: str, expression: str) -> None:
    make_agent(api, name, tools=["calculator"], settings={
        "script": [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": expression}}]},
            {"text": f"{HIDDEN} {KEPT}"}],
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]}})


def test_an_approval_shows_what_the_call_does(page: Any, daemon: Daemon,
                                             api: httpx.Client) -> None:
    key = "ops\u202e1-tsop"  # a session key reversed by its own override
    guarded(api, "guard", HIDDEN)
    sent = api.post(f"{session_path('guard', key)}/messages",
                    json={"content": "compute", "wait": False})
    assert sent.status_code == 202, sent.text
    run_id = sent.json()["id"]
    sign_in(page, daemon, at="#/approvals")
    card = page.locator(".ap-card")
    card.wait_for()
    args = card.locator(".ap-args").inner_text()
    # Every hidden character is there to read, and the JSON is the arguments, exactly.
    for escape in ("\\u202e", "\\u202c", "\\u200b", "\\u200d", "\\udb40\\udc41", "\\u001b"):
        assert escape in args, (escape, args)
    assert not INVISIBLE.search(args)
    assert json.loads(args) == {"expression": HIDDEN}
    where = card.locator(".ap-where").inner_text()
    assert terminal_safe(key) in where and "\u202e" not in where
    # The editor shows the same and, sent back unchanged, approves exactly the call.
    card.get_by_role("button", name="Edit arguments").click()
    editor = card.locator(".ap-editor").input_value()
    assert not INVISIBLE.search(editor) and json.loads(editor) == {"expression": HIDDEN}
    card.get_by_role("button", name="Approve with these arguments").click()
    card.wait_for(state="detached")
    wait_until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed",
               what="the run finished")
    decided = next(e for e in log_of(api, "guard", key) if e["kind"] == "approval.decided")
    assert decided["data"]["arguments"] == {"expression": HIDDEN}


def test_the_session_shows_hidden_characters_of_the_reply_the_call_and_the_key(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    key = "k\u200b\u202e"
    make_agent(api, "x", tools=["calculator"], settings={"script": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": HIDDEN}}]},
        {"text": f"{HIDDEN} {KEPT}"}]})
    done = api.post(f"{session_path('x', key)}/messages", json={"content": HIDDEN})
    assert done.json()["status"] == "completed", done.text
    sign_in(page, daemon, at=session_hash("x", key))
    page.wait_for_selector("#composer")
    reply = page.locator("#pane-chat .msg-assistant .msg-text")
    reply.wait_for()
    assert reply.inner_text() == terminal_safe(f"{HIDDEN} {KEPT}")
    assert page.locator("#pane-chat .msg-user .msg-text").inner_text() == terminal_safe(HIDDEN)
    assert page.locator("h1.s-key").inner_text() == terminal_safe(key)
    assert "\u202e" not in page.title()
    page.locator("#pane-timeline .step-tool-finished").wait_for()
    started = page.locator("#pane-timeline .step-tool-started .args").inner_text()
    assert json.loads(started) == {"expression": HIDDEN} and not INVISIBLE.search(started)
    shown = page.locator("main").inner_text()
    assert not INVISIBLE.search(shown.replace("\t", " ")), [
        f"U+{ord(m.group()):04X}" for m in INVISIBLE.finditer(shown)]
