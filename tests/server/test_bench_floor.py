"""bench/floor.py in small: the floor server (a raw ASGI durable echo) and agentd both
answer every turn with their echo and each server's CPU per turn is counted (figures
are not judged here: timing belongs to the bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.daemons import clean_env, run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_floor_bench_runs_both_servers_clean(tmp_path: Path) -> None:
    figures, result = run_bench(BENCH / "floor.py", [
        "--clients", "2", "--seconds", "1", "--warmup", "0.2", "--rounds", "1"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    for name in ("floor", "agentd"):
        side = figures[name]
        assert side["errors"] == 0, (name, result.stderr[-4000:])
        assert side["turns_per_s"][0] > 0 and side["server_cpu_ms_per_turn_median"] > 0
    assert figures["ratio"] > 0 and figures["store_synchronous"] == "FULL"


def test_the_floor_bench_refuses_a_bad_option(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BENCH / "floor.py"), "--rounds", "0"],
                            env=clean_env(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert "--clients, --seconds and --rounds must be positive" in result.stderr


def test_the_floor_bench_measures_a_turn_committed_once_beside_it(tmp_path: Path) -> None:
    figures, result = run_bench(BENCH / "floor.py", [
        "--clients", "2", "--seconds", "1", "--warmup", "0.2", "--rounds", "1",
        "--commits", "2,1", "--skip-agentd"], tmp_path)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert "agentd" not in figures and "ratio" not in figures
    for name in ("floor", "floor_one_commit"):
        side = figures[name]
        assert side["errors"] == 0, (name, result.stderr[-4000:])
        assert side["turns_per_s"][0] > 0 and side["server_cpu_ms_per_turn_median"] > 0
    assert figures["one_commit_saves_ms"] == round(
        figures["floor"]["server_cpu_ms_per_turn_median"]
        - figures["floor_one_commit"]["server_cpu_ms_per_turn_median"], 3)


@pytest.mark.parametrize("commits", ["3", "1,1", "two", ""])
def test_the_floor_bench_refuses_a_bad_commits_list(tmp_path: Path, commits: str) -> None:
    result = subprocess.run([sys.executable, str(BENCH / "floor.py"), "--commits", commits],
                            env=clean_env(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert "--commits takes 1, 2 or both (2,1)" in result.stderr
