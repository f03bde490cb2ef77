"""The model catalog: packaged data, the home override, and how the runtime uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import InvalidInput, InvalidModel
from agentd.llm.catalog import Catalog, estimate_tokens
from agentd.llm.messages import ModelRequest, Usage, UserMessage


def test_the_packaged_catalog_is_valid_and_finds_dated_names() -> None:
    catalog = Catalog.load()
    assert catalog.as_of and len(catalog.models) >= 15
    for provider in ("openai", "anthropic", "gemini", "deepseek"):
        assert any(spec.startswith(f"{provider}:") for spec in catalog.models), provider
    for info in catalog.models.values():
        assert info.max_output_tokens <= info.context_window, info
        assert info.cached_input is None or info.cached_input <= info.input, info
        # A write costs more than plain input where a provider charges one (Anthropic).
        assert (info.cache_write is not None) == info.spec.startswith("anthropic:"), info
        assert info.cache_write is None or info.cache_write == pytest.approx(1.25 * info.input)
    sonnet = catalog.get("anthropic:claude-sonnet-4-5-20250929")
    assert sonnet is not None and sonnet.spec == "anthropic:claude-sonnet-4-5"
    dated = catalog.get("openai:gpt-4.1-mini-2025-04-14")
    assert dated is not None and dated.spec == "openai:gpt-4.1-mini"
    assert catalog.get("openai:no-such-model") is None
    assert catalog.get("scripted") is None


def test_cost_prices_cached_input_apart() -> None:
    info = Catalog.load().get("openai:gpt-4.1-mini")
    assert info is not None
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=250_000)
    expected = 0.75 * info.input + 0.25 * (info.cached_input or 0) + info.output
    assert info.cost(usage) == pytest.approx(expected)
    assert info.cost(Usage()) == 0


def test_anthropic_cache_writes_cost_more_and_reads_less() -> None:
    """Claude Sonnet 4.5 at list price: $3 input, $3.75 a 5-minute cache write, $0.30 a
    cache read, $15 output per million tokens."""
    sonnet = Catalog.load().get("anthropic:claude-sonnet-4-5")
    assert sonnet is not None
    usage = Usage(input_tokens=10_000, cached_tokens=8_000, cache_write_tokens=1_500,
                  output_tokens=200)
    # 500 uncached, 8,000 read, 1,500 written, 200 out.
    expected = (500 * 3.0 + 8_000 * 0.3 + 1_500 * 3.75 + 200 * 15.0) / 1_000_000
    assert sonnet.cost(usage) == pytest.approx(expected) == pytest.approx(0.0125250)
    # The same tokens with no caching at all, and a first turn that only writes.
    assert sonnet.cost(Usage(input_tokens=10_000, output_tokens=200)) == pytest.approx(0.033)
    first = Usage(input_tokens=10_000, cache_write_tokens=9_990, output_tokens=200)
    assert sonnet.cost(first) == pytest.approx((10 * 3.0 + 9_990 * 3.75 + 3_000) / 1e6)


def test_openai_cache_reads_are_cheaper_and_writes_cost_nothing_extra() -> None:
    mini = Catalog.load().get("openai:gpt-4.1-mini")
    assert mini is not None and mini.cache_write is None
    usage = Usage(input_tokens=10_000, cached_tokens=9_088, output_tokens=100)
    assert mini.cost(usage) == pytest.approx((912 * 0.4 + 9_088 * 0.1 + 100 * 1.6) / 1e6)
    # A count of written tokens (some OpenAI-compatible servers report one) is input.
    written = Usage(input_tokens=10_000, cache_write_tokens=4_000, output_tokens=100)
    assert mini.cost(written) == mini.cost(Usage(input_tokens=10_000, output_tokens=100))


def test_cached_and_written_counts_above_the_input_are_capped() -> None:
    sonnet = Catalog.load().get("anthropic:claude-sonnet-4-5")
    assert sonnet is not None
    odd = Usage(input_tokens=1_000, cached_tokens=800, cache_write_tokens=900)
    assert sonnet.cost(odd) == pytest.approx((800 * 0.3 + 200 * 3.75) / 1e6)


def test_the_home_file_overrides_and_extends(tmp_path: Path) -> None:
    override = tmp_path / "models.toml"
    override.write_text(
        'as_of = "2030-01-01"\n'
        '[models."openai:gpt-4.1-mini"]\n'
        "context_window = 1000\nmax_output_tokens = 100\ninput = 1\noutput = 2\n"
        '[models."local:tiny"]\n'
        "context_window = 4096\nmax_output_tokens = 512\ninput = 0\noutput = 0\n"
        '[models."local:cached"]\n'
        "context_window = 4096\nmax_output_tokens = 512\ninput = 2\noutput = 4\n"
        "cached_input = 0.2\ncache_write = 2.5\n")
    catalog = Catalog.load(override)
    mini = catalog.get("openai:gpt-4.1-mini")
    assert mini is not None and (mini.context_window, mini.cached_input) == (1000, None)
    local = catalog.get("local:cached")
    assert local is not None and (local.cached_input, local.cache_write) == (0.2, 2.5)
    assert catalog.get("local:tiny") is not None
    assert catalog.get("openai:gpt-4.1") is not None  # the rest is kept
    assert catalog.as_of == "2030-01-01"
    assert Catalog.load(tmp_path / "absent.toml").get("local:tiny") is None


@pytest.mark.parametrize(("text", "named"), [
    ("[models.\"a:b\"]\ncontext_window = 0\nmax_output_tokens = 1\ninput = 1\noutput = 1\n",
     "context_window"),
    ("[models.\"a:b\"]\ncontext_window = 10\nmax_output_tokens = 1\ninput = -1\noutput = 1\n",
     "input"),
    ("[models.\"a:b\"]\ncontext_window = 10\nmax_output_tokens = 1\ninput = 1\noutput = 1\n"
     "price = 3\n", "price"),
    ("[models.\"a:b\"]\ncontext_window = 10\nmax_output_tokens = 1\ninput = 1\noutput = 1\n"
     "cache_write = \"more\"\n", "cache_write"),
    ("[models.nocolon]\ncontext_window = 10\nmax_output_tokens = 1\ninput = 1\noutput = 1\n",
     "provider:model"),
    ("this is not toml [", "TOML"),
])
def test_a_bad_home_file_is_refused_naming_the_problem(tmp_path: Path, text: str,
                                                      named: str) -> None:
    override = tmp_path / "models.toml"
    override.write_text(text)
    with pytest.raises(InvalidInput) as info:
        Catalog.load(override)
    assert named in info.value.message and str(override) in info.value.message


def test_estimate_counts_system_messages_and_tools() -> None:
    small = estimate_tokens(ModelRequest(system="s", messages=[UserMessage(content="hi")]))
    big = estimate_tokens(ModelRequest(system="s" * 4000,
                                       messages=[UserMessage(content="hi " * 2000)]))
    assert 0 <= small < 50 and 2000 <= big <= 4000


async def _runtime(settings: Settings, store_url: str, catalog: str) -> Runtime:
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text(catalog)
    settings.database_url = store_url
    return await Runtime.open(settings)


TINY = ('[models."scripted:tiny"]\ncontext_window = 300\nmax_output_tokens = 50\n'
        "input = 2\ncached_input = 1\noutput = 4\n")


async def test_runs_are_priced_and_what_cannot_fit_is_refused(settings: Settings,
                                                              store_url: str) -> None:
    rt = await _runtime(settings, store_url, TINY)
    try:
        # (Automatic compaction, which would summarise instead of trimming, is off:
        # tests/runtime/test_compaction.py covers it.)
        await rt.create_agent(name="a", model="scripted:tiny",
                              settings={"memory": {"compaction": {"auto": False}}})
        sent = await rt.send("a", "k", "hello")
        run = await rt.wait(sent.run.id)
        assert run.status == "completed"
        usage = Usage(input_tokens=int(run.usage["input_tokens"]),
                      output_tokens=int(run.usage["output_tokens"]),
                      cached_tokens=int(run.usage["cached_tokens"]))
        info = rt.catalog.get("scripted:tiny")
        assert info is not None and run.usage["cost_usd"] == round(info.cost(usage), 6) > 0
        events = await rt.read_events(sent.session.id)
        assert events[-1].data["usage"]["cost_usd"] == run.usage["cost_usd"]

        # A long conversation is trimmed to fit, oldest whole turns first; the log
        # keeps everything and the step says what was left out.
        for i in range(6):
            turn = await rt.wait((await rt.send("a", "long", f"turn {i} " + "w " * 60)).run.id)
            assert turn.status == "completed", turn.error
        _, long = await rt.get_session("a", "long")
        steps = [e for e in await rt.read_events(long.id) if e.kind == "message.assistant"]
        trims = [s.data["context_trimmed"] for s in steps if "context_trimmed" in s.data]
        assert trims and all(t["dropped_messages"] > 0 for t in trims)
        assert all(t["estimated_tokens"] <= 300 for t in trims)
        assert "context_trimmed" not in steps[0].data
        assert len([e for e in await rt.read_events(long.id) if e.kind == "message.user"]) == 6

        # A latest turn of about 500 tokens cannot fit a 300-token window at all:
        # refused before any model call, and the run says why.
        too_long = await rt.send("a", "k", "word " * 400)
        failed = await rt.wait(too_long.run.id)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["code"] == "context_overflow"
        assert failed.error["details"]["context_window"] == 300

        # A model the catalog does not know is neither priced nor checked.
        await rt.create_agent(name="b", model="scripted")
        plain = await rt.wait((await rt.send("b", "k", "word " * 400)).run.id)
        assert plain.status == "completed" and "cost_usd" not in plain.usage

        with pytest.raises(InvalidModel) as info_error:
            await rt.create_agent(name="c", model="scripted:tiny", settings={"max_tokens": 51})
        assert "output limit" in info_error.value.message
        assert info_error.value.details["errors"][0]["field"] == "body.settings.max_tokens"
        await rt.create_agent(name="d", model="scripted:tiny", settings={"max_tokens": 50})
    finally:
        await rt.close()
