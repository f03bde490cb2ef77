"""The stub LLM server's prompt caches, driven by the official SDKs over real HTTP.

Each test states a provider rule (OpenAI's prompt caching guide, Anthropic's prompt
caching docs) and checks the usage the SDK parses: what a request would read from or
write to the cache in production, it reads and writes here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from agentd.testing import CacheStats, StubLLMServer

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

#: About 2,500 tokens at the stub's 4 bytes a token: above every minimum but Opus 4.5's.
LONG = "Answer briefly and cite the handbook section you used. " * 180


class Clock:
    """Seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stub(clock: Clock) -> Iterator[StubLLMServer]:
    with StubLLMServer(clock=clock) as server:
        yield server


@pytest.fixture
def oai(stub: StubLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=stub.base_url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def claude(stub: StubLLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="sk-ant-test", base_url=stub.root_url,
                             max_retries=0) as sdk:
        yield sdk


# --- OpenAI -----------------------------------------------------------------------


def chat(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any
         ) -> openai.types.CompletionUsage:
    answer = client.chat.completions.create(model="gpt-4.1-mini", messages=messages,  # type: ignore[arg-type]
                                            **extra)
    assert answer.usage is not None
    return answer.usage


def cached(usage: openai.types.CompletionUsage) -> int:
    assert usage.prompt_tokens_details is not None
    return usage.prompt_tokens_details.cached_tokens or 0


def system(text: str = LONG) -> dict[str, Any]:
    return {"role": "system", "content": text}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_openai_caches_the_shared_prefix_in_128_token_steps(oai: openai.OpenAI) -> None:
    first = chat(oai, [system(), user("Where is the refund policy?")])
    second = chat(oai, [system(), user("Where is the travel policy?")])
    assert cached(first) == 0  # nothing was cached before
    # The two share everything but the end of the question: all of it is read back,
    # rounded down to 1,024 + 128·k tokens.
    assert (cached(second) - 1024) % 128 == 0
    assert second.prompt_tokens - 128 - 8 < cached(second) <= second.prompt_tokens


def test_openai_caches_nothing_under_1024_tokens(oai: openai.OpenAI) -> None:
    short = [system("Be brief. " * 300), user("hello")]
    assert chat(oai, short).prompt_tokens < 1024
    assert cached(chat(oai, short)) == 0


def test_openai_a_changed_early_message_makes_everything_after_it_miss(
    oai: openai.OpenAI
) -> None:
    history = [system(), user("Summarise chapter one. " * 120), {"role": "assistant",
               "content": "Chapter one is about refunds."}, user("And chapter two?")]
    whole = chat(oai, history)
    assert cached(chat(oai, history)) > whole.prompt_tokens - 128
    edited = [history[0], user("Summarise chapter ONE. " * 120), *history[2:]]
    only_system = chat(oai, [system()]).prompt_tokens
    # Read: the system prompt at most (the edit is in the first user message)...
    assert 1024 <= cached(chat(oai, edited)) <= only_system
    # ...and nothing once the system prompt itself changes.
    assert cached(chat(oai, [system("Be thorough. " + LONG), *history[1:]])) == 0


def test_openai_tools_are_part_of_the_prefix(oai: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find a page.",
                                             "parameters": {"type": "object"}}}
    other = {**tool, "function": {**tool["function"], "description": "Find a section."}}
    chat(oai, [system(), user("hi")], tools=[tool])
    assert cached(chat(oai, [system(), user("hi")], tools=[tool])) > 1024
    assert cached(chat(oai, [system(), user("hi")], tools=[other])) == 0


def test_openai_prompt_cache_key_routes_to_its_own_cache(
    oai: openai.OpenAI, stub: StubLLMServer
) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages, prompt_cache_key="session-a")
    assert cached(chat(oai, messages, prompt_cache_key="session-a")) > 1024
    # Another key (or none) is routed elsewhere: the prefix is not cached there.
    assert cached(chat(oai, messages, prompt_cache_key="session-b")) == 0
    assert cached(chat(oai, messages)) == 0
    assert stub.cache_stats.prompt_cache_keys == ["session-a", "session-b"]
    assert [r.prompt_cache_key for r in stub.cache_results] == [
        "session-a", "session-a", "session-b", None]


