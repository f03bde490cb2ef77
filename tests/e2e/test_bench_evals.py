"""bench/evals.py in small: it runs clean, and what it checks holds (every replay
matches with no model call and no token charged, every case of the eval passes, the
big suite is cancelled with cases still queued); its figures are not judged here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.daemons import SRC, clean_env, run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_evals_bench_runs_clean(tmp_path: Path) -> None:
    env = {**clean_env(), "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    figures, result = run_bench(BENCH / "evals.py", [
        "--replays", "2", "--cases", "5", "--big", "100", "--turns", "3"], tmp_path,
        env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert figures["replay"]["model_calls"] == 0 and figures["replay"]["tokens_charged"] == 0
    assert figures["eval"]["passed"] == 5
    loaded = figures["interactive"]
    assert loaded["suite_status"] == "cancelled" and loaded["suite_cases_queued_meanwhile"] > 0
    assert loaded["turn_ms_during_suite"]["p50"] > 0
