"""Fitting a model call into the model's context window (catalog figures)."""

from __future__ import annotations

from dataclasses import replace

from agentd.errors import ModelError
from agentd.events import ContextTrimmedData
from agentd.llm.catalog import ModelInfo, estimate_parts
from agentd.llm.messages import ModelRequest, UserMessage

__all__ = ["fit"]


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

    Also returns the tokens the call may use, (prompt estimate, output limit), which
    the scheduler reserves against tokens-per-minute limits ((0, 0) when neither a
    catalog entry nor such a limit (``counts_tokens``) needs it)."""
    if info is None and not counts_tokens:
        return request, None, (0, 0)
    fixed, sizes = estimate_parts(request)
    prompt = fixed + sum(sizes)
    output = request.max_tokens or (min(info.max_output_tokens, 4096) if info else 1024)
    if info is None:
        return request, None, (prompt, output)
    budget = info.context_window - (request.max_tokens or 0)
    if prompt <= budget:
        return request, None, (prompt, output)
    messages = request.messages
    starts = [i for i, m in enumerate(messages) if isinstance(m, UserMessage)]
    for start in starts[1:]:
        estimate = fixed + sum(sizes[start:])
        if estimate <= budget:
            return (replace(request, messages=messages[start:]),
                    {"dropped_messages": start, "estimated_tokens": estimate},
                    (estimate, output))
    latest = fixed + sum(sizes[starts[-1]:]) if starts else prompt
    raise ModelError(
        f"the latest turn alone (about {latest} tokens) plus max_tokens "
        f"({request.max_tokens or 0}) does not fit {info.spec}'s context window of "
        f"{info.context_window} tokens", code="context_overflow", retryable=False,
        details={"estimated_tokens": latest, "context_window": info.context_window})