def test_openai_entries_expire_after_five_idle_minutes(
    oai: openai.OpenAI, clock: Clock
) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages)
    clock.now += 290
    assert cached(chat(oai, messages)) > 1024  # still there, and used again
    clock.now += 290
    assert cached(chat(oai, messages)) > 1024  # the use above kept it
    clock.now += 301
    assert cached(chat(oai, messages)) == 0


def test_openai_entries_live_an_hour_at_most_unless_retained_24h(
    oai: openai.OpenAI, clock: Clock
) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages)
    hits = []
    for _ in range(15):  # used every 4 minutes: kept alive, but an hour at most
        clock.now += 240
        hits.append(cached(chat(oai, messages)))
    assert all(hit > 1024 for hit in hits[:14]) and hits[14] == 0  # the 15th is at 60 min
    retained = [system("Retained. " + LONG), user("hi")]
    chat(oai, retained, prompt_cache_retention="24h")
    clock.now += 20 * 3600
    assert cached(chat(oai, retained, prompt_cache_retention="24h")) > 1024


def test_openai_stream_reports_cached_tokens(oai: openai.OpenAI) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages)
    stream = oai.chat.completions.create(model="gpt-4.1-mini", messages=messages,  # type: ignore[arg-type]
                                         stream=True, stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1 and cached(usage[0]) > 1024


# --- Anthropic --------------------------------------------------------------------

EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


def ask(client: anthropic.Anthropic, messages: list[dict[str, Any]], *,
        model: str = "claude-sonnet-4-5", **extra: Any) -> anthropic.types.Usage:
    return client.messages.create(model=model, max_tokens=64, messages=messages,  # type: ignore[arg-type]
                                  **extra).usage


def total(usage: anthropic.types.Usage) -> int:
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


def marked_system(text: str = LONG, **control: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {**EPHEMERAL, **control}}]


def test_anthropic_caches_nothing_without_a_breakpoint(claude: anthropic.Anthropic) -> None:
    for _ in range(2):
        usage = ask(claude, [user("hi")], system=LONG)
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)
        assert usage.input_tokens > 1024


def test_anthropic_writes_then_reads_up_to_the_breakpoint(claude: anthropic.Anthropic) -> None:
    first = ask(claude, [user("Where is the refund policy?")], system=marked_system())
    second = ask(claude, [user("And the travel policy, please?")], system=marked_system())
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens is not None
    assert first.cache_creation_input_tokens > 1024
    # The same prefix read back; input_tokens is what follows the breakpoint.
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert 0 < second.input_tokens < 30
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens


@pytest.mark.parametrize(("model", "written"), [
    ("claude-sonnet-4-5-20250929", True),  # 1,024 tokens at least
    ("claude-3-5-haiku-latest", True),  # 2,048
    ("claude-haiku-4-5", False),  # 4,096
    ("claude-opus-4-5", False),  # 4,096
])
def test_anthropic_minimum_cacheable_length_per_model(
    claude: anthropic.Anthropic, model: str, written: bool
) -> None:
    usages = [ask(claude, [user("hi")], model=model, system=marked_system()) for _ in range(2)]
    assert 2048 < total(usages[0]) < 4096
    assert bool(usages[0].cache_creation_input_tokens) is written
    assert bool(usages[1].cache_read_input_tokens) is written


def grow(claude: anthropic.Anthropic, turns: int, **extra: Any) -> list[anthropic.types.Usage]:
    """A conversation of ``turns`` questions, each request the last one plus the answer
    and a new question, with the top-level (automatic) breakpoint."""
    messages: list[dict[str, Any]] = []
    usages = []
    for n in range(turns):
        messages.append(user(f"Question {n}: what does section {n} of the handbook say?"))
        response = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                          system=LONG, messages=messages,  # type: ignore[arg-type]
                                          cache_control=EPHEMERAL, **extra)  # type: ignore[arg-type]
        usages.append(response.usage)
        messages.append({"role": "assistant", "content": response.content[0].text})  # type: ignore[union-attr]
    return usages


