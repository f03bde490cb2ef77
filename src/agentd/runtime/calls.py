"""One model call of a run, through the kernel: scheduler, retries, breakers, fallbacks.

:class:`Kernel` is the daemon-wide part (the scheduler, a breaker per provider
endpoint, the retry defaults, the budget book, counters); :class:`ModelCaller` is one
run's way through it. For each call, the run's models are tried in order (its
``model``, then ``settings.fallbacks``):

1. a model whose provider's breaker is open is skipped;
2. the call waits for its turn in the scheduler (priority class, tenant, agent);
3. it is sent; a transient failure is retried after a jittered backoff (never before
   the provider's ``Retry-After``, which also pauses the scheduler's lane, so that no
   other run hits the same limit), each retry queueing again;
4. a model whose retries are exhausted, or that failed for good (authentication,
   spend limit, invalid request), hands over to the next one.

When every model failed and at least one only for now (an outage, not a refusal),
the run parks: a ``model.outage`` event, then it waits for a provider's breaker to
let a probe through, and goes on with a ``model.recovered`` event when one answers.
It stays ``running`` (holding its lease) while parked, spends no steps, and can be
cancelled. ``settings.on_outage: "fail"`` fails it instead.

Text already streamed to clients is never shown twice: a retry or fallback that
starts with the same text continues silently past it; one that differs first sends a
``token`` frame with ``reset: true`` (drop this step's partial text), and the step's
``message.assistant`` event records the failed attempts and resets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from agentd.clock import SYSTEM, Clock, wait_first
from agentd.errors import ModelError
from agentd.events import (
    AttemptData,
    ErrorData,
    MessageAssistantData,
    ModelOutage,
    ModelRecovered,
    QueueData,
    RunWaiting,
    WaitingReason,
)
from agentd.llm.catalog import ModelInfo
from agentd.llm.messages import AssistantMessage, ModelRequest, TextDelta
from agentd.llm.model import Model, StreamAccumulator
from agentd.llm.output import for_target
from agentd.runtime.activity import Activity, Doing
from agentd.runtime.budgets import BudgetBook
from agentd.runtime.kernel import Breaker, BreakerSettings, RetryPolicy
from agentd.runtime.scheduler import Scheduler

__all__ = ["CallReport", "Kernel", "ModelCaller", "Target", "named"]

log = logging.getLogger(__name__)

#: The longest a parked run sleeps between looks at its providers' breakers.
_PARK_POLL_S = 30.0
#: Failures that say a provider is unavailable for now (connection errors, timeouts,
#: 5xx, 529 overloaded, rate limits, in-stream errors).
_OUTAGE_CODES = frozenset({"model_unavailable", "model_rate_limited", "model_error"})


def named(target: Target, exc: ModelError) -> ModelError:
    """``exc`` with the model it came from in its message (and ``details.model``): a
    failed run says which model failed and why, not only which provider."""
    if target.spec in exc.message:
        return exc
    return ModelError(f"{target.spec}: {exc.message}", code=exc.code,
                      retryable=exc.retryable, details={**exc.details, "model": target.spec})


def _cause(message: str) -> str:
    """A ``waiting`` frame's cause: the error's message, short."""
    return message if len(message) <= 300 else message[:299] + "…"


def _for(target: Target, request: ModelRequest) -> ModelRequest:
    """The request as ``target`` gets it: an output schema natively when its catalog
    entry says it can take it, else asked for in the system prompt."""
    fmt = request.output
    if fmt is None:
        return request
    return for_target(request, native=target.info is not None
                      and target.info.structured_output
                      and (fmt.strict or not target.model.strict_output_only))


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One model of a run's chain, with its catalog entry."""

    model: Model
    info: ModelInfo | None

    @property
    def spec(self) -> str:
        return self.model.spec

    @property
    def name(self) -> str:
        """The model's name without its provider (the scheduler's per-model lanes)."""
        return self.model.spec.partition(":")[2]

    @property
    def breaker_key(self) -> str:
        return f"{self.model.provider}@{self.model.endpoint}" if self.model.endpoint \
            else self.model.provider


