"""bench/history.py's adapter and door paths in small: every mode of each runs against
the real daemon with no error and every answer checked (figures are not judged here:
timing belongs to the bench)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_history_bench_runs_clean_on_the_adapter_and_door_paths(tmp_path: Path
                                                                     ) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AGENTD_") and k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, str(BENCH / "history.py"), "--paths", "adapter,langgraph,openai",
         "--lengths", "2,5", "--turns", "2"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=300, check=False)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no JSON line; stderr:\n{result.stderr[-4000:]}"
    figures = json.loads(lines[-1])
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["paths_errors"] == []
    sys.path.insert(0, str(BENCH))
    try:
        from _history_paths import MODES
    finally:
        sys.path.remove(str(BENCH))
    for path, modes in MODES.items():
        assert set(figures["paths"][path]) == set(modes), path
        for mode in modes:
            assert set(figures["paths"][path][mode]) == {"2", "5"}, (path, mode)
            assert all(v is not None and v >= 0
                       for v in figures["paths"][path][mode].values()), (path, mode)