def test_anthropic_automatic_breakpoint_moves_with_the_conversation(
    claude: anthropic.Anthropic, stub: StubLLMServer
) -> None:
    usages = grow(claude, 6)
    assert usages[0].cache_read_input_tokens == 0
    for before, after in itertools.pairwise(usages):
        # Each turn reads all the last one read or wrote, and writes only what is new.
        assert after.cache_read_input_tokens == (before.cache_read_input_tokens or 0) + (
            before.cache_creation_input_tokens or 0)
        assert after.cache_creation_input_tokens == total(after) - total(before)
        assert after.input_tokens == 0  # everything is before the breakpoint
    assert all(r.breakpoints == 1 for r in stub.cache_results)
    stats = stub.cache_stats
    assert stats.hits == 5 and stats.cached_share > 0.8


def test_anthropic_looks_back_20_blocks_from_a_breakpoint(claude: anthropic.Anthropic) -> None:
    def many(start: int) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "text", "text": f"note {i}"}
                                            for i in range(start, start + 25)]}

    first = [many(0)]
    ask(claude, first, system=LONG, cache_control=EPHEMERAL)
    # 26 blocks later (an answer and 25 notes): the entry is beyond the lookback.
    second = [*first, {"role": "assistant", "content": "noted"}, many(25)]
    assert ask(claude, second, system=LONG, cache_control=EPHEMERAL).cache_read_input_tokens == 0
    # Other notes, and a breakpoint near the first request's (on the answer): found.
    third = [*first, {"role": "assistant", "content": [
        {"type": "text", "text": "noted", "cache_control": EPHEMERAL}]}, many(50)]
    usage = ask(claude, third, system=LONG, cache_control=EPHEMERAL)
    assert usage.cache_read_input_tokens == total(ask(claude, first, system=LONG))


def test_anthropic_a_changed_early_message_makes_everything_after_it_miss(
    claude: anthropic.Anthropic
) -> None:
    history = [user("Summarise chapter one."), {"role": "assistant", "content": "Refunds."},
               user("And chapter two?")]
    ask(claude, history, system=marked_system(), cache_control=EPHEMERAL)
    assert ask(claude, history, system=marked_system(),
               cache_control=EPHEMERAL).cache_creation_input_tokens == 0
    edited = [user("Summarise chapter 1."), *history[1:]]
    usage = ask(claude, edited, system=marked_system(), cache_control=EPHEMERAL)
    # The system prompt (its own breakpoint) is read; the messages are written again.
    system_only = ask(claude, [user("x")], system=marked_system()).cache_read_input_tokens
    assert usage.cache_read_input_tokens == system_only
    assert usage.cache_creation_input_tokens == total(usage) - system_only


def test_anthropic_tool_definitions_and_tool_choice_invalidate_what_follows(
    claude: anthropic.Anthropic
) -> None:
    tool = {"name": "lookup", "description": "Find a page.",
            "input_schema": {"type": "object"}}
    messages = [user("hi")]
    ask(claude, messages, system=marked_system(), tools=[tool], cache_control=EPHEMERAL)
    same = ask(claude, messages, system=marked_system(), tools=[tool], cache_control=EPHEMERAL)
    assert same.cache_creation_input_tokens == 0
    # tool_choice changes the messages' prefix only: the system's entry still reads.
    choice = ask(claude, messages, system=marked_system(), tools=[tool],
                 cache_control=EPHEMERAL, tool_choice={"type": "any"})
    assert 0 < (choice.cache_read_input_tokens or 0) < total(same)
    assert choice.cache_creation_input_tokens == total(same) - choice.cache_read_input_tokens
    # A changed tool definition invalidates everything.
    changed = ask(claude, messages, system=marked_system(), cache_control=EPHEMERAL,
                  tools=[{**tool, "description": "Find a section."}])
    assert changed.cache_read_input_tokens == 0


def test_anthropic_a_breakpoint_on_the_last_tool_caches_the_tools(
    claude: anthropic.Anthropic
) -> None:
    tools = [{"name": f"tool_{i}", "description": LONG[:4000], "input_schema": {
        "type": "object"}} for i in range(2)]
    tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
    first = ask(claude, [user("hi")], system="Be brief.", tools=tools)
    second = ask(claude, [user("another question")], system="Be thorough.", tools=tools)
    # The tools come first: their entry is read whatever follows them.
    assert first.cache_creation_input_tokens and first.cache_creation_input_tokens > 1024
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.input_tokens == total(second) - (second.cache_read_input_tokens or 0)