class Kernel:
    """What every run's model calls share."""

    def __init__(self, scheduler: Scheduler, budgets: BudgetBook, *,
                 retry: RetryPolicy, breaker: BreakerSettings, clock: Clock = SYSTEM) -> None:
        self.scheduler = scheduler
        #: The time retries wait and breakers cool down by.
        self.clock = clock
        self.budgets = budgets
        self.retry = retry
        self.breaker_settings = breaker
        self.breakers: dict[str, Breaker] = {}
        #: Some lane limits tokens per minute: calls must say what they may use.
        self.counts_tokens = False
        self.counters: dict[str, int] = {
            "calls": 0, "failed_attempts": 0, "retries": 0, "fallbacks": 0,
            "rate_limited": 0, "stream_resets": 0, "outages": 0}

    def breaker(self, key: str) -> Breaker:
        breaker = self.breakers.get(key)
        if breaker is None:
            breaker = self.breakers[key] = Breaker(key, self.breaker_settings, self.clock)
        return breaker

    def metrics(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.metrics(), "calls": dict(self.counters),
                "breakers": {k: b.snapshot() for k, b in sorted(self.breakers.items())}}


Publish = Callable[[str, bool], None]
#: Commits an event about a model call under way.
Note = Callable[[RunWaiting | ModelOutage | ModelRecovered], Awaitable[None]]


@dataclass(kw_only=True, slots=True)
class CallReport:
    """What a step's ``message.assistant`` event records about its model call."""

    queue: QueueData
    #: Failed tries before the answer.
    attempts: list[AttemptData]
    #: A fallback model answered.
    fallback: bool = False
    #: Times clients were told to drop the step's partial text.
    stream_resets: int = 0
    #: How long the run was parked (every model unavailable), if it was.
    outage_s: float | None = None
    #: The whole call and the answering attempt's time to its first chunk (ms).
    duration_ms: float | None = None
    ttfc_ms: float | None = None

    def record(self, data: MessageAssistantData) -> None:
        """Write this report into the step's event data (only what applies)."""
        data["queue"] = self.queue
        if self.attempts:
            data["attempts"] = self.attempts
        if self.fallback:
            data["fallback"] = True
        if self.stream_resets:
            data["stream_resets"] = self.stream_resets
        if self.outage_s is not None:
            data["outage_s"] = self.outage_s
        if self.duration_ms is not None:
            data["duration_ms"] = self.duration_ms
        if self.ttfc_ms is not None:
            data["ttfc_ms"] = self.ttfc_ms


