"""Local embedders: the offline default (real weights, no network) and hashing."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agentd.errors import InvalidInput
from agentd.memory.embed import EMBEDDERS, Embedder, resolve_embedder
from agentd.settings.memory import DEFAULT_EMBEDDER

MINILM = "onnx:all-minilm-l6-v2-int8"
LOCAL = [MINILM, "hash:256"]


@pytest.fixture(params=LOCAL)
async def embedder(request: pytest.FixtureRequest) -> AsyncIterator[Embedder]:
    # Shared across tests through the registry's cache: the model loads once.
    instance = resolve_embedder(request.param)
    assert instance is not None
    yield instance


@pytest.fixture
async def minilm() -> Embedder:
    instance = resolve_embedder(MINILM)
    assert instance is not None
    return instance


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


# --- the interface --------------------------------------------------------------------


def test_the_default_is_the_offline_model() -> None:
    embedder = resolve_embedder(DEFAULT_EMBEDDER)
    assert embedder is not None
    assert (embedder.name, embedder.dim) == (MINILM, 384)
    assert MINILM in EMBEDDERS


async def test_rows_are_unit_float32_vectors_in_input_order(embedder: Embedder) -> None:
    texts = ["the cat sat on the mat", "quarterly revenue grew by four percent",
             "a", "Zürich is expensive 🙂"]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (4, embedder.dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Row i is text i: embedding one text alone gives the same direction.
    alone = await embedder.embed([texts[1]])
    assert cos(vectors[1], alone[0]) > 0.99
    assert cos(vectors[0], alone[0]) < 0.9


async def test_same_text_same_vector_across_calls(embedder: Embedder) -> None:
    first = await embedder.embed(["my flight leaves at noon"])
    second = await embedder.embed(["my flight leaves at noon", "something else entirely"])
    assert cos(first[0], second[0]) > 0.999


async def test_empty_input_gives_an_empty_matrix(embedder: Embedder) -> None:
    vectors = await embedder.embed([])
    assert vectors.shape == (0, embedder.dim)
    assert vectors.dtype == np.float32


async def test_a_single_string_is_refused_not_split_into_letters(embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        await embedder.embed("hello")
    with pytest.raises(TypeError, match="item 1"):
        await embedder.embed(["ok", 3])  # type: ignore[list-item]


async def test_more_texts_than_one_batch_keep_their_order(embedder: Embedder) -> None:
    # Different lengths on purpose: the embedder batches by length internally.
    texts = [f"note {i}: " + "word " * (i % 17) + f"topic{i}" for i in range(embedder.max_batch
                                                                              * 2 + 7)]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (len(texts), embedder.dim)
    probe = [0, 5, embedder.max_batch, len(texts) - 1]
    alone = np.vstack([(await embedder.embed([texts[i]]))[0] for i in probe])
    # Each probed row is closest to its own text's vector among all rows.
    similarities = alone @ vectors.T
    assert list(similarities.argmax(axis=1)) == probe
    assert (similarities[range(len(probe)), probe] > 0.99).all()


# --- quality ---------------------------------------------------------------------------


async def test_minilm_finds_a_paraphrase(minilm: Embedder) -> None:
    fact, question, unrelated, distractor = await minilm.embed([
        "sister moved to Lisbon",
        "where does my sibling live now",
        "the printer on the third floor is out of toner",
        "my colleague bought a new bicycle",
    ])
    assert cos(fact, question) > 0.4
    assert cos(fact, question) > cos(unrelated, question) + 0.2
    assert cos(fact, question) > cos(distractor, question) + 0.2


async def test_minilm_ranks_the_evidence_first(minilm: Embedder) -> None:
    entries = ["I adopted a beagle last spring", "We had pasta for dinner",
               "My manager is called Priya", "I'm allergic to peanuts",
               "The meeting moved to Thursday"]
    queries = {"what kind of dog do I have": 0, "who is my boss": 2,
               "which foods should I avoid": 3}
    vectors = await minilm.embed(entries)
    asked = await minilm.embed(list(queries))
    assert list((asked @ vectors.T).argmax(axis=1)) == list(queries.values())


async def test_minilm_embeds_an_empty_text_and_truncates_a_long_one(minilm: Embedder) -> None:
    long = "the harbour at dawn " * 400  # far over 256 tokens
    vectors = await minilm.embed(["", long, "the harbour at dawn"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cos(vectors[1], vectors[2]) > 0.6


async def test_hashing_matches_words_and_word_parts() -> None:
    embedder = resolve_embedder("hash:512")
    assert embedder is not None
    walk, walk_again, walking, other, empty = await embedder.embed(
        ["walk the dog", "I walk my dog", "walking dogs", "tax return deadline", ""])
    assert cos(walk, walk_again) > cos(walk, walking) > cos(walk, other) + 0.1
    # No words, no direction: a zero row, similar to nothing.
    assert not empty.any()


async def test_hashing_is_the_same_in_another_process() -> None:
    embedder = resolve_embedder("hash:64")
    assert embedder is not None
    here = (await embedder.embed(["stable across processes"]))[0]
    code = ("import asyncio, sys\n"
            "from agentd.memory.embed import resolve_embedder\n"
            "e = resolve_embedder('hash:64')\n"
            "v = asyncio.run(e.embed(['stable across processes']))[0]\n"
            "sys.stdout.write(','.join(repr(float(x)) for x in v))\n")
    # Another hash seed: Python's own str hash would differ between the two.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "12345"})
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    there = np.array([float(x) for x in out.decode().split(",")], dtype=np.float32)
    assert np.array_equal(here, there)


# --- not blocking the loop, queueing, lifecycle -------------------------------------


async def test_embedding_2000_texts_leaves_the_event_loop_free(minilm: Embedder) -> None:
    """A ticker asks to run every 10 ms of loop time. If embedding ran on the loop, even
    one batch at a time with awaits between, the ticker would wait out whole batches:
    its longest gap would be at least one batch's time. Run in a thread, its gaps stay
    far below that. Both sides are measured in the same run, so a slow machine slows
    both and the comparison holds."""
    await minilm.warm()
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    texts = [f"entry {i}: the user mentioned their {i % 40}th favourite recipe"
             for i in range(2000)]
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = loop.time()
    vectors = await minilm.embed(texts)
    elapsed = loop.time() - started
    stop.set()
    await task
    assert vectors.shape == (2000, 384)
    batches = -(-len(texts) // minilm.max_batch)
    during = [t for t in ticks if started <= t <= started + elapsed]
    gaps = np.diff([started, *during, started + elapsed])
    # A blocked loop ticks at most once per batch; a free one ticks many times more.
    assert len(during) > 3 * batches, (len(during), batches, elapsed)
    assert gaps.max() < elapsed / batches, (gaps.max(), elapsed / batches)


async def test_concurrent_calls_queue_on_one_thread_and_get_their_own_answers(
    minilm: Embedder,
) -> None:
    groups = [[f"group {g} text {i} about {'cats' if g == 0 else 'invoices'}"
               for i in range(100)] for g in range(3)]
    results = await asyncio.gather(*(minilm.embed(group) for group in groups))
    for group, vectors in zip(groups, results, strict=True):
        assert vectors.shape == (len(group), 384)
        alone = (await minilm.embed([group[7]]))[0]
        assert cos(vectors[7], alone) > 0.99
    workers = [t for t in threading.enumerate() if t.name.startswith(f"embed-{MINILM}")]
    assert len(workers) == 1


async def test_a_cancelled_call_leaves_the_embedder_usable(minilm: Embedder) -> None:
    task = asyncio.create_task(minilm.embed([f"text {i}" for i in range(2000)]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    vectors = await minilm.embed(["still works"])
    assert vectors.shape == (1, 384)


async def test_resolve_is_cached_until_closed() -> None:
    first = resolve_embedder("hash:32")
    assert first is not None
    assert resolve_embedder(" hash:32 ") is first
    await first.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await first.embed(["x"])
    second = resolve_embedder("hash:32")
    assert second is not None and second is not first
    assert (await second.embed(["x"])).shape == (1, 32)


# --- names -------------------------------------------------------------------------


def test_none_means_no_embedder() -> None:
    assert resolve_embedder("none") is None


@pytest.mark.parametrize(("spec", "says"), [
    ("", "non-empty"),
    ("bogus:model", "unknown embedder provider 'bogus'"),
    ("onnx:all-minilm-l12-v2", "unknown onnx model"),
    ("onnx", "no model named"),
    ("hash:", "no model named"),
    ("hash:abc", "whole number"),
    ("hash:4", "from 8 to 65536"),
    ("hash:1000000", "from 8 to 65536"),
])
def test_unknown_names_are_refused_naming_the_known_ones(spec: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_embedder(spec)
    error = caught.value
    assert says in error.message
    assert error.status == 422
    assert error.details["errors"][0]["field"] == "memory.embedder"
    if "unknown" in says or "no model" in says:
        assert "onnx:all-minilm-l6-v2-int8" in error.message
        assert "hash:<dim>" in error.message


def test_local_embedders_take_no_settings() -> None:
    with pytest.raises(InvalidInput, match="takes no settings"):
        resolve_embedder(MINILM, settings={"base_url": "http://127.0.0.1:1/v1"})


def _nice_of(thread_prefix: str) -> set[int]:
    nices = set()
    for thread in threading.enumerate():
        if thread.name.startswith(thread_prefix) and thread.native_id is not None:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                nices.add(int(f.read().rsplit(")", 1)[1].split()[16]))
    return nices


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
async def test_a_writes_embedding_runs_below_searches(minilm: Embedder) -> None:
    """A write's batches run at a lower CPU priority than a search's query (its own
    thread and session), so embedding a batch leaves searches the cores."""
    query = await minilm.embed_query("where does my sibling live now?")
    batch = await minilm.embed(["where does my sibling live now?", "My sister moved."])
    # The same vector either way.
    assert cos(query[0], batch[0]) > 0.999
    assert _nice_of(f"embed-{MINILM}") == {10}
    assert _nice_of(f"embed-query-{MINILM}") == {os.getpriority(os.PRIO_PROCESS, 0)}
