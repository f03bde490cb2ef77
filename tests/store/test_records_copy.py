"""Records made field by field, not by their dataclass's ``__init__``
(``RunRecord.copy``, ``EventRecord.of_row``), have every field (a field added to the
record and not to them fails here)."""

from __future__ import annotations

import dataclasses

from agentd.store.records import EventRecord, RunRecord
from agentd.store.rows import EVENT_COLS


def test_a_copy_has_every_field_and_is_another_record() -> None:
    fields = dataclasses.fields(RunRecord)
    # A distinct value per field, so a field left out (its default) shows.
    values = {f.name: (f"v-{f.name}" if f.type in ("str", "str | None", "RunStatus")
                       else {"n": i} if "dict" in str(f.type) else i + 0.5 if "float"
                       in str(f.type) else i + 1) for i, f in enumerate(fields)}
    run = RunRecord(**values)
    copy = run.copy()
    assert copy is not run
    assert dataclasses.asdict(copy) == dataclasses.asdict(run) == {
        f.name: values[f.name] for f in fields}
    copy.status = "completed"
    assert run.status == "v-status"


def test_an_event_record_of_a_row_has_every_field() -> None:
    """``EventRecord.of_row`` (which sets the fields itself) makes the record the
    dataclass would (a field added to the record and not to it fails here)."""
    fields = [f.name for f in dataclasses.fields(EventRecord)]
    assert sorted(fields) == sorted(EVENT_COLS.split(", "))
    record = EventRecord.of_row("s1", 7, "r1", "message.user", {"content": "hi"}, 1.5)
    assert record == EventRecord(session_id="s1", seq=7, run_id="r1", kind="message.user",
                                 data={"content": "hi"}, at=1.5)
    assert dataclasses.asdict(record) == {"session_id": "s1", "seq": 7, "run_id": "r1",
                                          "kind": "message.user",
                                          "data": {"content": "hi"}, "at": 1.5}
