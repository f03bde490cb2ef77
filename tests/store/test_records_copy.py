"""``RunRecord.copy`` copies every field (a field added to the record and not to the
copy fails here)."""

from __future__ import annotations

import dataclasses

from agentd.store.records import RunRecord


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
