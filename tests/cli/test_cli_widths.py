"""The CLI's tables at 80 columns, as a new user's terminal has them: ids whole (they
are to be copied into the next command), headers whole, memory content readable. At
80 columns `agentd runs` cut run ids, `schedule list` shrank its headers to "…", and
`memory search` showed 16 characters of content."""

from __future__ import annotations

import json

import pytest
from tests.cli.conftest import Invoke


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def _lines(result: object) -> list[str]:
    output: str = result.stdout  # type: ignore[attr-defined]
    assert result.exit_code == 0, output  # type: ignore[attr-defined]
    lines = output.splitlines()
    assert all(len(line) <= 80 for line in lines), output
    return lines


def test_runs_keep_their_ids_whole(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    sent = json.loads(cli("send", agent_name, "hello", "--session", "a-long-session-key",
                          "--json").stdout)
    lines = _lines(cli("runs", "--agent", agent_name))
    assert lines[0].split()[:1] == ["RUN"] and "STATUS" in lines[0], lines
    assert any(line.startswith(sent["id"] + " ") and "completed" in line
               for line in lines), lines


def test_schedules_keep_their_headers_and_ids(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    made = cli("schedule", "add", agent_name,
               "check the inbox and summarise anything new in it", "--every", "3600",
               "--json")
    assert made.exit_code == 0, made.output
    schedule = json.loads(made.stdout)
    lines = _lines(cli("schedule", "list", agent_name))
    assert lines[0].split("┃")[0].strip() == "ID"
    # (One agent's: no AGENT column at this width.)
    assert [h.strip() for h in lines[0].split("┃")][1:4] == ["WHEN", "NEXT (UTC)",
                                                             "STATE"], lines[0]
    assert sum(line.startswith(schedule["id"] + " ") for line in lines) == 1, lines


def test_memory_search_shows_the_content(cli: Invoke, agent_name: str) -> None:
    cli("create", agent_name)
    text = "The launch moved to the second week of December: the vendor slipped."
    assert cli("memory", "remember", agent_name, text, "--tag", "project").exit_code == 0
    lines = _lines(cli("memory", "search", agent_name, "launch vendor"))
    row = next(line for line in lines if "The launch" in line)
    assert "The launch moved to the second week" in row, lines
