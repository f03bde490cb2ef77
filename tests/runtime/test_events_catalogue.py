"""The event catalogue (agentd.events): every kind round-trips through the store and
its published schema, logs written before the catalogue fold exactly as they did, and
docs/api.md lists every kind with the right keys."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, Union, get_args, get_origin

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typing_extensions import get_type_hints, is_typeddict

from agentd import events
from agentd.events import EVENT_KINDS, TERMINAL_KINDS, UnknownEvent, event_adapter, parse
from agentd.llm.messages import (
    AssistantMessage,
    Thinking,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentd.runtime.history import SessionHistory
from agentd.store import NewEvent, Store
from agentd.store.records import TERMINAL_RUN_STATES, EventRecord

ROOT = Path(__file__).resolve().parents[2]
CLASSES = {kind: type(parse(kind, {})) for kind in EVENT_KINDS}


def data_type(kind: str) -> Any:
    """The TypedDict of a kind's data."""
    return typing.get_type_hints(CLASSES[kind])["data"]


def keys(td: Any) -> dict[str, tuple[Any, bool]]:
    """A TypedDict's keys: (type, required). Read from the annotations: under
    ``from __future__ import annotations`` Python 3.11 does not see ``NotRequired``
    in ``__required_keys__`` (pydantic and mypy do)."""
    out = {}
    for name, hint in get_type_hints(td, include_extras=True).items():
        optional = get_origin(hint) is NotRequired
        out[name] = (get_args(hint)[0] if optional else hint, not optional)
    return out


