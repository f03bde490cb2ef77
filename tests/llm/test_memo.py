"""A session's memo answers what a fresh computation would, whatever the messages do.

The memo (agentd.llm.memo) reuses what earlier calls derived from a session's messages.
A wrong reuse would send a provider a stale message (a tool result a compaction
cleared, a message from before a restore): these tests compare every answer with
the computation without a memo, over random histories that grow, change in the
middle, lose their start and are replaced.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.llm.memo import Joined, PerMessage, PrefixMemo, shared_prefix, trimmed
from agentd.llm.messages import AssistantMessage, ToolResultMessage, UserMessage

Message = UserMessage | AssistantMessage | ToolResultMessage


def _encode(message: Message) -> bytes:
    return orjson.dumps(message)


def _message(i: int, kind: int) -> Message:
    if kind == 0:
        return UserMessage(content=f"u{i}")
    if kind == 1:
        return AssistantMessage(text=f"a{i}")
    return ToolResultMessage(call_id=f"c{i}", name="t", content=f"r{i}")


# An operation on the conversation between two calls: (what, where, how many).
_op = st.tuples(st.sampled_from(["append", "change", "drop_head", "truncate", "copy",
                                 "new"]),
                st.integers(0, 40), st.integers(1, 6))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=25), kinds=st.lists(st.integers(0, 2),
                                                                   min_size=60, max_size=60))
def test_per_message_values_are_those_of_the_messages_given(
        ops: list[tuple[str, int, int]], kinds: list[int]) -> None:
    per = PerMessage(_encode)
    messages: list[Message] = []
    counter = 0
    for what, where, count in ops:
        if what == "append" or not messages:
            for _ in range(count):
                messages.append(_message(counter, kinds[counter % len(kinds)]))
                counter += 1
        elif what == "change":  # a compaction clears a result in the middle
            at = where % len(messages)
            messages[at] = replace(messages[at]) if isinstance(messages[at], UserMessage) \
                else _message(counter, kinds[at % len(kinds)])
            counter += 1
        elif what == "drop_head":  # trimmed to the window
            del messages[:min(count, len(messages))]
        elif what == "truncate":  # restored to an earlier point
            del messages[max(len(messages) - count, 0):]
        elif what == "copy":  # equal messages that are other objects
            messages = [replace(m) for m in messages]
        else:  # another conversation altogether
            messages = [_message(counter + i, kinds[i]) for i in range(count)]
            counter += count
        request = list(messages)  # each request has its own list, as the history's
        assert per.values(request) == [_encode(m) for m in request]


def test_a_growing_conversation_encodes_each_message_once() -> None:
    calls: list[Message] = []

    def encode(message: Message) -> bytes:
        calls.append(message)
        return _encode(message)

    per = PerMessage(encode)
    messages: list[Message] = []
    for i in range(50):
        messages = [*messages, UserMessage(content=f"q{i}"), AssistantMessage(text=f"a{i}")]
        per.values(messages)
    assert len(calls) == 100
    # A message changed in the middle is encoded again, with those after it.
    cleared = AssistantMessage(text="cleared")
    per.values([*messages[:10], cleared, *messages[11:]])
    assert calls[100:] == [cleared, *messages[11:]]


def test_shared_prefix() -> None:
    a, b, c = UserMessage(content="a"), UserMessage(content="b"), UserMessage(content="c")
    assert shared_prefix([a, b], [a, b, c]) == 2
    assert shared_prefix([a, b, c], [a, c]) == 1
    assert shared_prefix([a, b], [replace(a), replace(b)]) == 2  # equal is as good
    assert shared_prefix([], [a]) == 0


def test_a_memo_keeps_one_per_message_by_name() -> None:
    memo = PrefixMemo()
    first = memo.per_message("x", _encode)
    assert memo.per_message("x", _encode) is first
    assert memo.per_message("y", _encode) is not first
    assert memo.get("z") is None
    memo.put("z", 1)
    assert memo.get("z") == 1


# An operation on a history between two calls, and how the next request is made:
# (what, how many, extras at the end, left out at the start).
_history_op = st.tuples(st.sampled_from(["append", "append", "append", "compact", "hold"]),
                        st.integers(1, 6), st.integers(0, 3), st.integers(0, 8))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_history_op, min_size=1, max_size=30),
       kinds=st.lists(st.integers(0, 2), min_size=60, max_size=60))
def test_values_from_a_history_s_provenance_are_those_of_the_messages_given(
        ops: list[tuple[str, int, int, int]], kinds: list[int]) -> None:
    """With the requests' provenance (the history's generation, where their messages
    start in its list, how many are its own), the memo reuses values without comparing
    messages: every answer and total is still what a fresh computation gives, through
    appends, compactions (a rewrite: a new generation), requests that end with
    messages not the history's (tool calls without results, held messages, which may
    be the same objects from one call to the next) and requests trimmed at the start."""
    memo = PrefixMemo()
    encodings = memo.per_message("wire", _encode)
    sizes = memo.per_message("tokens", lambda m: len(_encode(m)))
    history: list[Message] = []
    held: list[Message] = []
    counter = 0
    for what, count, extras, start in ops:
        if what == "compact" and history:
            # A compaction writes a new list (the memo's generation moves on).
            history = [UserMessage(content=f"summary {counter}"), *history[count:]]
            memo.rewritten()
        elif what == "hold":
            held = [_message(counter + i, 0) for i in range(count)]
        else:
            for _ in range(count):
                history.append(_message(counter, kinds[counter % len(kinds)]))
                counter += 1
        counter += 1
        # The request: the history's messages, then messages that are not its own
        # (new objects for unanswered calls, the same held ones while they are held).
        tail = [_message(counter + i, 2) for i in range(extras)] + held
        messages = [*history, *tail]
        provenance: tuple[int, int, int] | None = (memo.generation, 0, len(history))
        cut = min(start, len(messages))
        messages, provenance = messages[cut:], trimmed(provenance, cut)
        assert encodings.values(messages, provenance) == [_encode(m) for m in messages]
        got = sizes.values(messages, provenance)
        assert got == [len(_encode(m)) for m in messages]
        assert sizes.total == sum(got)
        if what == "hold" and extras == 0:
            held = held[count // 2:]  # some held messages join the history later
            history.extend(held[:1])


# What happens to a list of JSON items between two joins: (what, how many, limit cut).
_join_op = st.tuples(st.sampled_from(["append", "append", "append", "change", "truncate",
                                      "restart"]),
                     st.integers(1, 40), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_join_op, min_size=1, max_size=40), lead=st.booleans())
def test_joined_chunks_join_to_the_parts_as_they_are(
        ops: list[tuple[str, int, int]], lead: bool) -> None:
    """Joined keeps the parts that stayed the same joined between calls (folding
    more in as they gather, past 64): whatever the parts do, its chunks join to the
    parts as they are now, each after its comma but the first (unless ``lead``)."""
    joined = Joined()
    parts: list[bytes] = []
    counter = 0
    for what, count, cut in ops:
        unchanged = len(parts)
        if what == "append" or not parts:
            parts += [b',"p%d"' % (counter + i) for i in range(count)]
            counter += count
        elif what == "change":
            at = count % len(parts)
            parts[at] = b',"changed%d"' % counter
            counter += 1
            unchanged = at
        elif what == "truncate":
            del parts[max(len(parts) - count, 0):]
            unchanged = len(parts)
        else:
            parts = [b',"r%d"' % (counter + i) for i in range(count)]
            counter += count
            unchanged = 0
        limit = max(len(parts) - cut, 0)
        chunks = joined.chunks(parts, unchanged, limit, lead=lead)
        expected = b"".join(parts[:limit])
        if not lead:
            expected = expected[1:]
        assert b"".join(chunks) == expected
