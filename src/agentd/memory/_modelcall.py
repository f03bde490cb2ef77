"""A memory job's model call: a summary (compaction), a consolidation.

Such a call goes the way a run's step does: through the kernel (scheduler, retries,
fallbacks, breakers) as the agent, with its tenant and weight, never parked on an
outage. Its model is the job's setting (``compaction.model``, ``consolidation.model``)
or the agent's own; its usage comes back as a charge to commit with the job's event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from agentd.errors import AgentdError, ModelError
from agentd.events import UsageData
from agentd.llm.catalog import estimate_tokens
from agentd.llm.messages import ModelRequest, UserMessage
from agentd.llm.registry import ProviderInfo, resolve_model
from agentd.runtime.calls import Kernel, ModelCaller, Target
from agentd.store.records import UsageCharge

if TYPE_CHECKING:
    from agentd.llm.catalog import Catalog
    from agentd.settings import AgentSettings

__all__ = ["Answer", "MemoryCall", "Note", "call_model"]

Note = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryCall:
    """Who calls, and how: the agent's (or a run's) way through the kernel."""

    agent_id: str
    agent: str
    settings: AgentSettings
    targets: Sequence[Target]
    priority: str
    note: Note | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    text: str
    #: The model that answered (``provider:model``).
    model: str
    usage: UsageData | None
    charge: UsageCharge | None


async def call_model(kernel: Kernel, catalog: Catalog, call: MemoryCall, *,
                     model: str | None, system: str, content: Callable[[int | None], str],
                     max_tokens: int, what: str,
                     endpoints: Mapping[str, ProviderInfo] | None = None) -> Answer:
    """Ask ``model`` (None: the agent's, with its fallbacks) with ``system`` and the user
    message ``content(room)``, where ``room`` is the characters the model's window leaves
    for it (None: unknown). A :class:`ModelError` when there is no usable answer."""
    targets = list(call.targets)
    own: Target | None = None
    if model is not None and model != targets[0].spec:
        same = model.partition(":")[0] == targets[0].model.provider
        try:
            resolved = resolve_model(model, agent=call.agent, endpoints=endpoints, settings={
                k: v for k in ("base_url", "api_key_env", "timeout_s")
                if same and (v := getattr(call.settings, k, None)) is not None})
        except (AgentdError, ImportError) as exc:
            raise ModelError(f"the {what} model {model!r} cannot be used: {exc}",
                             code="model_bad_request", retryable=False) from None
        own = Target(model=resolved, info=catalog.get(model))
        targets = [own]
    info = targets[0].info
    output = min(max_tokens, info.max_output_tokens) if info else max_tokens
    room = (info.context_window - output) * 4 - len(system) - 400 if info else None
    request = ModelRequest(system=system, max_tokens=output,
                           messages=[UserMessage(content=content(room))])
    retry = kernel.retry
    if call.settings.max_retries is not None:
        retry = replace(retry, attempts=call.settings.max_retries + 1)
    caller = ModelCaller(
        kernel, targets, priority=call.priority, tenant=call.settings.tenant,
        agent=call.agent_id, weight=call.settings.weight, retry=retry,
        publish=_quiet, note=call.note or _ignore, park=False)
    try:
        message, target, _ = await caller.call(
            request, tokens=estimate_tokens(request) + output, output=output)
    finally:
        if own is not None:
            await own.model.aclose()
    text = message.text.strip()
    if not text:
        raise ModelError(f"{target.spec} returned an empty {what}",
                         code="model_bad_output", retryable=True)
    usage_data: UsageData | None = None
    charge: UsageCharge | None = None
    if message.usage is not None:
        usage = message.usage
        cost = target.info.cost(usage) if target.info is not None else None
        usage_data = {"input_tokens": usage.input_tokens,
                      "output_tokens": usage.output_tokens,
                      "cached_tokens": usage.cached_tokens}
        if usage.cache_write_tokens:
            usage_data["cache_write_tokens"] = usage.cache_write_tokens
        if cost is not None:
            usage_data["cost_usd"] = round(cost, 6)
        charge = UsageCharge(
            agent_id=call.agent_id, agent=call.agent, tenant=call.settings.tenant,
            model=target.spec, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens, cost_usd=round(cost or 0.0, 6))
    return Answer(text=text, model=target.spec, usage=usage_data, charge=charge)


def _quiet(text: str, reset: bool) -> None:
    """A memory job's answer is not streamed to the session's followers."""


async def _ignore(event: Any) -> None:
    """Outside a run there is no log to note a retry in."""
