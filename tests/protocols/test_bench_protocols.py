"""bench/protocols.py in small: every door's phases run against the real daemon with no
error, and every acknowledged turn is in its session's log (figures are not judged
here: timing belongs to the bench)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.daemons import run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "protocols.py"


def test_the_protocols_bench_runs_clean(tmp_path: Path) -> None:
    figures, result = run_bench(
        BENCH, ["--clients", "2", "--seconds", "0.5", "--warmup", "0"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    for prefix in ("", "openai_chat_", "openai_responses_", "langgraph_", "a2a_", "mcp_",
                   "ws_"):
        # The WebSocket door has no non-streamed turn: a stream phase only.
        phases = ("stream_",) if prefix == "ws_" else ("", "stream_")
        for phase in phases:
            assert figures[f"{prefix}{phase}turns"] > 0, (prefix, phase, figures)
            assert figures[f"{prefix}{phase}errors"] == 0, figures
        assert figures[f"{prefix}durability_checked"] > 0
        assert figures[f"{prefix}durability_mismatches"] == 0
        assert figures[f"{prefix}first_event_p50_ms"] is not None
    assert "ws_turns" not in figures and "ratio_ws_server_cpu_per_turn" not in figures
    for ratio in ("openai_chat_server_cpu_per_turn", "mcp_server_cpu_per_turn",
                  "mcp_stream_server_cpu_per_turn", "ws_stream_server_cpu_per_turn"):
        assert figures[f"ratio_{ratio}"] is not None, ratio
