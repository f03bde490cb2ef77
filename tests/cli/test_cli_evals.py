"""``agentd fork`` and ``agentd eval`` against live daemons (real sockets, SQLite): a
suite built from real runs gates a change with its exit code, writes JUnit XML that
junitparser reads, and a suite exported from one daemon imports into another and runs
there the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml
from tests.cli.conftest import Invoke, one_error_line, serve
from typer.testing import CliRunner

from agentd.client import Client


def _seed(client: Client, agent: str, texts: list[str]) -> list[str]:
    client.create_agent(agent)
    return [client.send(agent, f"user:{i}", text, wait=True)["id"]
            for i, text in enumerate(texts)]


def test_fork_from_the_cli(cli: Invoke, live_url: str, agent_name: str) -> None:
    client = Client(live_url)
    [run] = _seed(client, agent_name, ["hello"])
    result = cli("fork", run, "--from-step", "1", "--settings",
                 '{"script": [{"text": "forked"}]}')
    assert result.exit_code == 0, result.output
    assert f"fork:{run}:1" in result.output and "first divergence at step 1" in result.output
    assert "forked" in result.output and "echo: hello" in result.output
    result = cli("fork", run, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["same_output"] is True and body["first_divergence"] is None
    assert client.get_fork(body["fork_id"]) == body
    assert "out of range" in one_error_line(cli("fork", run, "--from-step", "9"))
    assert "not JSON" in one_error_line(cli("fork", run, "--settings", "{"))
    assert "nosuch" in one_error_line(cli("fork", run, "--model", "nosuch:model"))
    line = one_error_line(cli("fork", run, "--model", "openai:gpt-4.1-mni"))
    assert "not in the model catalog" in line, line
    assert [s["key"] for s in client.list_sessions(agent_name)
            if s["key"].startswith("fork:")] == [f"fork:{run}:2", f"fork:{run}:1"]


def test_eval_gates_a_change_and_writes_junit(cli: Invoke, live_url: str, agent_name: str,
                                              tmp_path: Path) -> None:
    client = Client(live_url)
    runs = _seed(client, agent_name, ["hello", "bonjour"])
    suite = f"smoke-{agent_name}"[:60]
    result = cli("eval", "add", suite, *[a for r in runs for a in ("--from-run", r)])
    assert result.exit_code == 0, result.output
    assert "added 2 case(s)" in result.output
    listed = json.loads(cli("eval", "list", "--agent", agent_name, "--json").stdout)
    assert [(s["name"], s["cases"]) for s in listed] == [(suite, 2)]
    # The agent as it is: the gate passes, exit 0; JUnit XML with two passing cases.
    report = tmp_path / "evals.xml"
    result = cli("eval", "run", suite, "--junit", str(report))
    assert result.exit_code == 0, result.output
    assert "gate passed" in result.output and "passed 2/2" in result.output
    xml = JUnitXml.fromfile(str(report))
    [testsuite] = list(xml)
    assert (testsuite.tests, testsuite.failures, testsuite.errors) == (2, 0, 0)
    # A candidate that answers otherwise: exit 1, the report says what and where.
    result = cli("eval", "run", suite, "--settings", '{"script": [{"text": "nope"}]}',
                 "--junit", str(report))
    assert result.exit_code == 1, result.output
    assert "gate FAILED" in result.output and "regressions: " in result.output
    xml = JUnitXml.fromfile(str(report))
    [testsuite] = list(xml)
    assert (testsuite.tests, testsuite.failures, testsuite.errors) == (2, 2, 0)
    failures = [r for case in testsuite for r in case.result if isinstance(r, Failure)]
    assert len(failures) == 2 and "expected 'echo: hello'" in failures[0].message
    assert not [r for case in testsuite for r in case.result if isinstance(r, Error)]
    # --json: the eval run with its results; a lower gate lets it through.
    result = cli("eval", "run", suite, "--settings", '{"script": [{"text": "nope"}]}',
                 "--min-pass-rate", "0", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["summary"]["gate"]["passed"] is True and body["cases"] == 2
    rows = json.loads(cli("eval", "results", body["id"], "--json").stdout)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    failed = cli("eval", "results", body["id"], "--status", "failed")
    assert failed.exit_code == 0 and "nope" in failed.output, failed.output
    shown = cli("eval", "show", suite, "--run", "last")
    assert shown.exit_code == 0 and "no regressions" in shown.output, shown.output
    assert cli("eval", "show", suite).exit_code == 0
    assert cli("eval", "delete", suite).exit_code == 0
    assert "no eval suite named" in one_error_line(cli("eval", "run", suite))


def test_a_suite_exported_from_one_daemon_imports_into_another(
        live_url: str, live_home: Path, agent_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("AGENTD_HOME", str(live_home))  # (each daemon's token is its home's)
    runner = CliRunner()

    def cli(url: str, *args: str) -> object:
        from agentd.cli import app

        return runner.invoke(app, ["--url", url, *args])

    first = Client(live_url)
    runs = _seed(first, agent_name, ["alpha", "beta", "gamma"])
    suite = first.create_suite(agent_name, "exported", gate={"min_pass_rate": 0.5})
    for run in runs:
        first.add_case(suite["id"], run, graders=[{"kind": "regex", "pattern": "^echo: "}])
    exported = tmp_path / "suite.jsonl"
    result = cli(live_url, "eval", "export", "exported", "--agent", agent_name, "-o",
                 str(exported))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["suite", "case", "case", "case"]
    with serve(tmp_path_factory.mktemp("other")) as other_url:
        other = Client(other_url)
        other.create_agent("elsewhere", tools=["read_file"])
        result = cli(other_url, "eval", "import", str(exported), "--agent", "elsewhere")
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        [imported] = other.list_suites(agent="elsewhere")
        assert (imported["name"], imported["cases"], imported["gate"]) == (
            "exported", 3, {"min_pass_rate": 0.5})
        # The cases run there as they ran here: same answers, same grades.
        done = other.run_suite(imported["id"], wait=True)
        assert done["summary"]["passed"] == 3, done
        there = other.eval_results(done["id"])["results"]
        assert [r["output"] for r in there] == ["echo: alpha", "echo: beta", "echo: gamma"]
        # Live tools need the workspace at the step, which an imported case does not
        # hold: every case errors (the gate fails), each line says so and why.
        result = cli(other_url, "eval", "run", "exported", "--tools", "live")
        assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
        rows = [line for line in result.output.splitlines()  # type: ignore[attr-defined]
                if line.lstrip().startswith(("1 ", "2 ", "3 "))]
        assert len(rows) == 3 and all("errored" in row for row in rows), rows
        assert all("fork_workspace_unknown" in row for row in rows), rows
        # The results export too, a line per case after the header.
        with other.export_eval_run(done["id"]) as results:
            rows = [json.loads(line) for line in results]
        assert [r["type"] for r in rows] == ["eval_run", "result", "result", "result"]
        assert {r["status"] for r in rows[1:]} == {"passed"}


def test_cases_bigger_than_a_request_import_into_another_daemon(
        live_url: str, live_home: Path, agent_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A case holds its session's history: a real one outgrows a request's body
    (max_body_bytes, 1 MiB). Exported, it imports elsewhere all the same (up to
    [evals] max_case_bytes a case), and a file of many cases is sent in as many
    requests as it takes; a file the daemon refuses leaves no suite behind."""
    monkeypatch.setenv("AGENTD_HOME", str(live_home))
    runner = CliRunner()

    def cli(url: str, *args: str) -> Any:
        from agentd.cli import app

        return runner.invoke(app, ["--url", url, *args])

    first = Client(live_url)
    first.create_agent(agent_name)
    for i in range(6):  # (each echoed back: 2 x 6 x 200 KB of history before the run)
        first.send(agent_name, "long", f"{i}" + "x" * 200_000, wait=True)
    run = first.send(agent_name, "long", "and now?", wait=True)
    small = [first.send(agent_name, f"s{i}", f"hi {i}", wait=True)["id"] for i in range(4)]
    suite = first.create_suite(agent_name, "big")
    first.add_case(suite["id"], run["id"])
    for run_id in small:
        first.add_case(suite["id"], run_id)
    exported = tmp_path / "big.jsonl"
    result = cli(live_url, "eval", "export", "big", "--agent", agent_name, "-o",
                 str(exported))
    assert result.exit_code == 0, result.output
    lines = exported.read_text().splitlines()
    assert len(lines[1]) > 2_000_000 and len(lines) == 6
    with serve(tmp_path_factory.mktemp("other")) as other_url:
        other = Client(other_url)
        other.create_agent("elsewhere")
        result = cli(other_url, "eval", "import", str(exported), "--agent", "elsewhere")
        assert result.exit_code == 0, result.output
        [imported] = other.list_suites(agent="elsewhere")
        assert imported["cases"] == 5
        done = other.run_suite(imported["id"], wait=True)
        assert done["summary"]["passed"] == 5, done["summary"]
        # The same cases through `eval add --file`, into a new suite.
        result = cli(other_url, "eval", "add", "again", "--file", str(exported),
                     "--agent", "elsewhere")
        assert result.exit_code == 0, result.output
        assert "added 5 case(s)" in result.output
        # A file with a case the daemon refuses: no suite is left made.
        bad = tmp_path / "bad.jsonl"
        bad.write_text(lines[2] + "\n" + json.dumps({"type": "case", "input": {}}) + "\n")
        result = cli(other_url, "eval", "add", "refused", "--file", str(bad), "--agent",
                     "elsewhere")
        assert result.exit_code == 1 and "body.cases[1]" in result.output, result.output
        result = cli(other_url, "eval", "import", str(exported.with_name("big.jsonl")),
                     "--agent", "elsewhere", "--name", "again")
        assert result.exit_code == 1 and "suite_exists" in result.output, result.output
        assert sorted(s["name"] for s in other.list_suites(agent="elsewhere")) == [
            "again", "big"]


def test_a_refused_case_leaves_no_new_suite_behind(cli: Invoke, live_url: str,
                                                   agent_name: str) -> None:
    """`eval add` makes its suite when it does not exist; when the daemon takes none of
    the cases (a run still in flight: 409) the suite it made goes again."""
    client = Client(live_url)
    client.create_agent(agent_name, settings={"script": [{"text": "slow",
                                                          "delay_ms": 60_000}]})
    run = client.send(agent_name, "k", "hi", wait=False)
    line = one_error_line(cli("eval", "add", "fresh", "--from-run", run["id"]))
    assert "once it has ended" in line, line
    assert client.list_suites(agent=agent_name) == []
    client.cancel_run(run["id"])
