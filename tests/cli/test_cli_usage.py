"""`agentd usage` against the real app over a socket (agentd.testing.live.LiveServer), with a usage
ledger seeded before the daemon starts: steps committed with a charge on real
sessions, on fixed UTC days."""

from __future__ import annotations

import asyncio
import calendar
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agentd.client import Client
from agentd.store import NewEvent, RunUpdate, UsageCharge, open_store
from agentd.testing import FakeClock
from agentd.testing.live import LiveServer

runner = CliRunner()

#: (day, agent, tenant, model, input, output, cached, cache-written, cost)
CHARGES = [
    ("2024-01-31", "alpha", "acme", "m-large", 1000, 100, 0, 0, 0.0125),
    ("2024-02-01", "alpha", "acme", "m-small", 2000, 200, 50, 1200, 0.001),
    ("2024-02-01", "beta", "", "m-large", 3000, 300, 0, 0, 0.5),
    ("2024-02-29", "beta", "", "m-large", 4000, 400, 0, 0, 1.25),
]


async def _seed(home: Path) -> None:
    clock = FakeClock()
    store = await open_store(f"sqlite:///{home / 'agentd.db'}", clock=clock)
    try:
        ids = {name: (await store.create_agent(name=name, model="scripted", instructions="",
                                               tools=[], settings={})).id
               for name in ("alpha", "beta")}
        for day, agent, tenant, model, inp, outp, cached, written, cost in CHARGES:
            y, m, d = (int(p) for p in day.split("-"))
            clock.now = float(calendar.timegm((y, m, d, 12, 0, 0)))
            accepted = await store.accept_message(agent_id=ids[agent], key="k", content="hi")
            await store.append(
                accepted.session.id,
                [NewEvent(kind="run.completed", run_id=accepted.run.id, data={})],
                run_id=accepted.run.id, run=RunUpdate(status="completed", finished=True),
                usage=UsageCharge(agent_id=ids[agent], agent=agent, tenant=tenant,
                                  model=model, input_tokens=inp, output_tokens=outp,
                                  cached_tokens=cached, cache_write_tokens=written,
                                  cost_usd=cost))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def usage_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from agentd.config import Settings

    home = tmp_path_factory.mktemp("agentd-usage")
    with pytest.MonkeyPatch.context() as mp:
        # No token, no agentd.toml or env from the machine running the tests.
        mp.setenv("AGENTD_HOME", str(home))
        for var in ("AGENTD_TOKEN", "AGENTD_TOKENS", "AGENTD_URL", "AGENTD_DATABASE_URL"):
            mp.delenv(var, raising=False)
        asyncio.run(_seed(home))
        settings = Settings(home=home, demo_agent=False, tokens=[TOKEN],
                            database_url=f"sqlite:///{home / 'agentd.db'}")
        with LiveServer(settings) as server:
            yield server.url


TOKEN = "usage-test-token-0123456789"


def cli(url: str, *args: str) -> Result:
    from agentd.cli import app

    return runner.invoke(app, ["--url", url, "--token", TOKEN, "usage", *args])


def cells(result: Result) -> list[list[str]]:
    """The table's lines (header first) as lists of cells."""
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines()[:-1] if "━" not in line]
    return [[c.strip() for c in line.replace("┃", "│").split("│")] for line in lines]


def test_usage_by_agent_and_model(usage_url: str) -> None:
    result = cli(usage_url, "--by", "agent,model")
    assert cells(result) == [
        ["AGENT", "MODEL", "CALLS", "INPUT", "OUTPUT", "CACHED", "CACHE WRITE", "COST"],
        ["alpha", "m-large", "1", "1,000", "100", "0", "0", "$0.0125"],
        ["alpha", "m-small", "1", "2,000", "200", "50", "1,200", "$0.001"],
        ["beta", "m-large", "2", "7,000", "700", "0", "0", "$1.75"],
    ]
    assert result.stdout.splitlines()[-1] == (
        "total: 4 calls, 10,000 input, 1,000 output, 50 cached, 1,200 cache-write tokens, "
        "$1.7635")


def test_usage_without_groups_prints_the_totals(usage_url: str) -> None:
    result = cli(usage_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "total: 4 calls, 10,000 input, 1,000 output, 50 cached, 1,200 cache-write tokens, "
        "$1.7635")


def test_usage_filters_and_months(usage_url: str) -> None:
    result = cli(usage_url, "--by", "month,tenant", "--since", "2024-02-01",
                 "--until", "2024-02-29")
    assert cells(result) == [
        ["MONTH", "TENANT", "CALLS", "INPUT", "OUTPUT", "CACHED", "CACHE WRITE", "COST"],
        ["2024-02", "-", "2", "7,000", "700", "0", "0", "$1.75"],
        ["2024-02", "acme", "1", "2,000", "200", "50", "1,200", "$0.001"],
    ]
    assert result.stdout.splitlines()[-1].endswith(
        "$1.751 (since 2024-02-01, until 2024-02-29)")

    result = cli(usage_url, "--agent", "alpha", "--by", "day")
    assert [row[0] for row in cells(result)] == ["DAY", "2024-01-31", "2024-02-01"]
    result = cli(usage_url, "--tenant", "acme")
    assert "total: 2 calls, 3,000 input" in result.stdout

    result = cli(usage_url, "--agent", "nobody", "--by", "agent")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "no usage recorded for this selection",
        "total: 0 calls, 0 input, 0 output, 0 cached, 0 cache-write tokens, $0.00",
    ]


def test_usage_json_is_the_api_report(usage_url: str) -> None:
    result = cli(usage_url, "--by", "agent", "--since", "2024-02-01", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    with Client(usage_url, token=TOKEN) as client:
        assert report == client.usage(by=["agent"], since="2024-02-01")
    assert report["since"] == "2024-02-01" and report["until"] is None
    assert [(r["agent"], r["calls"]) for r in report["usage"]] == [("alpha", 1), ("beta", 2)]
    assert report["totals"]["calls"] == 3
    assert [(r["agent"], r["cache_write_tokens"]) for r in report["usage"]] == [
        ("alpha", 1200), ("beta", 0)]


@pytest.mark.parametrize(("args", "words"), [
    (("--since", "2024-02-30"), "since must be a date, YYYY-MM-DD"),
    (("--until", "tomorrow"), "until must be a date, YYYY-MM-DD"),
    (("--since", "2024-03-01", "--until", "2024-02-01"), "after until"),
    (("--by", "agent,week"), "cannot group usage by 'week'"),
])
def test_bad_input_is_one_error_line(usage_url: str, args: tuple[str, ...], words: str
                                     ) -> None:
    result = cli(usage_url, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert words in lines[0] and "[invalid_input]" in lines[0]
