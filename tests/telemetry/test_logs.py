"""The log formatters and their redaction (agentd.telemetry.logs), and the ids a
run's lines carry (agentd.logcontext). The daemon's own log, end to end:
tests/e2e/test_json_logs_e2e.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from agentd.config import Settings
from agentd.logcontext import CURRENT, LogContext, default_trace_id, trace_id_from
from agentd.telemetry.logs import JsonFormatter, Redactor, TextFormatter, known_secrets

TOKEN = "agd_abcdefghij_" + "x" * 43


@pytest.mark.parametrize(("text", "shown"), [
    (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer <redacted>"),
    ("authorization: bearer abc.def-ghi_jkl", "authorization: bearer <redacted>"),
    (f"token {TOKEN}.", "token <redacted>."),
    ("subprotocol agentd.token.s3cr3t-value", "subprotocol <redacted>"),
    ("key sk-ant-api03-" + "A" * 30, "key <redacted>"),
    ("key sk-proj-" + "b" * 40, "key <redacted>"),
    ("whsec_" + "QUJD" * 10 + "=", "<redacted>"),
    ("GET https://api.telegram.org/bot123456789:AAH" + "k" * 32 + "/getMe",
     "GET https://api.telegram.org/bot<redacted>/getMe"),
    ("postgresql://agentd:hunter2!@db:5432/agentd", "postgresql://agentd:<redacted>@db:5432/agentd"),
    # What only looks a little like one stays.
    ("Bearer tokens are checked", "Bearer tokens are checked"),
    ("a sk-1 and whsec_ and agd_ and 12:30", "a sk-1 and whsec_ and agd_ and 12:30"),
    ("http://127.0.0.1:8721/v1/runs", "http://127.0.0.1:8721/v1/runs"),
])
def test_secrets_by_their_shape(text: str, shown: str) -> None:
    assert Redactor()(text) == shown


def test_known_values_whatever_their_shape() -> None:
    redact = Redactor(["plain-looking-value", "short"])
    redact.add("plain-looking-value-longer", None, "")
    assert redact("x plain-looking-value-longer y plain-looking-value short") == (
        "x <redacted> y <redacted> short")  # longest first; too short to be one


def test_known_secrets_come_from_settings_and_the_environment() -> None:
    settings = Settings(_env_file=None, tokens=["configured-token-1"],
                        termo={"token": "termo-token-123"},
                        a2a={"remote_tokens": {"https://peer.example": "PEER_BEARER"}})
    environ = {"ANTHROPIC_API_KEY": "anthropic-key", "PEER_BEARER": "peer-bearer",
               "TELEGRAM_BOT_A": "bot-token-a", "MY_SERVICE_SECRET": "svc-secret",
               "HOME": "/home/agentd", "EMPTY_TOKEN": ""}
    assert known_secrets(settings, environ) == {
        "configured-token-1", "termo-token-123", "anthropic-key", "peer-bearer",
        "bot-token-a", "svc-secret"}


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError(f"failed with {TOKEN}")
        except RuntimeError as error:
            info = (type(error), error, error.__traceback__)
    return logging.LogRecord("agentd.x", logging.ERROR, __file__, 1, message, args, info)


def test_json_lines_carry_the_runs_ids_and_no_secret() -> None:
    formatter = JsonFormatter(Redactor(["the-api-key-value"]))
    outside = json.loads(formatter.format(_record("hello %s", "the-api-key-value")))
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert outside["message"] == "hello <redacted>"
    assert outside["time"].endswith("Z") and outside["level"] == "ERROR"
    context = LogContext(agent_id="a_1", agent="bot", session_id="s_1",
                         session=f"user:{TOKEN}", run_id="r_1")
    bound = CURRENT.set(context)
    try:
        line = json.loads(formatter.format(_record("boom", exc=True)))
    finally:
        CURRENT.reset(bound)
    assert "RuntimeError: failed with <redacted>" in line["exception"]
    assert TOKEN not in json.dumps(line)
    assert {k: line[k] for k in ("agent", "agent_id", "session", "session_id", "run_id")} == {
        "agent": "bot", "agent_id": "a_1", "session": "user:<redacted>",
        "session_id": "s_1", "run_id": "r_1"}
    assert line["trace_id"] == default_trace_id("r_1")


def test_text_lines_are_redacted_tracebacks_too() -> None:
    text = TextFormatter(Redactor())
    line = text.format(_record("sent %s", f"Bearer {TOKEN}", exc=True))
    assert TOKEN not in line and "sent Bearer <redacted>" in line
    assert "RuntimeError: failed with <redacted>" in line


def test_trace_ids() -> None:
    trace = default_trace_id("r_1")
    assert len(trace) == 32 and int(trace, 16) and trace == default_trace_id("r_1")
    assert trace != default_trace_id("r_2")
    # A run's context names the trace its message came in, else the derived one.
    ids = {"agent_id": "a", "agent": "b", "session_id": "s", "session": "k", "run_id": "r_1"}
    assert LogContext(**ids).trace_id == trace
    assert LogContext(**ids, given_trace_id="ab" * 16).trace_id == "ab" * 16
    assert trace_id_from("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736")
    assert trace_id_from("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert trace_id_from("garbage") is None and trace_id_from(None) is None


async def test_a_runs_context_reaches_the_tasks_it_starts() -> None:
    seen: list[str | None] = []

    async def child() -> None:
        context = CURRENT.get()
        seen.append(None if context is None else context.run_id)

    async def run() -> None:
        CURRENT.set(LogContext(agent_id="a", agent="b", session_id="s", session="k",
                               run_id="r_1"))
        await asyncio.create_task(child())
        await asyncio.to_thread(lambda: seen.append(CURRENT.get().run_id))  # type: ignore[union-attr]

    await asyncio.create_task(run())
    await child()  # (the run's task set it in its own context only)
    assert seen == ["r_1", "r_1", None]
