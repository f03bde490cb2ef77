"""Traces as data end to end: a real daemon's finished runs exported as JSON lines
(``GET /v1/export/runs``, ``agentd export traces``) and the preference pairs its
approvals hold (``/v1/export/pairs``) in the conversational shape TRL's DPOTrainer
reads; a tenant's token exports its tenant's runs only; bad filters are 4xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until
from tests.daemons import ThreadDaemon, create_agent, wait_for_run
from typer.testing import CliRunner

from agentd.cli import app

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789abcdef"
ACME = "acme-token-0123456789abcdef"
CALL = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}
HUGE = "x" * 200_000


def _pending(client: httpx.Client, agent: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        items = client.get("/v1/approvals", params={"agent": agent}).json()["approvals"]
        return items[0] if items else None

    return wait_until(found, what=f"an approval request of {agent}")


def _lines(reply: httpx.Response) -> list[dict[str, Any]]:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in reply.text.splitlines()]


def _trl_conversational(pair: dict[str, Any]) -> None:
    """What TRL's ``is_conversational`` and ``apply_chat_template`` check of a
    preference example (trl/data_utils.py): the three keys, each a non-empty list of
    ``role``/``content`` messages with roles a chat template knows; assistant tool
    calls in the Hugging Face form (``function.arguments`` an object)."""
    assert {"prompt", "chosen", "rejected"} <= set(pair)
    for key in ("prompt", "chosen", "rejected"):
        messages = pair[key]
        assert isinstance(messages, list) and messages, key
        for m in messages:
            assert m["role"] in ("system", "user", "assistant", "tool"), m
            assert isinstance(m.get("content"), str), m
            for call in m.get("tool_calls", []):
                assert call["type"] == "function"
                assert isinstance(call["function"]["name"], str)
                assert isinstance(call["function"]["arguments"], dict)
    assert all(m["role"] == "assistant" for m in pair["chosen"] + pair["rejected"])


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    daemon = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token=ADMIN,
                          tokens=[ACME, ADMIN],
                          access={"token-1": {"tenants": ["acme"]}}).start()
    yield daemon
    daemon.cleanup()


def test_runs_and_pairs_from_a_real_daemon(daemon: ThreadDaemon, tmp_path: Path) -> None:
    with daemon.client() as client:
        create_agent(client, "acme-bot", model="scripted", tools=["calculator"], settings={
            "tenant": "acme", "script": [CALL, {"text": "first"}, CALL, {"text": "second"}],
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]}})
        create_agent(client, "globex-bot", model="scripted",
                     settings={"tenant": "globex"})
        # An approval with edited arguments, then a denial.
        first = client.post("/v1/agents/acme-bot/sessions/k/messages",
                            json={"content": "go", "wait": False}).json()["id"]
        asked = _pending(client, "acme-bot")
        decided = client.post(f"/v1/approvals/{asked['approval_id']}", json={
            "action": "approve", "arguments": {"expression": "2+3"}})
        assert decided.status_code == 200, decided.text
        wait_for_run(client, first, {"completed"})
        second = client.post("/v1/agents/acme-bot/sessions/k/messages",
                             json={"content": "again", "wait": False}).json()["id"]
        asked = _pending(client, "acme-bot")
        client.post(f"/v1/approvals/{asked['approval_id']}", json={"action": "deny"})
        wait_for_run(client, second, {"completed"})
        # Another tenant's run, with a message far over the cap (the echo answers it).
        huge = client.post("/v1/agents/globex-bot/sessions/main/messages",
                           json={"content": HUGE, "wait": True}).json()
        assert huge["status"] == "completed"

        runs = _lines(client.get("/v1/export/runs"))
        assert [r["run_id"] for r in runs] == [huge["id"], second, first]  # newest first
        by_id = {r["run_id"]: r for r in runs}
        one = by_id[first]
        assert (one["agent"], one["session"], one["status"]) == ("acme-bot", "k", "completed")
        assert [m["role"] for m in one["messages"]] == ["user", "assistant", "tool",
                                                        "assistant"]
        call = one["messages"][1]["tool_calls"][0]
        assert call["function"] == {"name": "calculator", "arguments": {"expression": "6*7"}}
        assert one["messages"][2]["content"] == "5"  # ran with the person's arguments
        [outcome] = one["tool_calls"]
        assert outcome["approval"]["action"] == "approve"
        assert outcome["approval"]["arguments"] == {"expression": "2+3"}
        assert outcome["output"] == "5" and outcome["is_error"] is False
        assert one["output"] == "first" and one["steps"] == 2 and len(one["model_calls"]) == 2
        assert one["usage"]["output_tokens"] > 0 and one["error"] is None
        assert one["finished_at"] and one["started_at"] and not one["truncated"]
        denied = by_id[second]["tool_calls"][0]
        assert denied["denied"] is True and denied["approval"]["action"] == "deny"
        capped = by_id[huge["id"]]
        assert capped["truncated"] is True
        assert len(capped["messages"][0]["content"]) < 66_000
        assert capped["messages"][0]["content"].endswith("[cut: 200000 characters]")
        whole = _lines(client.get("/v1/export/runs", params={
            "agent": "globex-bot", "max_chars": 0}))
        assert whole[0]["output"] == f"echo: {HUGE}" and whole[0]["truncated"] is False

        # The conversation before a run, as the model had it.
        [later] = _lines(client.get("/v1/export/runs", params={
            "agent": "acme-bot", "limit": 1, "context": "true"}))
        assert later["run_id"] == second
        assert [m["role"] for m in later["context"]] == ["user", "assistant", "tool",
                                                         "assistant"]
        assert later["context"][0]["content"] == "go"

        # Pairs: the edit always, the denial when asked.
        [pair] = _lines(client.get("/v1/export/pairs"))
        _trl_conversational(pair)
        assert pair["prompt"] == [{"role": "user", "content": "go"}]
        assert pair["rejected"][0]["tool_calls"][0]["function"]["arguments"] == {
            "expression": "6*7"}
        assert pair["chosen"][0]["tool_calls"][0]["function"]["arguments"] == {
            "expression": "2+3"}
        assert pair["agentd"]["rule"] == "edited_arguments"
        both = _lines(client.get("/v1/export/pairs", params={"denied": "true"}))
        assert [p["agentd"]["rule"] for p in both] == ["denied_call", "edited_arguments"]
        deny = both[0]
        _trl_conversational(deny)
        assert deny["prompt"][-1] == {"role": "user", "content": "again"}
        assert deny["prompt"][0] == {"role": "user", "content": "go"}  # the whole context
        assert deny["chosen"] == [{"role": "assistant", "content": "second"}]
        assert "tool_calls" in deny["rejected"][0]

    # A tenant's token: its tenant's runs and pairs, nothing of the other's.
    with daemon.client(ACME) as acme:
        mine = _lines(acme.get("/v1/export/runs"))
        assert {r["agent"] for r in mine} == {"acme-bot"} and len(mine) == 2
        hidden = acme.get("/v1/export/runs", params={"agent": "globex-bot"})
        ghost = acme.get("/v1/export/runs", params={"agent": "nobody"})
        assert hidden.status_code == ghost.status_code == 404
        assert hidden.json()["error"]["code"] == ghost.json()["error"]["code"]
        assert "globex" not in acme.get("/v1/export/pairs",
                                        params={"denied": "true"}).text

    # The CLI: runs and pairs to files; bad filters said plainly.
    runner = CliRunner()
    base = ["--url", daemon.url, "--token", ADMIN, "export"]
    out, pairs = tmp_path / "runs.jsonl", tmp_path / "pairs.jsonl"
    done = runner.invoke(app, [*base, "traces", "-o", str(out), "--pairs", str(pairs),
                               "--agent", "acme-bot", "--status", "completed"])
    assert done.exit_code == 0, done.output
    assert len(out.read_text().splitlines()) == 2
    assert len(pairs.read_text().splitlines()) == 1
    shown = runner.invoke(app, [*base, "pairs", "--denied"])
    assert shown.exit_code == 0 and len(shown.stdout.splitlines()) == 2
    for args, said in ((["--status", "running"], "only finished runs"),
                       (["--since", "yesterday"], "since 'yesterday' is not an ISO 8601"),
                       (["--since", "2030-01-02", "--until", "2030-01-01"],
                        "since must be before until"),
                       (["--agent", "nobody"], "nobody")):
        bad = runner.invoke(app, [*base, "traces", *args])
        assert bad.exit_code == 1, (args, bad.output)
        assert said in bad.output, (args, bad.output)
    with daemon.client() as client:
        bad_limit = client.get("/v1/export/runs", params={"limit": 0})
        assert bad_limit.status_code == 422
        bad_until = client.get("/v1/export/pairs", params={"until": "soon"})
        assert bad_until.status_code == 422 and "until" in bad_until.text


def _event(seq: int, kind: str, /, **data: Any) -> Any:
    from agentd.store.records import EventRecord

    return EventRecord(session_id="s", seq=seq, kind=kind, data=data, at=float(seq),
                       run_id="r")


def test_which_decisions_make_pairs() -> None:
    """Only a person's edit (always) or denial (asked for, and only when the model's
    next step was not denied too) is a pair; an approval as asked, an unknown-outcome
    decision and a denied retry are not."""
    from agentd.telemetry.dataset import pairs_of_run

    def step(seq: int, call: str | None, text: str = "") -> Any:
        calls = [{"id": call, "name": "t", "arguments": {"a": 1}}] if call else []
        return _event(seq, "message.assistant", text=text, tool_calls=calls)

    def ask(seq: int, call: str, kind: str = "policy") -> Any:
        return _event(seq, "approval.requested", effect_id=f"e-{call}", call_id=call,
                      kind=kind, arguments={"a": 1})

    def decide(seq: int, call: str, action: str, **more: Any) -> Any:
        return _event(seq, "approval.decided", effect_id=f"e-{call}", action=action, **more)

    def denied(seq: int, call: str) -> Any:
        return _event(seq, "tool.finished", call_id=call, denied=True, output="denied")

    as_asked = [step(1, "c1"), ask(2, "c1"), decide(3, "c1", "approve",
                                                     arguments={"a": 1})]
    assert pairs_of_run(as_asked, denied=True) == []
    unknown = [step(1, "c1"), ask(2, "c1", kind="unknown_outcome"),
               decide(3, "c1", "approve", arguments={"a": 2})]
    assert pairs_of_run(unknown, denied=True) == []
    edited = [step(1, "c1"), ask(2, "c1"), decide(3, "c1", "approve", arguments={"a": 2})]
    [(rule, asked, chosen, _)] = pairs_of_run(edited)
    assert rule == "edited_arguments" and asked.seq == chosen.seq == 1
    refused = [step(1, "c1"), ask(2, "c1"), decide(3, "c1", "deny"), denied(4, "c1"),
               step(5, None, "ok then")]
    assert pairs_of_run(refused) == []
    [(rule, asked, chosen, _)] = pairs_of_run(refused, denied=True)
    assert (rule, asked.seq, chosen.seq) == ("denied_call", 1, 5)
    twice = [step(1, "c1"), ask(2, "c1"), decide(3, "c1", "deny"), denied(4, "c1"),
             step(5, "c2"), ask(6, "c2"), decide(7, "c2", "deny"), denied(8, "c2")]
    assert pairs_of_run(twice, denied=True) == []  # (the second has no next step)
