"""bench/mcp_oauth.py in small: it runs clean, the door answers both tokens (the bench
asserts every answer) and every figure is there (timing belongs to the bench)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.daemons import run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mcp_oauth.py"


def test_the_oauth_bench_runs_clean(tmp_path: Path) -> None:
    figures, result = run_bench(BENCH, ["--requests", "5", "--rounds", "1"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    door = figures["door_tools_list_cpu_us"]
    assert door["daemon_token"] > 0 and door["oauth_token"] > 0
    assert figures["verify_jwt_us"] > 0 and figures["client_token_per_call_us"] > 0
