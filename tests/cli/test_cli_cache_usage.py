"""Prompt-cache tokens from a provider's usage to what a user reads: the run (API and
`agentd run`), its price from the catalog, and the ledger (`agentd usage`). A real
daemon on a socket, real providers and SDKs, the stub LLM server's prompt caches."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cli.conftest import serve
from typer.testing import CliRunner, Result

from agentd.client import Client
from agentd.llm.catalog import Catalog
from agentd.llm.messages import Usage
from agentd.testing import StubLLMServer

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

#: Instructions long enough (about 2,000 tokens) for OpenAI to cache them.
INSTRUCTIONS = "You answer questions about the staff handbook, briefly and exactly. " * 120


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agentd-cache")


@pytest.fixture(scope="module")
def daemon(home: Path, stub: StubLLMServer) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUB_OPENAI_KEY", "sk-stub")
        mp.setenv("STUB_ANTHROPIC_KEY", "sk-ant-stub")
        with serve(home) as live:
            yield live


@pytest.fixture
def url(daemon: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The daemon's URL, with its home (and so its token) for the CLI and the client."""
    monkeypatch.setenv("AGENTD_HOME", str(home))
    monkeypatch.delenv("AGENTD_TOKEN", raising=False)
    return daemon


def cli(url: str, *args: str) -> Result:
    from agentd.cli import app

    # Wide enough for the usage table's every column on one line.
    result = CliRunner().invoke(app, ["--url", url, *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def send(client: Client, agent: str, text: str) -> dict[str, Any]:
    run = client.send(agent, "user:1", text)
    assert run["status"] == "completed", run.get("error")
    return run


def test_openai_cached_tokens_are_priced_and_shown(url: str, stub: StubLLMServer) -> None:
    with Client(url) as client:
        client.create_agent("reader", model="openai:gpt-4.1-mini", instructions=INSTRUCTIONS,
                            settings={"base_url": stub.base_url,
                                      "api_key_env": "STUB_OPENAI_KEY"})
        first = send(client, "reader", "Where is the refund policy?")
        second = send(client, "reader", "And the travel policy?")
    assert first["usage"]["cached_tokens"] == 0
    usage = second["usage"]
    # The instructions and the first turn were read back from the provider's cache...
    assert usage["cached_tokens"] > 1024 and usage["cached_tokens"] % 128 == 0
    assert usage["input_tokens"] - usage["cached_tokens"] < 256
    # ...and priced at the cached-input price: a quarter of the input price here.
    info = Catalog.load().get("openai:gpt-4.1-mini")
    assert info is not None and info.cached_input == info.input / 4
    counts = Usage.of(usage)
    assert usage["cost_usd"] == round(info.cost(counts), 6)
    assert usage["cost_usd"] < round(info.cost(Usage(
        input_tokens=counts.input_tokens, output_tokens=counts.output_tokens)), 6)

    shown = cli(url, "run", second["id"]).stdout
    assert re.search(rf"usage\s+{usage['input_tokens']} in, {usage['output_tokens']} out, "
                     rf"{usage['cached_tokens']} cached tokens, \$0\.0\d+", shown)
    report = cli(url, "usage", "--agent", "reader").stdout
    assert f"{usage['cached_tokens']:,} cached, 0 cache-write tokens" in report


def test_anthropic_cache_writes_are_priced_and_shown(url: str, stub: StubLLMServer) -> None:
    # As the Messages API reports a first turn that wrote its prefix to the cache: 2,900
    # written, 100 after the breakpoint, nothing read.
    stub.enqueue(text="Section 4.", usage={"input_tokens": 3000, "output_tokens": 10,
                                           "cached_tokens": 0, "cache_write_tokens": 2900})
    with Client(url) as client:
        client.create_agent("writer", model="anthropic:claude-sonnet-4-5",
                            instructions=INSTRUCTIONS, settings={"base_url": stub.root_url,
                                                         "api_key_env": "STUB_ANTHROPIC_KEY"})
        run = send(client, "writer", "Where is the refund policy?")
    usage = run["usage"]
    assert (usage["input_tokens"], usage["cached_tokens"], usage["cache_write_tokens"]) == (
        3000, 0, 2900)
    # $3 a million for the 100 plain tokens, $3.75 for the 2,900 written, $15 for output.
    assert usage["cost_usd"] == round((100 * 3.0 + 2900 * 3.75 + 10 * 15.0) / 1e6, 6)

    shown = cli(url, "run", run["id"]).stdout
    assert "3000 in, 10 out, 0 cached, 2900 cache-write tokens, $0.011325" in shown
    report = cli(url, "usage", "--agent", "writer", "--by", "model").stdout
    assert re.search(r"anthropic:claude-sonnet-4-5\s*│\s*1\s*│\s*3,000\s*│\s*10\s*│\s*0\s*│"
                     r"\s*2,900\s*│\s*\$0\.011325", report), report
    with Client(url) as client:
        assert client.usage(agent="writer")["totals"]["cache_write_tokens"] == 2900
