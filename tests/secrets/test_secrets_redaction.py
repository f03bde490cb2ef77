"""Secret values taken out of what a run writes: a tool that prints a value (plain,
base64 with or without a newline, URL-encoded) and a model that writes it into a tool
call leave `[secret:NAME]` in the log, the API's events, the export and the daemon's
log lines, never the value. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.identity._daemon import ADMIN, Daemon, daemon, settings_for
from tests.server.test_api import parse_sse

from agentd.security.redaction import LiveRedaction, SecretRedactor, encoded_forms


def _value() -> str:
    # Random, with characters URL encoding changes: each test plants its own.
    return f"{secrets.token_urlsafe(18)}/+={secrets.token_hex(6)}&?"


def test_every_form_is_replaced_by_the_secrets_name() -> None:
    value = _value()
    redactor = SecretRedactor({"API": value})
    b64 = base64.b64encode(value.encode()).decode()
    with_newline = base64.b64encode((value + "\n").encode()).decode()
    text = (f"plain {value}; b64 {b64}; b64 of value+newline {with_newline}; url "
            f"{quote(value, safe='')}; plus {quote_plus(value)}; urlsafe "
            f"{base64.urlsafe_b64encode(value.encode()).decode()}")
    out = redactor.text(text)
    assert value not in out and b64 not in out and quote(value, safe="") not in out
    whole = 4 * (len(value.encode()) // 3)
    assert b64[:whole] not in out and with_newline[:whole] not in out
    assert out.count("[secret:API]") == 6, out
    # Data: every string, keys too; untouched data is the same object.
    data: dict[str, Any] = {"a": [value, {"k": 1}], value: "x", "n": None}
    redacted = redactor.data(data)
    assert value not in repr(redacted) and redacted["a"][1] is data["a"][1]
    clean = {"a": ["nothing here"], "b": 2}
    assert redactor.data(clean) is clean
    assert not SecretRedactor() and SecretRedactor().data(data) is data


def test_a_longer_value_wins_over_one_it_contains() -> None:
    short, long = "abcdefgh12", "abcdefgh12-and-more-34"
    redactor = SecretRedactor({"SHORT": short, "LONG": long})
    assert redactor.text(f"{long} {short}") == "[secret:LONG] [secret:SHORT]"
    assert all(len(f) >= 8 for f in encoded_forms("12345678"))


@given(cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=12),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_stream_cut_anywhere_is_redacted_as_a_whole(cuts: list[int], before: str,
                                                      after: str) -> None:
    """A reply streamed in pieces cut anywhere (a value split across two pieces)
    shows, joined, what redacting the whole reply shows."""
    value = "s3cret-Value/with+stuff=1"
    redactor = SecretRedactor({"API": value})
    text = f"{before}{value} and {quote(value, safe='')}{after} {value}"
    live = LiveRedaction(redactor)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    shown = [live.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    shown.append(live.flush())
    assert "".join(shown) == redactor.text(text)
    assert all(value not in piece for piece in shown)
    # Without a value to look for, nothing is held back.
    assert LiveRedaction(SecretRedactor()).feed("abc") == "abc"


async def test_a_reply_streamed_word_by_word_never_shows_a_value(
        tmp_path: Path, store_url: str) -> None:
    """The live tokens of a reply hold the secret's name even when the value is cut
    across them (a model streams a few characters a piece): joined, they are the
    committed reply, never the value. (A model that learned a value, from a tool
    that printed it in halves, say, and writes it out.)"""
    value = " ".join(secrets.token_urlsafe(6) for _ in range(4))  # four pieces
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/secrets", ADMIN, json={
            "name": "PW", "value": value, "tenant": "acme"})
        assert made.status_code == 201, made.text
        created = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "acme.bot", "settings": {"tenant": "acme", "script": [
                {"text": f"the password is {value} indeed", "delay_ms": 300}]}})
        assert created.status_code == 201, created.text
        sent = await d.call("POST", "/v1/agents/acme.bot/sessions/k/messages", ADMIN,
                            json={"content": "go", "stream": True})
        assert sent.status_code == 200, sent.text
    frames = parse_sse(sent.text)
    tokens = [f["data"]["text"] for f in frames if f["event"] == "token"]
    assert len(tokens) > 1, frames  # (streamed live, in pieces)
    [reply] = [f["data"]["data"]["text"] for f in frames
               if f["event"] == "message.assistant"]
    assert reply == "the password is [secret:PW] indeed"
    assert "".join(tokens) == reply
    assert not {f for f in encoded_forms(value) if f in "".join(tokens)}


async def test_a_value_pasted_into_a_message_is_logged_and_shown_by_its_name(
        tmp_path: Path, store_url: str) -> None:
    """A person who pastes a key into a message (or a conversation a door adds): the
    log, the run and so the model's context hold the secret's name, never the value;
    another agent's message is left as it was."""
    value = _value()
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/secrets", ADMIN, json={
            "name": "CANARY", "value": value, "tenant": "acme"})
        assert made.status_code == 201, made.text
        for name, tenant in (("acme.bot", "acme"), ("other", "default")):
            created = await d.call("POST", "/v1/agents", ADMIN, json={
                "name": name, "settings": {"tenant": tenant}})
            assert created.status_code == 201, created.text
        sent = await d.call("POST", "/v1/agents/acme.bot/sessions/k/messages", ADMIN,
                            json={"content": f"my key is {value}, keep it", "wait": True})
        assert sent.status_code == 200, sent.text
        run = sent.json()
        assert run["input"] == "my key is [secret:CANARY], keep it"
        # (The scripted model echoes what it was given: the name.)
        assert run["output"] == "echo: my key is [secret:CANARY], keep it"
        await d.runtime.add_messages("acme.bot", "added", [
            {"role": "user", "content": f"and again {value}"},
            {"role": "assistant", "content": f"noted {quote(value, safe='')}"}],
            create=True)
        scanned = await _scan(d, value)
        other = await d.call("POST", "/v1/agents/other/sessions/o/messages", ADMIN,
                             json={"content": f"not its secret: {value}", "wait": True})
        assert other.json()["input"] == f"not its secret: {value}"
        rows = await d.runtime.store.engine.read(lambda tx: tx.all(
            "SELECT s.key, e.data FROM events e JOIN sessions s ON s.id = e.session_id "
            "WHERE e.kind IN ('message.user', 'message.added')"))
    logged: dict[str, list[str]] = {str(r[0]): [] for r in rows}
    for key, data in rows:
        logged[str(key)].append(str(data))
    assert value in logged["o"][0]
    assert "[secret:CANARY]" in scanned
    assert not {f for f in encoded_forms(value) if f in scanned}
    mine = " ".join(logged["k"][:1] + logged["added"])
    assert mine.count("[secret:CANARY]") == 3 and not {
        f for f in encoded_forms(value) if f in mine}


