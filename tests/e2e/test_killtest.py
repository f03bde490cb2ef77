"""The kill test (bench/killtest.py) in small: a few SIGKILLs of the real daemon under
load, then every invariant checked (nothing acknowledged lost, nothing repeated, every
run that waited for a decision about a cut tool call decided and settled)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.daemons import run_bench

pytestmark = pytest.mark.e2e

HARNESS = Path(__file__).resolve().parents[2] / "bench" / "killtest.py"


def test_a_few_kills_break_no_invariant(tmp_path: Path) -> None:
    figures, result = run_bench(HARNESS, [
        "--kills", "5", "--seed", "7", "--workdir", str(tmp_path / "killtest"),
        "--settle-timeout", "30", "--drain-timeout", "30", "--startup-timeout", "90"],
        tmp_path, timeout=400)
    assert "error" not in figures, f"{figures['error']}\n{result.stderr[-4000:]}"
    assert figures["violations"] == 0, (figures, result.stderr[-4000:])
    assert set(figures["violations_by_invariant"].values()) == {0}
    assert result.returncode == 0, result.stderr[-4000:]
    assert figures["kills"] == figures["restarts"] == 5
    for name in ("acknowledged", "runs", "events", "effects", "idem_effects",
                 "sse_sessions_replayed", "followed_events"):
        assert figures[name] > 0, (name, figures)
    assert figures["runs_by_status"].get("completed", 0) > 0, figures
    assert sum(figures["runs_by_status"].values()) == figures["runs"]
    # A kill may or may not catch record_once mid-call; when it did, the run waited and
    # the harness decided (each request answered once), and only a "fail" decision
    # fails a run.
    decisions = figures["decisions"]
    assert set(decisions) <= {"skip", "retry", "fail"}, figures
    assert sum(decisions.values()) == figures["approval_requests"], figures
    assert figures["runs_waited"] <= figures["approval_requests"], figures
    if figures["runs_waited"]:
        assert figures["decide_requests"] > 0, figures
    assert set(figures["runs_by_status"]) <= {"completed", "failed"}, figures
    assert figures["runs_by_status"].get("failed", 0) <= decisions.get("fail", 0), figures
    assert figures["final_active_runs"] == figures["final_queued_runs"] == 0
    assert figures["final_exit"] == 0
