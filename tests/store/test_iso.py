"""``records.iso``, the times every API answer and event carries, formats a time
exactly as ``datetime.fromtimestamp(ts, UTC).isoformat()`` does (its own formatting
keeps the date and time of the last second and rounds the microseconds the way
datetime rounds them)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from agentd.store.records import iso


def reference(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


@given(st.floats(min_value=-2e9, max_value=253402300799.0, allow_nan=False))
def test_any_time_is_formatted_as_datetime_formats_it(ts: float) -> None:
    assert iso(ts) == reference(ts)


@given(st.integers(min_value=0, max_value=4_000_000_000),
       st.integers(min_value=0, max_value=1_999_999))
def test_half_microseconds_round_as_datetime_rounds_them(second: int, halves: int) -> None:
    ts = second + (halves + 0.5) / 2e6
    assert iso(ts) == reference(ts)


def test_edges() -> None:
    for ts in (0.0, 0.9999995, 0.9999994, 1.0, 59.9999999, 1764259276.5,
               253402300798.9999995):
        assert iso(ts) == reference(ts)
    assert iso(None) is None
    assert iso(1764259276.0) == "2025-11-27T16:01:16Z"
    assert iso(1764259276.25) == "2025-11-27T16:01:16.250000Z"