@pytest.mark.parametrize(("system_blocks", "extra", "message"), [
    ([{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(5)],
     {}, "A maximum of 4 blocks with cache_control may be provided. Found 5."),
    ([{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(4)],
     {"cache_control": EPHEMERAL},
     "A maximum of 4 blocks with cache_control may be provided. Found 5."),
    ([{"type": "text", "text": "a", "cache_control": EPHEMERAL},
      {"type": "text", "text": "b", "cache_control": {**EPHEMERAL, "ttl": "1h"}}], {},
     "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"),
], ids=["five explicit", "four explicit and the automatic one", "1h after 5m"])
def test_anthropic_refuses_breakpoints_as_the_api_does(
    claude: anthropic.Anthropic, stub: StubLLMServer, system_blocks: list[dict[str, Any]],
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message.replace("(", r"\(")) as info:
        ask(claude, [user("hi")], system=system_blocks, **extra)
    assert info.value.status_code == 400
    assert stub.cache_results == []  # refused before anything was read or written


def test_anthropic_automatic_breakpoint_on_a_marked_block_takes_no_slot(
    claude: anthropic.Anthropic, stub: StubLLMServer
) -> None:
    marked = [{"type": "text", "text": f"part {i} " + LONG, "cache_control": EPHEMERAL}
              for i in range(2)]
    last = [{"role": "user", "content": [{"type": "text", "text": "hi",
                                          "cache_control": EPHEMERAL}]}]
    usage = ask(claude, last, system=marked, cache_control=EPHEMERAL)
    assert usage.cache_creation_input_tokens == total(usage)  # up to the last block
    assert stub.cache_results[-1].breakpoints == 3
    # The same block marked with another TTL is refused.
    with pytest.raises(anthropic.BadRequestError, match="differs from the ttl"):
        ask(claude, last, system=marked, cache_control={**EPHEMERAL, "ttl": "1h"})


def test_anthropic_entries_expire_after_their_ttl(
    claude: anthropic.Anthropic, clock: Clock
) -> None:
    short = marked_system()
    ask(claude, [user("hi")], system=short)
    clock.now += 299
    assert ask(claude, [user("hi")], system=short).cache_read_input_tokens  # and refreshed
    clock.now += 299
    assert ask(claude, [user("hi")], system=short).cache_read_input_tokens
    clock.now += 301
    expired = ask(claude, [user("hi")], system=short)
    assert expired.cache_read_input_tokens == 0 and expired.cache_creation_input_tokens

    hour = marked_system("An hour. " + LONG, ttl="1h")
    written = ask(claude, [user("hi")], system=hour)
    assert written.cache_creation is not None
    assert written.cache_creation.ephemeral_1h_input_tokens == written.cache_creation_input_tokens
    clock.now += 3500
    assert ask(claude, [user("hi")], system=hour).cache_read_input_tokens


def test_anthropic_stream_reports_the_cache_in_message_start(
    claude: anthropic.Anthropic
) -> None:
    ask(claude, [user("hi")], system=marked_system())
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[user("hi")],  # type: ignore[list-item]
                                system=marked_system()) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens and final.usage.cache_creation_input_tokens == 0


# --- both ---------------------------------------------------------------------------


def test_a_queued_usage_is_reported_as_given(
    oai: openai.OpenAI, claude: anthropic.Anthropic, stub: StubLLMServer
) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages)
    stub.enqueue(text="ok", usage={"input_tokens": 50, "output_tokens": 5})
    usage = chat(oai, messages)
    assert (usage.prompt_tokens, cached(usage)) == (50, 0)
    assert cached(chat(oai, messages)) > 1024  # the cache was still read and written


def test_clear_empties_the_caches_and_the_switch_turns_them_off(
    oai: openai.OpenAI, stub: StubLLMServer
) -> None:
    messages = [system(), user("hi")]
    chat(oai, messages)
    stub.clear()
    assert stub.cache_stats == CacheStats()
    assert cached(chat(oai, messages)) == 0
    with StubLLMServer(prompt_cache=False) as off, openai.OpenAI(
            api_key="sk-test", base_url=off.base_url, max_retries=0) as client:
        counts = [chat(client, messages) for _ in range(2)]
        assert [cached(u) for u in counts] == [0, 0]
        assert counts[0].prompt_tokens == counts[1].prompt_tokens > 1024