class ModelCaller:
    """One run's model calls through the kernel."""

    def __init__(self, kernel: Kernel, targets: Sequence[Target], *, priority: str,
                 tenant: str, agent: str, weight: float, retry: RetryPolicy,
                 publish: Publish, note: Note, park: bool = True,
                 outage_timeout_s: float = 0.0) -> None:
        self.kernel = kernel
        self.targets = list(targets)
        self.priority = priority
        self.tenant = tenant
        self.agent = agent
        self.weight = weight
        self.retry = retry
        #: ``publish(text, reset)``: a live text delta to the run's followers.
        self._publish = publish
        #: ``note(event)``: commit an event about the call (waiting, outage, recovery).
        self._note = note
        self.park = park
        self.outage_timeout_s = outage_timeout_s
        # What this step has shown clients, and this attempt's text so far.
        self._sent: list[str] = []
        self._sent_len = 0
        self._shown = ""
        self._output = 0
        self._fresh: list[str] = []
        self._matched = 0
        self._diverged = False
        self.resets = 0
        #: What this call last said it waits for (reason, model), to say it once.
        self._told: tuple[str, str | None] | None = None
        #: The last attempt's time from admission to its first chunk (s).
        self._ttfc: float | None = None
        #: What the call under way waits for now, on what, since when (None between
        #: calls): :attr:`doing` for the live view, made when it is read.
        self._now: tuple[Doing, str, float] | None = None

    @property
    def doing(self) -> Activity | None:
        """What the call under way waits for now (None between calls): the live view."""
        now = self._now
        return None if now is None else Activity(doing=now[0], detail=now[1], since=now[2])

    def _doing(self, doing: Doing, detail: str) -> None:
        self._now = (doing, detail, self.kernel.clock.time())

    async def call(self, request: ModelRequest, *, tokens: int, output: int = 0
                   ) -> tuple[AssistantMessage, Target, CallReport]:
        """The step's answer, the model that gave it, and what the step's event should
        record about the call (queue, failed attempts, fallback, resets, outage).

        ``tokens`` is what the call may use (prompt estimate + ``output``, its output
        limit), reserved against the lane's tokens-per-minute limit. Providers count
        the whole output limit at admission and give none of it back, so a finished
        call keeps that reservation: the prompt's real size plus the larger of the
        output limit and what it wrote."""
        try:
            return await self._call(request, tokens=tokens, output=output)
        finally:
            self._now = None

    # complexity: the kernel's loop over a call: admission, attempt, retry, fallback,
    # breaker and outage parking; one loop keeps the report of every attempt in one
    # place.
    async def _call(self, request: ModelRequest, *, tokens: int, output: int
                    ) -> tuple[AssistantMessage, Target, CallReport]:
        self._output = output
        self._sent, self._sent_len, self.resets = [], 0, 0
        self._told = None
        failures: list[AttemptData] = []
        queue: QueueData = {"class": self.priority, "wait_ms": 0.0}
        parked_at: float | None = None
        began = self.kernel.clock.monotonic()
        self.kernel.counters["calls"] += 1
        while True:
            transient = False
            last: ModelError | None = None
            last_target = self.targets[0]
            for target in self.targets:
                breaker = self.kernel.breaker(target.breaker_key)
                attempt = 0
                while True:
                    if not breaker.allow():
                        transient = True
                        failures.append({"model": target.spec, "code": "breaker_open"})
                        break
                    try:
                        message = await self._attempt(target, request, tokens, queue)
                    except ModelError as exc:
                        last, last_target = exc, target
                        if exc.retryable and exc.code == "model_rate_limited":
                            # A rate limit is the lane's business (it pauses), not a
                            # sign the provider is unwell: the breaker does not count it.
                            breaker.release_probe()
                            transient = True
                        elif exc.retryable:
                            breaker.failure()
                            # Only an unavailable provider parks the run; one that
                            # answers garbage fails it once retries are spent.
                            transient = transient or exc.code in _OUTAGE_CODES
                        else:
                            breaker.release_probe()
                        delay = self._failed(target, exc, attempt, failures)
                        if delay is None:
                            break
                        if parked_at is None:
                            # (While parked, the outage is what the run waits for: a
                            # probe's retries are part of it, not news.)
                            await self._retrying(target, exc, delay)
                        if delay:
                            await self.kernel.clock.sleep(delay)
                        attempt += 1
                        self.kernel.counters["retries"] += 1
                        continue
                    except BaseException:
                        breaker.release_probe()
                        raise
                    breaker.success()
                    now = self.kernel.clock.monotonic()
                    report = CallReport(
                        queue=queue, attempts=failures,
                        fallback=target is not self.targets[0], stream_resets=self.resets,
                        duration_ms=round((now - began) * 1000, 3),
                        ttfc_ms=None if self._ttfc is None else round(self._ttfc * 1000, 3))
                    if report.fallback:
                        self.kernel.counters["fallbacks"] += 1
                    if parked_at is not None:
                        parked = round(now - parked_at, 3)
                        report.outage_s = parked
                        await self._tell(ModelRecovered(data={
                            "model": target.spec, "parked_s": parked}))
                    return message, target, report
            if last is not None and not transient:
                raise named(last_target, last)  # every model refused for good
            if not self.park:
                raise (named(last_target, last) if last is not None
                       else self._outage_error(failures))
            now = self.kernel.clock.monotonic()
            if parked_at is None:
                parked_at = now
                self.kernel.counters["outages"] += 1
                ready = round(min(self.kernel.breaker(t.breaker_key).ready_in()
                                  for t in self.targets), 3)
                error = (named(last_target, last) if last is not None
                         else self._outage_error(failures))
                await self._tell(ModelOutage(data={
                    "models": [t.spec for t in self.targets],
                    "error": cast(ErrorData, error.to_dict()), "retry_in_s": ready}))
                self._doing("model_outage", last_target.spec)
                await self._tell(RunWaiting(data={
                    "reason": "model_outage", "model": last_target.spec,
                    "cause": _cause(error.message), "retry_in_s": ready}))
            elif self.outage_timeout_s and now - parked_at >= self.outage_timeout_s:
                raise self._outage_error(failures, waited=now - parked_at)
            await self._wait_for_provider()
            # A long outage adds failures at every look: the step records the first 64.
            del failures[64:]

    async def _tell(self, event: RunWaiting | ModelOutage | ModelRecovered) -> None:
        """Commit an event about the call under way."""
        if isinstance(event, RunWaiting):
            self._told = (event.data["reason"], event.data["model"])
        await self._note(event)

    async def _retrying(self, target: Target, exc: ModelError, delay: float) -> None:
        """Say what the run waits for before a retry: once per model and reason, not at
        every try (the step's ``attempts`` list them all)."""
        reason: WaitingReason = ("rate_limit" if exc.code == "model_rate_limited"
                                 else "model_retry")
        self._doing("rate_limit" if reason == "rate_limit" else "model_retry", target.spec)
        if self._told == (reason, target.spec):
            return
        retry_after = exc.details.get("retry_after")
        wait = (float(retry_after) if isinstance(retry_after, int | float) and not delay
                else delay)
        await self._tell(RunWaiting(data={
            "reason": reason, "model": target.spec, "cause": _cause(exc.message),
            "retry_in_s": round(wait, 3)}))

    async def _wait_for_provider(self) -> None:
        breakers = [self.kernel.breaker(t.breaker_key) for t in self.targets]
        ready = min(b.ready_in() for b in breakers)
        wait = min(max(ready, self.retry.base_s), _PARK_POLL_S)
        await wait_first(self.kernel.clock, [b.changed() for b in breakers], wait)

    def _outage_error(self, failures: list[AttemptData], waited: float | None = None
                      ) -> ModelError:
        models = ", ".join(t.spec for t in self.targets)
        message = (f"every model is unavailable ({models})" if waited is None else
                   f"no model answered for {waited:.0f} s ({models}); "
                   "settings.outage_timeout_s ran out")
        # Name the cause: the last failure that says something (not "breaker open").
        cause = next((f for f in reversed(failures) if f.get("message")), None)
        if cause is not None:
            message += f"; last error from {cause['model']}: {cause['message']}"
        return ModelError(message, code="model_outage", retryable=True,
                          details={"attempts": failures[-8:]})

    def _failed(self, target: Target, exc: ModelError, attempt: int,
                failures: list[AttemptData]) -> float | None:
        """Record a failed attempt; the delay before retrying it, or None."""
        self.kernel.counters["failed_attempts"] += 1
        retry_after = exc.details.get("retry_after")
        if not isinstance(retry_after, int | float):
            retry_after = None
        paused = False
        if exc.code == "model_rate_limited":
            self.kernel.counters["rate_limited"] += 1
            if retry_after and exc.retryable:
                # Every call to this lane waits, not only this one: the retry queues
                # behind the pause (its wait shows as queue time) instead of sleeping.
                lane = self.kernel.scheduler.lane_for(target.model.provider, target.name)
                self.kernel.scheduler.pause(lane, float(retry_after))
                paused = True
        delay = self.retry.delay(attempt, retry_after) if exc.retryable else None
        failure: AttemptData = {"model": target.spec, "code": exc.code,
                                "message": exc.message[:300]}
        if "status" in exc.details:
            failure["status"] = exc.details["status"]
        if delay is not None:
            failure["retry_in_s"] = round(delay, 3)
        failures.append(failure)
        log.info("model %s failed (%s)%s", target.spec, exc.code,
                 f"; retrying in {delay:.2f} s" if delay is not None else "")
        return 0.0 if paused and delay is not None else delay

    async def _attempt(self, target: Target, request: ModelRequest, tokens: int,
                       queue: QueueData) -> AssistantMessage:
        provider, name, scheduler = target.model.provider, target.name, self.kernel.scheduler
        # Granted at once, the call waited for nothing anyone could see: it is said to
        # queue only when it does.
        grant = scheduler.grant_now(provider=provider, model=name, priority=self.priority,
                                    tokens=tokens, weight=self.weight)
        if grant is None:
            self._doing("model_queue", scheduler.lane_for(provider, name))
            grant = await scheduler.queue(
                provider=provider, model=name,
                priority=self.priority, tenant=self.tenant, agent=self.agent,
                weight=self.weight, tokens=tokens)
        queue["lane"] = grant.lane
        self._doing("model", target.spec)
        queue["position"] = max(queue.get("position", 0), grant.position)
        queue["wait_ms"] = round(queue["wait_ms"] + grant.wait_s * 1000, 3)
        used: int | None = None
        self._fresh, self._matched, self._diverged = [], 0, False
        self._shown = "".join(self._sent)
        clock = self.kernel.clock
        admitted = clock.monotonic()
        self._ttfc = None
        try:
            try:
                model = target.model
                asked = _for(target, request)
                ready = model.ready(asked)
                if ready is not None:
                    # The whole answer at once: shown as a stream of it would be.
                    self._ttfc = clock.monotonic() - admitted
                    if ready.text:
                        self._show(ready.text)
                else:
                    acc = StreamAccumulator(model=target.spec)
                    async for event in model.stream(asked):
                        if self._ttfc is None:
                            self._ttfc = clock.monotonic() - admitted
                        acc.add(event)
                        if isinstance(event, TextDelta) and event.text:
                            self._show(event.text)
            except ModelError:
                raise
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a provider bug must fail the call, not the daemon
                log.exception("model %s raised an unmapped error", target.spec)
                raise ModelError(f"model {target.spec} failed: {type(exc).__name__}: "
                                 f"{exc}", code="model_error", retryable=False) from exc
            message = ready if ready is not None else acc.message()
            if message.usage is not None:
                used = message.usage.input_tokens + max(self._output,
                                                        message.usage.output_tokens)
            if not self._diverged and self._matched < self._sent_len:
                # The answer is shorter than what an earlier attempt showed.
                self._reset()
            return message
        finally:
            grant.release(used)

    def _show(self, text: str) -> None:
        """Publish ``text`` unless clients already saw it from an earlier attempt."""
        self._fresh.append(text)
        if self._diverged or self._matched >= self._sent_len:
            self._emit(text)
            return
        overlap = self._shown[self._matched:self._matched + len(text)]
        if text.startswith(overlap):
            self._matched += len(text)
            if self._matched > self._sent_len:
                self._emit(text[len(overlap):])
            return
        self._reset()

    def _reset(self) -> None:
        """Tell clients to drop this step's partial text, then show this attempt's."""
        self._diverged = True
        self.resets += 1
        self.kernel.counters["stream_resets"] += 1
        self._publish("", True)
        self._sent, self._sent_len = [], 0
        fresh = "".join(self._fresh)
        if fresh:
            self._emit(fresh)

    def _emit(self, text: str) -> None:
        self._sent.append(text)
        self._sent_len += len(text)
        self._matched = self._sent_len
        self._publish(text, False)