def _script(value: str) -> list[dict[str, Any]]:
    b64 = base64.b64encode(value.encode()).decode()
    return [
        {"tool_calls": [{"name": "write_file", "arguments": {
            "path": "leak.txt",
            "content": f"{value}\n{b64}\n{quote(value, safe='')}\n{quote_plus(value)}\n"}}]},
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "leak.txt"}}]},
        {"tool_calls": [{"name": "shell", "arguments": {
            "command": "v=$(head -n1 leak.txt); printf %s \"$v\" | base64 -w0; echo; "
                       "echo \"$v\" | base64 -w0; echo; cat leak.txt"}}]},
        # (A model that knew a value, which no model here can: its answer is kept out.)
        {"text": f"all written: {value}"},
    ]


async def _approved(d: Daemon, run: dict[str, Any]) -> dict[str, Any]:
    """The run once it ended, its shell calls approved by a person: where the sandbox
    does not isolate (no bubblewrap on the machine), a command with a substitution is
    asked about, which is not what these tests are about."""
    for _ in range(10):
        if run["status"] != "waiting_approval":
            return run
        for pending in (await d.call("GET", "/v1/approvals", ADMIN)).json()["approvals"]:
            decided = await d.call("POST", f"/v1/approvals/{pending['approval_id']}", ADMIN,
                                   json={"action": "approve"})
            assert decided.status_code == 200, decided.text
        await asyncio.wait_for(d.runtime.wait(run["id"]), 30)
        run = (await d.call("GET", f"/v1/runs/{run['id']}", ADMIN)).json()
    return run


async def _scan(d: Daemon, value: str) -> str:
    """Everything the daemon keeps or answers about the run, as one text."""
    texts = []
    for path in ("/v1/agents/acme.bot/sessions/k/events", "/v1/export/runs?context=true",
                 "/v1/runs?agent=acme.bot", "/v1/agents/acme.bot/sessions/k/context"):
        answer = await d.call("GET", path, ADMIN)
        assert answer.status_code == 200, (path, answer.text)
        texts.append(answer.text)
    rows = await d.runtime.store.engine.read(lambda tx: tx.all(
        "SELECT kind, data FROM events"))
    texts.append(repr(rows))
    return "\n".join(texts)


