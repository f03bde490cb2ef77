"""bench/cancel_nodes.py and bench/schedules_catchup.py in small: they run clean and
what they check holds (figures are not judged here: timing belongs to the benches)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import PG_URL
from tests.daemons import SRC, clean_env, run_bench

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _env() -> dict[str, str]:
    return {**clean_env(), "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.mark.postgres
def test_the_cancel_bench_cancels_every_run_across_nodes(tmp_path: Path, pg_url: str
                                                        ) -> None:
    assert PG_URL
    figures, result = run_bench(BENCH / "cancel_nodes.py", [
        "--postgres", PG_URL, "--runs", "2"], tmp_path, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    assert (figures["cancelled"], figures["answered_cancelled"]) == (2, 2)
    assert figures["to_cancelled_ms_p50"] > 0


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                          marks=pytest.mark.postgres)])
def test_the_catch_up_bench_fires_every_missed_time_once(tmp_path: Path, store: str,
                                                         request: pytest.FixtureRequest
                                                         ) -> None:
    args = ["--schedules", "2", "--behind", "5", "--after-s", "1"]
    if store == "postgresql":
        request.getfixturevalue("pg_url")  # (skips without PostgreSQL)
        assert PG_URL
        args += ["--postgres", PG_URL]
    figures, result = run_bench(BENCH / "schedules_catchup.py", args, tmp_path, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    assert figures["due_at_open"] >= 10  # (5 behind each, and what came due since)
    assert (figures["missed"], figures["gaps"], figures["duplicates"]) == (0, 0, 0)
