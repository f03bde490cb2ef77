"""The stub LLM server's capacity model, over real HTTP with the real SDKs."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import openai
import pytest
from tests.conftest import eventually

from agentd.testing import Capacity, FakeClock, StubLLMServer, StubStats


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    """The stub's clock: the rpm and tpm buckets refill only when a test moves it, so
    no bucket fills between two calls on a slow machine."""
    return FakeClock()


@pytest.fixture(scope="module")
def stub_server(clock: FakeClock) -> Iterator[StubLLMServer]:
    with StubLLMServer(clock=clock.monotonic) as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer) -> Iterator[StubLLMServer]:
    assert stub_server.stats.in_flight == 0, "a call from an earlier test is still open"
    stub_server.capacity = None
    stub_server.clear()
    stub_server.reset_stats()
    yield stub_server
    stub_server.capacity = None


@pytest.fixture
async def client(stub: StubLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=stub.base_url,
                                  max_retries=0) as sdk:
        yield sdk


async def ask(client: openai.AsyncOpenAI, *, max_tokens: int = 16, stream: bool = False) -> str:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hi"}]
    if stream:
        chunks = await client.chat.completions.create(
            model="stub-model", messages=messages, max_completion_tokens=max_tokens,
            stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    answer = await client.chat.completions.create(
        model="stub-model", messages=messages, max_completion_tokens=max_tokens)
    return answer.choices[0].message.content or ""


async def refusal(client: openai.AsyncOpenAI, *, max_tokens: int = 16) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as info:
        await ask(client, max_tokens=max_tokens)
    return info.value


def rejected(**by: int) -> dict[str, int]:
    return {"concurrency": 0, "rpm": 0, "tpm": 0, **by}


# --- concurrency and latency --------------------------------------------------------


async def test_concurrency_admits_that_many_and_refuses_the_rest(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    # An hour's latency holds both slots for as long as the test needs them; their
    # clients hang up at the end (a shorter wait could end before the third call came).
    stub.capacity = Capacity(concurrency=2, latency_s=3600)
    admitted = [asyncio.create_task(ask(client)) for _ in range(2)]
    await eventually(lambda: stub.stats.in_flight == 2)
    errors = await asyncio.gather(*[refusal(client) for _ in range(3)])
    for error in errors:
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        assert int(error.response.headers["retry-after"]) >= 1
    assert not any(task.done() for task in admitted)
    for task in admitted:
        task.cancel()
    await asyncio.gather(*admitted, return_exceptions=True)
    await eventually(lambda: stub.stats.in_flight == 0)
    stats = stub.stats
    assert (stats.accepted, stats.rejected, stats.max_in_flight) == (2, 3, 2)
    assert stats.rejected_by == rejected(concurrency=3)


async def test_latency_holds_the_slot_before_the_first_byte(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    # An hour's wait, so the refusal below cannot race the first call's answer on a
    # loaded machine (with 0.2 s it once did, in CI); its client then hangs up.
    stub.capacity = Capacity(concurrency=1, latency_s=3600)
    first = asyncio.create_task(ask(client, stream=True))
    await eventually(lambda: stub.stats.in_flight == 1)
    error = await refusal(client)  # the first call has not had a byte yet
    assert "concurrent" in error.message
    assert not first.done()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await eventually(lambda: stub.stats.in_flight == 0)
    assert stub.stats.rejected_by == rejected(concurrency=1)


async def test_an_admitted_answer_follows_its_latency(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    stub.capacity = Capacity(concurrency=1, latency_s=0.2)
    stub.enqueue("streamed after the wait")
    started = time.monotonic()
    assert await ask(client, stream=True) == "streamed after the wait"
    assert time.monotonic() - started >= 0.2  # a lower bound: the wait happened
    # The slot comes back once the answer is sent (the client may have it a moment
    # before the server lets go).
    await eventually(lambda: stub.stats.in_flight == 0)
    assert await ask(client) == "stub: hi"
    assert stub.stats.rejected_by == rejected()


async def test_a_client_that_disconnects_gives_its_slot_back(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    # An hour's latency: only giving the slot back on disconnect ends the wait.
    stub.capacity = Capacity(concurrency=1, latency_s=3600)
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.2).chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "hi"}])
    await eventually(lambda: stub.stats.in_flight == 0)  # not after the hour
    stub.capacity = Capacity(concurrency=1)  # the same slot, without the wait
    assert await ask(client) == "stub: hi"


# --- requests and tokens per minute -------------------------------------------------


async def test_rpm_refuses_beyond_the_burst(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    stub.capacity = Capacity(rpm=120)  # 2 a second, a 1 s burst
    assert [await ask(client), await ask(client)] == ["stub: hi", "stub: hi"]
    error = await refusal(client)
    headers = error.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "120"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert stub.stats.rejected_by == rejected(rpm=1)
    assert stub.stats.accepted == 2


async def test_the_bucket_refills_as_the_clock_moves(
    stub: StubLLMServer, client: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    # 2 a second, a 1 s burst; refused calls take nothing (see the test below for those)
    stub.capacity = Capacity(rpm=120, count_rejected=False)
    await ask(client)
    await ask(client)
    await refusal(client)
    clock.now += 0.4  # not yet a whole request
    await refusal(client)
    clock.now += 0.1
    assert await ask(client) == "stub: hi"
    await refusal(client)
    clock.now += 1.0  # a whole burst again, never more
    assert [await ask(client), await ask(client)] == ["stub: hi", "stub: hi"]
    await refusal(client)


@pytest.mark.parametrize(("count_rejected", "retry_after"), [(True, "2"), (False, "1")])
async def test_counted_rejections_push_the_retry_back(
    stub: StubLLMServer, client: openai.AsyncOpenAI, count_rejected: bool, retry_after: str
) -> None:
    # 1 a second, bucket of 2: once both are spent the next is a second away, or two
    # seconds if the refused call itself took one.
    stub.capacity = Capacity(rpm=60, burst_s=2, count_rejected=count_rejected)
    await ask(client)
    await ask(client)
    error = await refusal(client)
    assert error.response.headers["retry-after"] == retry_after


@pytest.mark.parametrize("count_rejected", [True, False])
async def test_a_call_refused_for_tokens_still_takes_a_request_when_counted(
    stub: StubLLMServer, client: openai.AsyncOpenAI, count_rejected: bool
) -> None:
    stub.capacity = Capacity(rpm=120, tpm=6000, count_rejected=count_rejected)
    await refusal(client, max_tokens=3000)  # over the 100-token burst
    assert await ask(client) == "stub: hi"
    if count_rejected:
        await refusal(client)
        assert stub.stats.rejected_by == rejected(rpm=1, tpm=1)
    else:
        assert await ask(client) == "stub: hi"
        assert stub.stats.rejected_by == rejected(tpm=1)


async def test_tpm_refuses_a_big_max_tokens_until_the_bucket_holds_it(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    stub.capacity = Capacity(tpm=6000)  # 100 tokens a second, a 1 s burst
    error = await refusal(client, max_tokens=1000)
    headers = error.response.headers
    assert int(headers["retry-after"]) >= 9  # 900 more tokens at 100 a second
    assert headers["x-ratelimit-limit-tokens"] == "6000"
    assert "tokens per min" in error.message
    assert await ask(client, max_tokens=16) == "stub: hi"
    assert stub.stats.rejected_by == rejected(tpm=1)


async def test_a_call_bigger_than_tpm_itself_is_told_not_to_retry(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    stub.capacity = Capacity(tpm=6000)
    error = await refusal(client, max_tokens=7000)
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert "too large" in error.message


async def test_anthropic_gets_its_own_rate_limit_error(stub: StubLLMServer) -> None:
    stub.capacity = Capacity(rpm=60)  # a bucket of one
    async with anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=stub.root_url,
                                        max_retries=0) as sdk:
        async def ask_claude() -> anthropic.types.Message:
            return await sdk.messages.create(
                model="claude-test", max_tokens=16,
                messages=[{"role": "user", "content": "hi"}])

        await ask_claude()
        with pytest.raises(anthropic.RateLimitError) as info:
            await ask_claude()
    error = info.value
    assert isinstance(error.body, dict)
    assert error.body["error"]["type"] == "rate_limit_error"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


# --- queue, settings and stats ------------------------------------------------------


async def test_a_refused_call_leaves_the_queue_for_the_retry(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    stub.enqueue("first")
    stub.enqueue("second")
    stub.capacity = Capacity(rpm=60)
    assert await ask(client) == "first"
    await refusal(client)
    stub.capacity = None
    assert await ask(client) == "second"
    assert len(stub.requests) == 3  # the refused call is recorded too


async def test_capacity_given_at_construction(client: openai.AsyncOpenAI) -> None:
    with StubLLMServer(capacity=Capacity(rpm=60), clock=FakeClock().monotonic) as limited:
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=limited.base_url,
                                      max_retries=0) as sdk:
            await ask(sdk)
            await refusal(sdk)
        assert limited.stats.rejected_by == rejected(rpm=1)


async def test_stats_count_without_a_capacity_and_reset(
    stub: StubLLMServer, client: openai.AsyncOpenAI
) -> None:
    await asyncio.gather(ask(client), ask(client))
    assert stub.stats.accepted == 2
    stub.capacity = Capacity(rpm=60)
    await ask(client)
    await refusal(client)
    assert (stub.stats.accepted, stub.stats.rejected) == (3, 1)
    stub.reset_stats()
    assert stub.stats == StubStats()
    stub.capacity = None
    await ask(client)
    assert (stub.stats.accepted, stub.stats.rejected, stub.stats.max_in_flight) == (1, 0, 1)


@pytest.mark.parametrize(
    "bad",
    [{"concurrency": 0}, {"latency_s": -1}, {"rpm": 0}, {"tpm": -5}, {"burst_s": 0}],
)
def test_capacity_refuses_impossible_limits(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Capacity(**bad)  # type: ignore[arg-type]


async def test_a_paced_turn_streams_word_by_word_and_records_each_frame(
        stub: StubLLMServer, client: openai.AsyncOpenAI) -> None:
    stub.enqueue("one two three four", interval_s=0.05)
    stream = await client.chat.completions.create(
        model="stub", messages=[{"role": "user", "content": "go"}], stream=True)
    seen: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == "one two three four"
    emitted = stub.emitted
    words = [frame for _, frame in emitted
             if b'"content":"' in frame and b'"content":""' not in frame]
    assert [w.split(b'"content":"')[1].split(b'"')[0] for w in words] == [
        b"one ", b"two ", b"three ", b"four"]
    times = [at for at, _ in emitted]
    assert times == sorted(times)
    # The frames were sent apart, not in one write (a gap of at least the interval
    # each; how much more is the machine's business).
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(times))
    with pytest.raises(ValueError, match="interval_s"):
        stub.enqueue("x", interval_s=-1)
    stub.clear()
    assert stub.emitted == []
