"""A workspace follows its run to another node: two real daemon processes (nodes A and
B, each with its own home) on one PostgreSQL. A's run writes a file (committed), then
starts a shell command that writes another and is SIGKILLed with A in the middle of
it. B takes the run over and finds the committed file, not the uncommitted one; its
own steps' files then follow the agent back to A, once B is killed in turn."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from tests.conftest import TERMINAL, WORKER_UID_BASE, wait_until
from tests.daemons import Daemon, create_agent, read_events, send, wait_for_run

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TOKEN = "workspace-failover-token"


def _files(home: Path) -> dict[str, str]:
    """The files of the one agent's workspace on the node of ``home``."""
    roots = sorted((home / "workspaces").glob("*")) if (home / "workspaces").is_dir() else []
    assert len(roots) <= 1, roots
    if not roots:
        return {}
    root = roots[0]
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _node(tmp_path: Path, name: str, pg_url: str) -> Daemon:
    env = {"AGENTD_DATABASE_URL": pg_url, "AGENTD_NODE_ID": name, "AGENTD_TOKEN": TOKEN,
           "AGENTD_LEASE_TTL_S": "3",
           "AGENTD_SANDBOX": json.dumps({"uid_base": WORKER_UID_BASE, "uid_count": 20_000})}
    return Daemon(tmp_path / f"home-{name}", tmp_path / f"agentd-{name}.log", env=env,
                  args=())


def _shell(command: str) -> dict[str, object]:
    return {"tool_calls": [{"name": "shell", "arguments": {"command": command}}]}


def test_a_run_resumed_on_another_node_after_a_sigkill_finds_its_committed_files(
        tmp_path: Path, pg_url: str) -> None:
    a, b = _node(tmp_path, "A", pg_url), _node(tmp_path, "B", pg_url)
    try:
        a.start()
        with a.client(TOKEN) as client:
            create_agent(client, "w", model="scripted",
                                 tools=["write_file", "read_file", "shell"], settings={
                # Allowed outright: without an isolating sandbox (bubblewrap, gVisor)
                # a command that writes a file waits for approval instead.
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [
                    {"tool_calls": [{"name": "write_file", "arguments": {
                        "path": "a.txt", "content": "one"}}]},
                    # Writes b.txt, then is killed with its node before its result.
                    _shell("echo two > b.txt && sleep 60"),
                    {"tool_calls": [{"name": "write_file", "arguments": {
                        "path": "c.txt", "content": "three"}}]},
                    {"text": "done"},
                    {"tool_calls": [{"name": "read_file", "arguments": {
                        "path": "c.txt"}}]},
                    {"text": "read"}]})
            sent = send(client, "w", "k", "go", wait=False)
            assert sent.status_code == 202, sent.text
            run_id = sent.json()["id"]

            def in_the_shell() -> bool:
                started = [e for e in read_events(client, "w", "k")
                           if e["kind"] == "tool.started" and e["data"]["name"] == "shell"]
                return bool(started) and "b.txt" in _files(a.home)

            wait_until(in_the_shell, what="the shell command under way on node A")
            kinds = [e["kind"] for e in read_events(client, "w", "k")]
            assert kinds.count("workspace.snapshot") >= 2  # (the baseline, then a.txt)
        a.signal_and_wait(signal.SIGKILL)
        assert _files(a.home) == {"a.txt": "one", "b.txt": "two\n"}

        # B takes the run over once A's lease expires: the shell's outcome is unknown
        # (not idempotent), so it waits for a decision, with the committed files.
        b.start()
        with b.client(TOKEN) as client:
            run = wait_for_run(client, run_id, {"waiting_approval"})
            assert run["status"] == "waiting_approval"
            assert _files(b.home) == {"a.txt": "one"}
            events = read_events(client, "w", "k")
            restored = [e for e in events if e["kind"] == "workspace.restored"]
            assert [(e["data"]["reason"], e["data"]["node"]) for e in restored] == [
                ("followed", "A")]
            resumed = [e for e in events if e["kind"] == "run.resumed"]
            assert resumed[-1]["data"]["previous_owner"] == "A"

            decided = client.post(f"/v1/runs/{run_id}/decide",
                                  json={"action": "skip", "output": "it was cut off"})
            assert decided.status_code == 200, decided.text
            run = wait_for_run(client, run_id, TERMINAL)
            assert (run["status"], run["output"]) == ("completed", "done")
            assert _files(b.home) == {"a.txt": "one", "c.txt": "three"}
        b.signal_and_wait(signal.SIGKILL)

        # A comes back with its stale copy (b.txt, never committed; no c.txt): its next
        # run of the agent brings the files B committed.
        assert _files(a.home) == {"a.txt": "one", "b.txt": "two\n"}
        a.start()
        with a.client(TOKEN) as client:
            sent = send(client, "w", "k", "read it", wait=True)
            assert sent.status_code == 200, sent.text
            assert sent.json()["status"] == "completed", sent.text
            assert _files(a.home) == {"a.txt": "one", "c.txt": "three"}
            events = read_events(client, "w", "k")
            reads = [e for e in events if e["kind"] == "tool.finished"
                     and e["data"]["name"] == "read_file"]
            assert "three" in reads[-1]["data"]["output"]
            restored = [e for e in events if e["kind"] == "workspace.restored"]
            assert [e["data"]["node"] for e in restored] == ["A", "B"]
            health = httpx.get(f"{a.url}/health", timeout=10).json()
            assert health["node"] == "A"
    finally:
        a.cleanup()
        b.cleanup()
