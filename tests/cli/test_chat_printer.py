"""How `agentd chat` prints the kernel's stream notices (no daemon needed)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agentd.cli._chat import ReplyPrinter
from agentd.client import SSEEvent


def _printer() -> tuple[ReplyPrinter, io.StringIO]:
    notes = io.StringIO()
    return ReplyPrinter(Console(file=notes, width=200), Console(file=io.StringIO())), notes


def test_a_reset_token_is_announced_and_the_answer_restarts(
        capsys: pytest.CaptureFixture[str]) -> None:
    printer, notes = _printer()
    printer.handle(SSEEvent(event="token", id=3, data={"run_id": "r", "text": "Hello wor"}))
    printer.handle(SSEEvent(event="token", id=3,
                            data={"run_id": "r", "text": "Goodbye", "reset": True}))
    printer.handle(SSEEvent(event="message.assistant", id=4, data={"data": {"text": "Goodbye"}}))
    assert capsys.readouterr().out == "Hello wor\nGoodbye\n"
    assert "the answer restarts" in notes.getvalue()


def test_an_outage_and_the_recovery_are_shown() -> None:
    printer, notes = _printer()
    printer.handle(SSEEvent(event="model.outage", id=3, data={"data": {"models": ["openai:x"]}}))
    printer.handle(SSEEvent(event="model.recovered", id=4, data={"data": {"model": "openai:x"}}))
    out = notes.getvalue()
    assert "every model is unavailable" in out and "openai:x answered again" in out


def test_an_approval_request_and_its_decision_are_shown() -> None:
    printer, notes = _printer()
    printer.handle(SSEEvent(event="approval.requested", id=5, data={"data": {
        "approval_id": "ap_1", "name": "shell", "reason": "destructive (rm -rf)"}}))
    printer.handle(SSEEvent(event="approval.decided", id=6, data={"data": {
        "approval_id": "ap_1", "action": "approve", "by": "ann"}}))
    out = notes.getvalue()
    assert "waiting for approval of shell: destructive (rm -rf)" in out
    assert "agentd approve ap_1" in out and "(approve by ann)" in out
