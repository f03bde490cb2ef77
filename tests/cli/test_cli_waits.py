"""What `agentd send` and `agentd chat` say while a run waits or restarts its answer:
recorded ``waiting`` frames from a stand-in daemon, and a steer with the real one."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agentd.cli._chat import ReplyPrinter, print_help
from agentd.cli._render import waiting_line
from agentd.client import Client, SSEEvent
from agentd.llm.scripted import enqueue
from agentd.security.tokens import read_token

MODEL = "openai:gpt-4.1-mini"
OUTAGE = {"run_id": "r_1", "reason": "model_outage", "model": MODEL,
          "cause": "connection refused", "retry_in_s": 4}
ERROR = {"code": "model_error", "retryable": True,
         "message": f"model {MODEL} failed after 3 attempts",
         "details": {"model": MODEL, "cause": "connection refused"}}


def frame(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}@t\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _Daemon(BaseHTTPRequestHandler):
    """Answers a message with recorded frames; ``ending`` False keeps the stream open
    with heartbeats (a run that goes on waiting)."""

    frames: list[bytes] = []
    run: dict[str, Any] = {}
    ending = True

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        try:
            for item in self.frames:
                self.wfile.write(item)
                self.wfile.flush()
            while not self.ending:
                time.sleep(0.1)
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
        except OSError:
            pass  # the client left

    def do_GET(self) -> None:
        if self.path.startswith("/v1/runs/"):
            self._json(self.run)
        else:
            self._json({"approvals": []})


@pytest.fixture
def daemon() -> Iterator[tuple[str, type[_Daemon]]]:
    handler = type("Daemon", (_Daemon,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.ending = True
        server.shutdown()
        server.server_close()


def _start(run_id: str = "r_1") -> list[bytes]:
    return [frame("message.user", {"seq": 1, "run_id": run_id, "kind": "message.user",
                                   "data": {"content": "hi"}}, 1),
            frame("run.queued", {"seq": 2, "run_id": run_id, "kind": "run.queued",
                                 "data": {}}, 2)]


def _send(url: str, *args: str) -> Any:
    from agentd.cli import app

    return CliRunner().invoke(app, ["--url", url, "send", "bot", "hi", *args])


def test_waiting_lines_say_what_the_run_waits_for() -> None:
    assert waiting_line(OUTAGE) == (f"waiting: {MODEL} unreachable (connection refused); "
                                    "retrying in 4 s")
    limited = {"reason": "rate_limit", "model": MODEL, "cause": "429", "retry_in_s": 1.5}
    assert waiting_line(limited) == f"waiting: {MODEL} rate limit (429); retrying in 1.5 s"
    retry = {"reason": "model_retry", "model": MODEL, "cause": "HTTP 503", "retry_in_s": 12.3}
    assert waiting_line(retry) == f"waiting: {MODEL} failed (HTTP 503); retrying in 12 s"
    assert waiting_line({"reason": "queued"}).startswith("waiting: queued behind")
    assert "approval" in waiting_line({"reason": "approval", "cause": "shell"})
    assert waiting_line({"reason": "something_new"}) == "waiting: something_new"
    assert waiting_line("garbage") == "waiting"


def test_send_shows_waits_and_names_the_model_when_the_run_fails(
        daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = daemon
    failed = {"kind": "run.failed", "seq": 5, "run_id": "r_1", "data": {"error": ERROR}}
    handler.frames = [*_start(), frame("waiting", OUTAGE),
                      frame("waiting", {**OUTAGE, "retry_in_s": 8}),
                      frame("error", failed, 5)]
    handler.run = {"id": "r_1", "status": "failed", "error": ERROR, "output": None}
    result = _send(url)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"waiting: {MODEL} unreachable (connection refused); retrying in 4 s"
    assert lines[1].endswith("retrying in 8 s")
    assert lines[2].startswith("error: run r_1 failed: ")
    assert MODEL in lines[2] and "connection refused" in lines[2]
    assert "daemon" not in result.stderr


def test_send_gives_up_after_its_timeout_saying_what_it_waited_for(
        daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = daemon
    handler.frames = [*_start(), frame("waiting", OUTAGE)]
    handler.ending = False  # the run goes on waiting: only heartbeats follow
    handler.run = {"id": "r_1", "status": "running", "output": None}
    result = _send(url, "--timeout", "1")
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]
    assert "run r_1 is still running after 1s" in last
    assert "unreachable (connection refused)" in last
    assert "not reachable" not in result.stderr


def test_chat_shows_waits_and_lists_its_commands() -> None:
    notes = io.StringIO()
    printer = ReplyPrinter(Console(file=notes, width=200), Console(file=io.StringIO()))
    printer.handle(SSEEvent(event="waiting", id=None, data=OUTAGE))
    assert f"(waiting: {MODEL} unreachable (connection refused); retrying in 4 s)" in (
        notes.getvalue())
    print_help(console := Console(file=io.StringIO(), width=200))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "/help" in text and "/exit" in text


def test_chat_help_inside_a_chat(cli: Any, agent_name: str) -> None:
    cli("create", agent_name)
    result = cli("chat", agent_name, input="/help\nhello\n")
    assert result.exit_code == 0, result.output
    assert "/exit, /quit" in result.stdout
    assert "echo: hello" in result.stdout
    assert "echo: /help" not in result.stdout  # not sent to the agent


def test_a_steer_restarts_the_answer_in_chat_instead_of_showing_it_twice(
        live_url: str, live_home: Path, agent_name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    dropped = "alpha beta gamma delta epsilon zeta eta theta"
    with Client(live_url, read_token(live_home), timeout=30) as client:
        client.create_agent(agent_name)
        # (The daemon runs in this process: its scripted model plays these turns.)
        enqueue({"text": dropped, "delay_ms": 4000}, {"text": "steered answer"},
                agent=agent_name)
        notes = io.StringIO()
        printer = ReplyPrinter(Console(file=notes, width=200), Console(file=io.StringIO()))
        steered = False
        for item in client.stream(agent_name, "s", "tell me"):
            printer.handle(item)
            if item.event == "token" and not steered:
                # The answer is streaming: steer a message into the run.
                client.send(agent_name, "s", "shorter please", wait=False, mode="steer")
                steered = True
    out = capsys.readouterr().out
    assert steered
    assert "a message was steered in; the answer restarts" in notes.getvalue()
    assert "(steered in: shorter please)" in notes.getvalue()
    # After the restart only the new answer is shown, once; the dropped one never
    # finished.
    assert out.endswith("steered answer\n")
    assert out.count("steered answer") == 1
    assert dropped not in out


def _tok(text: str, after: int, reset: bool = False) -> SSEEvent:
    return SSEEvent(event="token", id=after,
                    data={"run_id": "r", "text": text, **({"reset": True} if reset else {})})


def test_on_a_terminal_the_partial_answer_is_erased_not_repeated(
        capsys: pytest.CaptureFixture[str]) -> None:
    notes = io.StringIO()
    printer = ReplyPrinter(Console(file=notes, width=200, force_terminal=True),
                           Console(file=io.StringIO()))
    printer.begin("bot> ")
    printer.handle(_tok("alpha ", 2))
    printer.handle(SSEEvent(event="message.user", id=3, data={
        "run_id": "r", "kind": "message.user", "data": {"content": "x", "steer": True}}))
    printer.handle(_tok("beta", 2))  # the dropped call is still streaming
    printer.handle(_tok("new answer", 3))  # the next call: after the steer
    printer.handle(SSEEvent(event="message.assistant", id=4, data={
        "run_id": "r", "data": {"text": "new answer"}}))
    out = capsys.readouterr().out
    assert out == "alpha beta\r\x1b[2Knew answer\n"
    assert notes.getvalue().count("bot> ") == 2  # printed again after the erase
    assert "steered in: x" in notes.getvalue()
    assert "restarts" not in notes.getvalue()

    # A reset from the daemon erases the same way.
    printer.begin("bot> ")
    printer.handle(_tok("Hello wor", 5))
    printer.handle(_tok("Goodbye", 5, reset=True))
    assert capsys.readouterr().out == "Hello wor\r\x1b[2KGoodbye"