async def test_a_runs_events_hold_the_secrets_name_never_its_value(
        tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value = _value()
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/secrets", ADMIN, json={
            "name": "CANARY", "value": value, "tenant": "acme"})
        assert made.status_code == 201, made.text
        created = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "acme.bot", "tools": ["write_file", "read_file", "shell"],
            "settings": {"tenant": "acme", "script": _script(value)}})
        assert created.status_code == 201, created.text
        sent = await d.call("POST", "/v1/agents/acme.bot/sessions/k/messages", ADMIN,
                            json={"content": "go", "wait": True})
        assert sent.status_code == 200, sent.text
        run = await _approved(d, sent.json())
        assert run["status"] == "completed", run
        assert run["output"] == "all written: [secret:CANARY]"
        # The tools ran with the real value (the file holds it) ...
        workspace = d.runtime.settings.workspaces_dir
        assert any(value in p.read_text() for p in workspace.rglob("leak.txt"))
        scanned = await _scan(d, value)
        # ... and what was written of them holds its name instead.
        assert scanned.count("[secret:CANARY]") >= 8, scanned
        forms = encoded_forms(value)
        assert {f for f in forms if f in scanned} == set()
        events = (await d.call("GET", "/v1/agents/acme.bot/sessions/k/events",
                               ADMIN)).json()["events"]
        shell = [e for e in events if e["kind"] == "tool.finished"][-1]
        assert "[secret:CANARY]" in str(shell["data"]), shell
    assert not {f for f in encoded_forms(value) if f in caplog.text}


async def test_another_tenants_secret_is_not_redacted_nor_known(
        tmp_path: Path, store_url: str) -> None:
    """The redactor of a run knows only its own agent's secrets: another tenant's
    value is not its to know (nor to tell by its absence)."""
    mine, theirs = _value(), _value()
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await d.call("POST", "/v1/tenants", ADMIN, json={"name": "globex"})
        for tenant, value in (("acme", mine), ("globex", theirs)):
            made = await d.call("POST", "/v1/secrets", ADMIN, json={
                "name": "K", "value": value, "tenant": tenant})
            assert made.status_code == 201, made.text
        values = await d.runtime.secrets.values(tenant="acme", agent="acme.bot")
        assert values == {"K": mine}


#: An operator's check (``[hooks] allow``) that keeps what it is shown.
SEEN_CHECK = '''
SEEN = []


def record(point, facts):
    SEEN.append(facts)
    return {"verdict": "pass"}
'''


async def test_a_check_is_shown_the_secrets_name_never_its_value(
        tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook's check is as far from the secret as the log: a tool's result that
    prints a value reaches a check (a webhook's host, a command, a judging model)
    with the secret's name in its place."""
    import sys

    from agentd.config import HooksConfig

    name = f"seenchecks_{secrets.token_hex(4)}"
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / f"{name}.py").write_text(SEEN_CHECK)
    monkeypatch.syspath_prepend(str(folder))
    value = _value()
    settings = settings_for(tmp_path, store_url, hooks=HooksConfig(allow=[f"{name}:*"]))
    try:
        async with daemon(settings) as d:
            assert (await d.call("POST", "/v1/secrets", ADMIN, json={
                "name": "CANARY", "value": value, "tenant": "acme"})).status_code == 201
            created = await d.call("POST", "/v1/agents", ADMIN, json={
                "name": "acme.bot", "tools": ["write_file", "read_file"],
                "settings": {"tenant": "acme", "script": [
                    *_script(value)[:2], {"text": "done"}], "hooks": {"checks": [
                        {"name": "see", "point": "tool_result", "kind": "python",
                         "callable": f"{name}:record"}]}}})
            assert created.status_code == 201, created.text
            sent = await d.call("POST", "/v1/agents/acme.bot/sessions/k/messages", ADMIN,
                                json={"content": "go", "wait": True})
            assert sent.json()["status"] == "completed", sent.text
            verdicts = [e["data"] for e in (await d.call(
                "GET", "/v1/agents/acme.bot/sessions/k/events", ADMIN)).json()["events"]
                if e["kind"] == "hook.verdict"]
            assert [v["verdict"] for v in verdicts] == ["pass", "pass"], verdicts
        seen = repr(sys.modules[name].SEEN)
        assert "[secret:CANARY]" in seen, seen  # (the file's text, as read back)
        assert {f for f in encoded_forms(value) if f in seen} == set()
    finally:
        sys.modules.pop(name, None)
