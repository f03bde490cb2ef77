"""Fitting a model call into the model's context window (catalog figures)."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace
from typing import Any

from agentd.errors import ModelError
from agentd.events import ContextTrimmedData
from agentd.llm.catalog import ModelInfo, estimate_sum
from agentd.llm.memo import trimmed
from agentd.llm.messages import ModelRequest, UserMessage

__all__ = ["HEADROOM", "fit"]

#: When the conversation must be cut anew, the share of the window it is cut to: the
#: cut then holds for the next calls (the conversation grows into the room left), so
#: their prefix stays the same and the provider's prompt cache keeps hitting, instead
#: of every call dropping one more turn and missing the cache whole.
HEADROOM = 0.8
#: The memo entry that remembers the cut: (index, the message there).
_CUT = "context-cut"


def fit(request: ModelRequest, info: ModelInfo | None, *, counts_tokens: bool
        ) -> tuple[ModelRequest, ContextTrimmedData | None, tuple[int, int]]:
    """Make the call fit the model's context window: drop the oldest whole turns (a
    user message and all that answered it, so a tool call is never parted from its
    result) until it fits. The loop compacts older turns first when the agent's
    ``settings.memory.compaction.auto`` is on (:mod:`agentd.memory.compaction`); this
    is the fallback when that is off, fails or cannot cut enough. The log keeps
    everything; the step's ``message.assistant`` event says what was left out (the
    second value). Refused (``context_overflow``) if even the latest turn does not
    fit.

    With the session's memo, a cut is kept for the calls that follow while they fit
    (a stable prefix), and a new one leaves :data:`HEADROOM`; each costs time in
    proportion to the conversation once, not once per turn dropped.

    Also returns the tokens the call may use, (prompt estimate, output limit), which
    the scheduler reserves against tokens-per-minute limits ((0, 0) when neither a
    catalog entry nor such a limit (``counts_tokens``) needs it)."""
    if info is None and not counts_tokens:
        return request, None, (0, 0)
    fixed, sizes, total = estimate_sum(request)
    prompt = fixed + total
    output = request.max_tokens or (min(info.max_output_tokens, 4096) if info else 1024)
    if info is None:
        return request, None, (prompt, output)
    budget = info.context_window - (request.max_tokens or 0)
    if prompt <= budget:
        return request, None, (prompt, output)
    messages = request.messages
    memo = request.memo
    held: tuple[int, Any] | None = memo.get(_CUT) if memo is not None else None
    if held is not None:
        start, first = held
        if start < len(messages) and messages[start] is first:
            estimate = fixed + sum(sizes[start:])
            if estimate <= budget:
                return _cut(request, start, estimate, output)
    # The smallest suffix that fits, from the totals of every suffix (one pass), then
    # the first turn that begins inside it; a new cut aims lower, to last.
    totals = list(itertools.accumulate(reversed(sizes)))
    starts = [i for i, m in enumerate(messages) if isinstance(m, UserMessage)]
    for target in ((budget * HEADROOM, budget) if memo is not None else (budget,)):
        # totals[k - 1] is the sum of the last k messages: the most that fit.
        fitting = bisect.bisect_right(totals, target - fixed)
        earliest = len(messages) - fitting
        at = bisect.bisect_left(starts, max(earliest, 1))
        if at < len(starts):
            start = starts[at]
            if memo is not None:
                memo.put(_CUT, (start, messages[start]))
            return _cut(request, start, fixed + sum(sizes[start:]), output)
    latest = fixed + sum(sizes[starts[-1]:]) if starts else prompt
    raise ModelError(
        f"the latest turn alone (about {latest} tokens) plus max_tokens "
        f"({request.max_tokens or 0}) does not fit {info.spec}'s context window of "
        f"{info.context_window} tokens", code="context_overflow", retryable=False,
        details={"estimated_tokens": latest, "context_window": info.context_window})


def _cut(request: ModelRequest, start: int, estimate: int, output: int
         ) -> tuple[ModelRequest, ContextTrimmedData, tuple[int, int]]:
    return (replace(request, messages=request.messages[start:],
                    provenance=trimmed(request.provenance, start)),
            {"dropped_messages": start, "estimated_tokens": estimate},
            (estimate, output))
