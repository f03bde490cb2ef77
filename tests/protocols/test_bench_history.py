"""bench/history.py's adapter and door paths in small: every mode of each runs against
the real daemon with no error and every answer checked (figures are not judged here:
timing belongs to the bench)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.daemons import run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_history_bench_runs_clean_on_the_adapter_and_door_paths(tmp_path: Path
                                                                     ) -> None:
    figures, result = run_bench(BENCH / "history.py", [
        "--paths", "adapter,langgraph,openai", "--lengths", "2,5", "--turns", "2"], tmp_path)
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


@pytest.mark.parametrize("peer", ["lean", "stub"])
def test_the_history_bench_runs_clean_on_the_provider_path(tmp_path: Path, peer: str
                                                           ) -> None:
    """Both providers through their SDKs to each model server (the bench's lean peer,
    the tests' stub), every answer checked to be its echo: a figure per length and
    mode, the kernel's part of it and the request's size (the body grows with the
    history)."""
    figures, result = run_bench(BENCH / "history.py", [
        "--lengths", "2,20", "--turns", "2", "--peer", peer], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["peer"] == peer
    for provider in ("openai", "anthropic"):
        for mode in ("wait", "stream"):
            assert set(figures["cpu_ms_per_turn"][provider][mode]) == {"2", "20"}
            detail = figures["detail"][provider][mode]
            assert detail["20_request_kb"] > detail["2_request_kb"] > 0, detail
            assert detail["2_sys_ms"] >= 0 and detail["20_sys_ms"] >= 0
