"""Comparing a replay's events with the original run's: the first place the loop
decided differently (:mod:`agentd.runtime.replay`).

Both runs' events are normalised first: what differs between any two executions of
the same decisions is set aside (ids the runtime makes up, times and durations; how
the model call went through the kernel: queue, retries, fallbacks, outages; what a
replay does not redo on purpose: workspace snapshots, memory recall, compaction,
budget warnings, the child runs its tools started; a restart's ``run.resumed`` /
``run.parked`` and the first start of a call it started again), the replay's run
id is written as the original's, and the results of one step's concurrent read-only
calls are put in call order. Everything else must be equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from agentd.store.records import EventRecord

__all__ = ["calls_diff", "calls_of", "compared", "first_divergence", "normalised",
           "usage_from"]

#: Kinds that are not the loop's decisions (see the module's docstring).
_SET_ASIDE = frozenset({
    "model.outage", "model.recovered", "run.resumed", "run.parked", "budget.warning",
    "checkpoint", "tools.unavailable", "workspace.snapshot", "workspace.restored",
    "memory.consolidated", "session.compacted",
    # The child runs a run's tools started (a subtask, a call to an agent) and their
    # ends: a replay starts none, the tool's recorded result is what its loop is given.
    "subtask.started", "subtask.finished"})
#: Data keys that are not the loop's decisions, by kind ("*": every kind).
_KEYS: dict[str, frozenset[str]] = {
    "*": frozenset({"duration_ms", "ttfc_ms", "at"}),
    "message.user": frozenset({"replay", "traceparent"}),
    "message.assistant": frozenset({
        "attempts", "fallback", "stream_resets", "outage_s", "queue", "model",
        "compaction", "recalled", "context_trimmed"}),
    "approval.requested": frozenset({"approval_id", "expires_at"}),
    "approval.decided": frozenset({"approval_id"}),
    "tool.started": frozenset({"retry"}),
}
#: Kinds whose consecutive events a step's concurrent calls commit together.
_CONCURRENT = frozenset({"tool.started", "tool.finished"})


def normalised(events: Sequence[EventRecord], run_id: str, as_id: str, *,
               key: str | None = None, as_key: str | None = None
               ) -> list[tuple[int, dict[str, Any]]]:
    """``run_id`` 's events as ``(step, {"kind", "data"})``, normalised, with
    ``run_id`` written as ``as_id`` (and the session's ``key`` as ``as_key``: a
    scratch session's key in what the policy says of a call, as the original's);
    ``step`` is the loop's step the event belongs to (0 before the first model
    answer)."""
    out: list[tuple[int, dict[str, Any]]] = []
    step = 0
    mine = [e for e in events if e.run_id == run_id]
    # A call started again after a restart (``retry``): its last start in its step is
    # the one (call ids repeat from step to step with some models).
    last_start: dict[tuple[int, Any], int] = {}
    at = 0
    for e in mine:
        if e.kind == "message.assistant":
            at = int(e.data.get("step") or at + 1)
        elif e.kind == "tool.started":
            last_start[(at, e.data.get("call_id"))] = e.seq
    for event in mine:
        if event.kind == "message.assistant":
            step = int(event.data.get("step") or step + 1)
        if event.kind in _SET_ASIDE or (event.kind == "tool.started" and last_start.get(
                (step, event.data.get("call_id"))) != event.seq):
            continue
        data: Any = event.data
        if event.kind == "run.waiting" and data.get("reason") != "approval":
            continue
        drop = _KEYS["*"] | _KEYS.get(event.kind, frozenset())
        kept = {k: v for k, v in data.items() if k not in drop}
        text = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode()
        if run_id != as_id:
            text = text.replace(run_id, as_id)
        if key is not None and as_key is not None and key != as_key:
            text = text.replace(orjson.dumps(key).decode()[1:-1],
                                orjson.dumps(as_key).decode()[1:-1])
        out.append((step, {"kind": event.kind, "data": orjson.loads(text)}))
    return _in_call_order(out)


def _in_call_order(items: list[tuple[int, dict[str, Any]]]
                   ) -> list[tuple[int, dict[str, Any]]]:
    """Runs of consecutive ``tool.started`` (or ``tool.finished``) events sorted by
    call id: concurrent read-only calls may finish in any order."""
    out: list[tuple[int, dict[str, Any]]] = []
    i = 0
    while i < len(items):
        kind = items[i][1]["kind"]
        j = i + 1
        if kind in _CONCURRENT:
            while j < len(items) and items[j][1]["kind"] == kind:
                j += 1
            out.extend(sorted(items[i:j], key=lambda it: str(it[1]["data"].get("call_id"))))
        else:
            out.append(items[i])
        i = j
    return out


def first_divergence(expected: list[tuple[int, dict[str, Any]]],
                     got: list[tuple[int, dict[str, Any]]]) -> dict[str, Any] | None:
    """The first place the two differ: ``{step, expected, got}`` (an event missing on
    one side is None there); None when they are equal."""
    for index in range(max(len(expected), len(got))):
        want = expected[index] if index < len(expected) else None
        have = got[index] if index < len(got) else None
        if want is not None and have is not None and want[1] == have[1]:
            continue
        step = (want or have or (0, {}))[0]
        return {"step": step, "index": index,
                "expected": None if want is None else want[1],
                "got": None if have is None else have[1]}
    return None


# -- a fork against its original (agentd.runtime.fork) ------------------------------------

#: Keys a fork's events differ by on purpose: its message names the fork, and the
#: answers it served from the log carry no usage (the original paid for them).
_FORK_KEYS: dict[str, frozenset[str]] = {
    "message.user": frozenset({"fork"}),
    "message.assistant": frozenset({"usage"}),
    "run.completed": frozenset({"usage"}),
    "run.failed": frozenset({"usage"}),
    "run.cancelled": frozenset({"usage"}),
}


def compared(items: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """:func:`normalised` events with what a fork changes on purpose set aside."""
    out = []
    for step, item in items:
        drop = _FORK_KEYS.get(item["kind"])
        if drop:
            item = {"kind": item["kind"],
                    "data": {k: v for k, v in item["data"].items() if k not in drop}}
        out.append((step, item))
    return out


def calls_of(events: Sequence[EventRecord], run_id: str, from_step: int = 1
             ) -> list[dict[str, Any]]:
    """The tool calls ``run_id`` 's model asked for from ``from_step`` on: ``{step,
    name, arguments}`` in order."""
    out: list[dict[str, Any]] = []
    for e in events:
        if e.run_id != run_id or e.kind != "message.assistant":
            continue
        step = int(e.data.get("step") or 0)
        if step >= from_step:
            out.extend({"step": step, "name": c.get("name"),
                        "arguments": c.get("arguments") or {}}
                       for c in e.data.get("tool_calls") or ())
    return out


def _key(call: dict[str, Any]) -> bytes:
    return orjson.dumps([call["name"], call["arguments"]], option=orjson.OPT_SORT_KEYS)


def calls_diff(original: list[dict[str, Any]], fork: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The calls (name and arguments, as many times as the difference) the fork made
    that the original did not, and those the original made that the fork did not."""
    had, has = Counter(map(_key, original)), Counter(map(_key, fork))
    added, removed = has - had, had - has
    pick = {_key(c): {"name": c["name"], "arguments": c["arguments"]}
            for c in (*original, *fork)}
    return ([pick[k] for k, n in added.items() for _ in range(n)],
            [pick[k] for k, n in removed.items() for _ in range(n)])


def usage_from(events: Sequence[EventRecord], run_id: str, from_step: int
               ) -> dict[str, Any]:
    """The tokens (and cost, where priced) of ``run_id`` 's model answers from
    ``from_step`` on."""
    total: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
    for e in events:
        if e.run_id != run_id or e.kind != "message.assistant":
            continue
        usage = e.data.get("usage")
        if not usage or int(e.data.get("step") or 0) < from_step:
            continue
        for k in ("input_tokens", "output_tokens", "cached_tokens"):
            total[k] += int(usage.get(k) or 0)
        if "cost_usd" in usage:
            total["cost_usd"] = round(total.get("cost_usd", 0.0) + float(usage["cost_usd"]), 6)
    return total