# -- strategies built from the catalogue's own types ----------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a data type: TypedDicts (optional keys sometimes left out), literals,
    unions, lists, and JSON for ``Any``."""
    if tp is Any:
        return _json
    if is_typeddict(tp):
        fields = keys(tp)
        return st.fixed_dictionaries(
            {k: strategy(t) for k, (t, required) in fields.items() if required},
            optional={k: strategy(t) for k, (t, required) in fields.items() if not required})
    origin = get_origin(tp)
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in get_args(tp)))
    if origin is list:
        return st.lists(strategy(get_args(tp)[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy(get_args(tp)[1]), max_size=3)
    return {str: st.text(max_size=12), int: st.integers(-(2**53), 2**53),
            bool: st.booleans(), type(None): st.none(),
            float: st.floats(allow_nan=False, allow_infinity=False)}[tp]


def full(tp: Any) -> Any:
    """A value of a data type with every optional key present."""
    if tp is Any:
        return {"any": [1, "two", None]}
    if is_typeddict(tp):
        return {k: full(t) for k, (t, _) in keys(tp).items()}
    origin = get_origin(tp)
    if origin is Literal:
        return get_args(tp)[0]
    if origin in (Union, types.UnionType):
        return full(next(a for a in get_args(tp) if a is not type(None)))
    if origin is list:
        return [full(get_args(tp)[0])]
    if origin is dict:
        return {"key": full(get_args(tp)[1])}
    return {str: "text", int: 7, bool: True, float: 0.5}[tp]


any_event = st.sampled_from(EVENT_KINDS).flatmap(
    lambda kind: strategy(data_type(kind)).map(lambda data: CLASSES[kind](data=data)))
SCHEMA = events.schema()
# Checked once and compiled once: jsonschema.validate() checks the schema itself on
# every call, which made 200 examples take a minute.
_VALIDATOR_CLASS = jsonschema.validators.validator_for(SCHEMA)
_VALIDATOR_CLASS.check_schema(SCHEMA)
VALIDATOR = _VALIDATOR_CLASS(SCHEMA)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_event)
def test_every_kind_round_trips_as_the_store_writes_it(event: Any) -> None:
    row = NewEvent.of(event, "r_1")
    assert (row.kind, row.run_id) == (event.kind, "r_1")
    # What the store does: orjson in, orjson out.
    stored = orjson.loads(orjson.dumps(row.data))
    assert parse(row.kind, stored) == event
    # The pydantic adapter agrees, and so does the published JSON schema.
    wire = {"kind": event.kind, "data": stored}
    assert event_adapter.validate_python(wire) == event
    assert event_adapter.dump_python(event) == wire
    VALIDATOR.validate(wire)


def test_the_schema_refuses_what_the_catalogue_refuses() -> None:
    good = {"kind": "run.waiting", "data": {"reason": "model_retry", "model": "openai:x",
                                            "cause": "down", "retry_in_s": 0.5}}
    jsonschema.validate(good, SCHEMA)
    for bad in ({**good, "data": {**good["data"], "reason": "bored"}},
                {**good, "data": {"reason": "queued"}},
                {"kind": "run.completed", "data": {"output": 1, "steps": 1, "usage": {}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
    assert set(SCHEMA["discriminator"]["mapping"]) == set(EVENT_KINDS)
    assert len(SCHEMA["oneOf"]) == len(EVENT_KINDS)


def test_terminal_kinds_and_statuses_are_one_set() -> None:
    assert set(TERMINAL_KINDS.values()) == TERMINAL_RUN_STATES
    assert all(kind.startswith("run.") for kind in TERMINAL_KINDS)
    assert set(TERMINAL_KINDS) <= set(EVENT_KINDS)


def test_an_unknown_kind_is_kept_not_folded() -> None:
    event = parse("memory.recalled", {"what": 1})
    assert event == UnknownEvent(kind="memory.recalled", data={"what": 1})


async def test_every_kind_round_trips_through_a_real_store(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    accepted = await store.accept_message(agent_id=agent.id, key="k", content="hi")
    wanted = [CLASSES[kind](data=full(data_type(kind))) for kind in EVENT_KINDS]
    await store.append(accepted.session.id, [NewEvent.of(e, accepted.run.id) for e in wanted])
    log = await store.read_events(accepted.session.id, after=2)
    assert [e.typed for e in log] == wanted


# -- logs written before the catalogue fold as they did ----------------------------------


class OldFold(SessionHistory):
    """The fold as it was before agentd.events (agentd 0.x, runtime/history.py): the
    oracle the typed fold must agree with."""

    def _fold(self, event: EventRecord, typed: Any = None) -> None:
        kind, data = event.kind, event.data
        if kind == "message.user":
            message = UserMessage(content=data["content"])
            if event.run_id is not None and event.run_id not in self._started:
                self._held.setdefault(event.run_id, []).append(message)
            elif self._pending and event.run_id is not None:
                self._deferred.append(message)
            else:
                self._append(message)
        elif kind == "run.started":
            self._started.add(event.run_id or "")
            for held in self._held.pop(event.run_id or "", ()):
                self._append(held)
        elif kind == "message.assistant":
            usage = data.get("usage")
            self._append(AssistantMessage(
                text=data.get("text", ""),
                tool_calls=[ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"],
                                     extra=c.get("extra"))
                            for c in data.get("tool_calls", [])],
                usage=Usage.of(usage) if usage else None,
                finish_reason=data.get("finish_reason", "stop"),
                model=data.get("model"),
                thinking=[Thinking(**t) for t in data.get("thinking") or ()],
            ))
        elif kind == "tool.finished":
            self._pending.pop(data["call_id"], None)
            if data.get("tainted") and self.tainted is None:
                self.tainted = f"{data['name']} (seq {event.seq}): {data['tainted']}"
            self.messages.append(ToolResultMessage(
                call_id=data["call_id"], name=data["name"], content=data["output"],
                is_error=bool(data.get("is_error")),
            ))
            if not self._pending and self._deferred:
                deferred, self._deferred = self._deferred, []
                self.messages.extend(deferred)
        elif kind == "workspace.snapshot":
            if data.get("ref"):
                self.workspace_ref = str(data["ref"])
            if data.get("tainted") and self.tainted is None:
                self.tainted = f"workspace (seq {event.seq}): {data['tainted']}"
        elif kind in ("run.cancelled", "run.failed", "run.interrupted", "run.completed"):
            self._held.pop(event.run_id or "", None)
            self._started.discard(event.run_id or "")


RUNS = st.sampled_from(["r1", "r2", "r3"])
CALLS = st.sampled_from(["c1", "c2", "c3"])
USAGE = {"input_tokens": 3, "output_tokens": 4, "cached_tokens": 0, "cost_usd": 0.1}


@st.composite
def old_log(draw: st.DrawFn) -> list[EventRecord]:
    """A log as the writers before the catalogue made it (literal dicts; a few entries
    older still, without keys added later, and a kind from the future)."""
    rows: list[tuple[str | None, str, dict[str, Any]]] = []
    for _ in range(draw(st.integers(1, 25))):
        run = draw(RUNS)
        choice = draw(st.integers(0, 9))
        if choice == 0:
            rows.append((run, "message.user", {"content": draw(st.text(max_size=4))}))
            rows.append((run, "run.queued", {}))
        elif choice == 1:
            rows.append((run, "message.user", {"content": "steer", "steer": True}))
        elif choice == 2:
            rows.append((run, "run.started", {}))
        elif choice == 3:
            calls = draw(st.lists(CALLS, max_size=2, unique=True))
            data: dict[str, Any] = {
                "text": draw(st.text(max_size=4)),
                "tool_calls": [{"id": c, "name": "t", "arguments": {"x": 1}} for c in calls],
                "usage": draw(st.sampled_from([None, USAGE])),
                "finish_reason": "tool_calls" if calls else "stop", "model": "m",
                "step": 1, "queue": {"class": "background", "wait_ms": 0.0}}
            if draw(st.booleans()):  # written before steps, usage and queues were logged
                data = {"text": data["text"], "tool_calls": data["tool_calls"]}
            if draw(st.booleans()):
                data["thinking"] = [{"text": "hm", "signature": "s", "redacted": None}]
            rows.append((run, "message.assistant", data))
        elif choice == 4:
            rows.append((run, "tool.started", {"call_id": draw(CALLS), "name": "t",
                                               "arguments": {}, "effect_id": "e"}))
        elif choice == 5:
            result: dict[str, Any] = {"call_id": draw(CALLS), "name": "t", "output": "o",
                                      "is_error": draw(st.booleans()), "duration_ms": 1.0}
            if draw(st.booleans()):
                result["tainted"] = "its output comes from outside"
            rows.append((run, "tool.finished", result))
        elif choice == 6:
            rows.append((run, "workspace.snapshot", draw(st.sampled_from([
                {"ref": "w1", "files": 1, "bytes": 2, "hashed_bytes": 2, "new_bytes": 2,
                 "ms": 1.0},
                {"ref": None, "error": {"code": "snapshot_failed", "message": "disk",
                                        "retryable": True}, "tainted": "unknown files"},
                {"ref": "w2", "tainted": "changed outside"}]))))
        elif choice == 7:
            kind = draw(st.sampled_from(sorted(TERMINAL_KINDS)))
            rows.append((run, kind, {"reason": "x", "output": "o", "steps": 1,
                                     "error": {"code": "e", "message": "m",
                                               "retryable": False}}))
        elif choice == 8:
            rows.append((None, "checkpoint", {"id": "c", "name": None, "kind": "auto"}))
        else:  # kinds the old fold never knew: one from this build, one from the future
            rows.append(draw(st.sampled_from([
                (run, "run.waiting", {"reason": "model_retry", "model": "m",
                                      "cause": "down", "retry_in_s": 1.0}),
                (run, "memory.recalled", {"entries": [1, 2]})])))
    return [EventRecord(session_id="s", seq=i, run_id=run, kind=kind, data=data, at=0.0)
            for i, (run, kind, data) in enumerate(rows, start=1)]


def _state(history: SessionHistory) -> tuple[Any, ...]:
    return (history.messages, history.for_model(), history.tainted, history.workspace_ref,
            history.last_seq)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old_log())
def test_an_old_log_folds_as_it_did(log: list[EventRecord]) -> None:
    old = OldFold.from_log("s", log)
    assert _state(SessionHistory.from_log("s", log)) == _state(old)
    # Folding event by event (what a running daemon does) agrees too.
    live = SessionHistory("s")
    live.extend(log)
    assert _state(live) == _state(old)


# -- docs/api.md lists every kind with its keys -----------------------------------------

_ROW = re.compile(r"^\| `([a-z_.]+)` \| (.*) \|$")


def _documented() -> dict[str, dict[str, bool]]:
    """kind -> {top-level data key: required} from docs/api.md's table of kinds (the
    first ``{...}`` of each row; ``"key"?`` is optional)."""
    text = (ROOT / "docs" / "api.md").read_text()
    start = text.index("| kind | data |")
    table = text[start:text.index("\n\n", start)]
    out: dict[str, dict[str, bool]] = {}
    for line in table.splitlines()[2:]:
        match = _ROW.match(line)
        assert match, f"not a row of the table of kinds: {line!r}"
        kind, cell = match.groups()
        assert kind not in out, f"{kind} is documented twice"
        body = cell[cell.index("{"):]
        keys: dict[str, bool] = {}
        depth, previous = 0, ""
        i = 0
        while i < len(body):
            ch = body[i]
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
                if depth == 0:
                    break
            elif ch == '"':
                end = body.index('"', i + 1)
                if depth == 1 and previous in "{,":
                    optional = body[end + 1:end + 2] == "?"
                    keys[body[i + 1:end]] = not optional
                i, previous = end, '"'
                i += 1
                continue
            if not ch.isspace():
                previous = ch
            i += 1
        out[kind] = keys
    return out


def test_docs_api_lists_every_kind_with_its_keys() -> None:
    documented = _documented()
    assert set(documented) == set(EVENT_KINDS), (
        f"missing from docs/api.md: {sorted(set(EVENT_KINDS) - set(documented))}; "
        f"not in the catalogue: {sorted(set(documented) - set(EVENT_KINDS))}")
    for kind in EVENT_KINDS:
        model = {k: required for k, (_, required) in keys(data_type(kind)).items()}
        assert documented[kind] == model, f"docs/api.md documents {kind} wrongly"
