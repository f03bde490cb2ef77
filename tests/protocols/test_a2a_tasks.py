"""The A2A door's tasks and stream items, built as JSON (the door's front sends them as
they are), are exactly what the SDK's dispatcher prints for the same value as its
protobuf type: parsed into the SDK's type and printed back by protobuf's own
``MessageToDict``, each comes back unchanged, for every run state, history length,
approval and text."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from a2a.types.a2a_pb2 import StreamResponse, Task
from google.protobuf.json_format import MessageToDict, ParseDict
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.protocols.a2a._tasks import (
    artifact_update,
    event_proto,
    status_update,
    task_json,
    task_proto,
)
from agentd.store.records import RunRecord

STATUSES = ["queued", "running", "waiting_approval", "completed", "failed", "cancelled",
            "interrupted"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _run(**values: Any) -> RunRecord:
    base: dict[str, Any] = {f.name: None for f in fields(RunRecord)}
    base.update(id="run_0123", session_id="s1", agent_id="a1", status="completed",
                input="hello", output="echo: hello", created_at=1_800_000_000.25)
    base.update(values)
    return RunRecord(**base)


def _printed(value: dict[str, Any], proto: type) -> dict[str, Any]:
    printed: dict[str, Any] = MessageToDict(ParseDict(value, proto()))
    return printed


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from(STATUSES), text=st.text(max_size=40),
       output=st.none() | st.text(max_size=40),
       created=st.floats(0, 4e9) | st.just(0.0),
       finished=st.none() | st.floats(1, 4e9),
       history=st.none() | st.integers(0, 4), artifacts=st.booleans(),
       error=st.none() | st.fixed_dictionaries({}, optional={
           "code": st.text(max_size=10), "message": st.text(max_size=20)}),
       arguments=st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
       key=st.text(min_size=1, max_size=20))
def test_a_task_is_what_the_sdk_prints(status: str, text: str, output: str | None,
                                       created: float, finished: float | None,
                                       history: int | None, artifacts: bool,
                                       error: dict[str, Any] | None,
                                       arguments: dict[str, Any] | None, key: str) -> None:
    run = _run(status=status, input=text or "x", output=output, created_at=created,
               finished_at=finished, error=error)
    pending = None if arguments is None else {
        "approval_id": "ap_1", "name": "calculator", "arguments": arguments,
        "reason": "policy", "options": ["approve", "deny"]}
    task = task_json(run, key, history_length=history, pending=pending,
                     artifacts=artifacts)
    assert _printed(task, Task) == task
    assert MessageToDict(task_proto(task)) == task
    update = status_update(run, key, pending)
    assert _printed(update, StreamResponse) == update


@pytest.mark.parametrize("append", [False, True])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("text", ["", "echo: hi", "é\u2028\U0001f600"])
def test_an_artifact_chunk_is_what_the_sdk_prints(append: bool, last: bool, text: str
                                                  ) -> None:
    update = artifact_update("run_1", "ctx/1", text, append=append, last=last)
    assert _printed(update, StreamResponse) == update
    event = event_proto(update)
    assert (event.append, event.last_chunk) == (append, last)
    assert event.artifact.parts[0].text == text


def test_the_task_says_what_each_state_means() -> None:
    done = task_json(_run(), "ctx")
    assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    assert done["artifacts"][0]["parts"] == [{"text": "echo: hello"}]
    assert [m["role"] for m in done["history"]] == ["ROLE_USER", "ROLE_AGENT"]
    asked = task_json(_run(status="waiting_approval", output=None), "ctx", pending={
        "approval_id": "ap_1", "name": "shell", "arguments": {"n": 3, "big": 2**60},
        "options": ["approve", "deny"]})
    message = asked["status"]["message"]
    assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert message["metadata"]["tool"] == "shell"
    assert message["metadata"]["options"] == ["approve", "deny"]
    assert "artifacts" not in asked
    failed = task_json(_run(status="failed", error={"code": "budget_exceeded"}), "ctx",
                       history_length=0)
    assert failed["status"]["message"]["metadata"] == {"code": "budget_exceeded"}
    assert "history" not in failed
    with pytest.raises(Exception, match="historyLength"):
        task_json(_run(), "ctx", history_length=-1)
