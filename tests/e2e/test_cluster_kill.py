"""The cluster kill harness (bench/cluster.py --quick): three nodes on one PostgreSQL
database, a random node killed every few seconds under a mixed load (turns with
tools, schedules, subtasks, streams hopping between nodes). Nothing acknowledged is
lost, no effect or fire happens twice, no fire is lost, no stream has a gap.

The failover figure is the harness's to report (docs/benchmarks.md), not this test's
to check: a loaded machine is slow, not wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import PG_URL
from tests.daemons import clean_env, run_bench

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

HARNESS = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"


def test_killing_nodes_loses_and_repeats_nothing(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    env = clean_env()
    # The daemons run this tree's agentd, not whichever one is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(HARNESS.parents[1] / "src"),
                                         *filter(None, [env.get("PYTHONPATH")])])
    figures, result = run_bench(HARNESS, [
        "--quick", "--seed", "33", "--postgres", PG_URL,
        "--workdir", str(tmp_path / "cluster"), "--startup-timeout", "120"],
        tmp_path, timeout=600, env=env)
    assert "error" not in figures, f"{figures['error']}\n{result.stderr[-4000:]}"
    assert figures["violations"] == 0, (figures, result.stderr[-4000:])
    assert set(figures["violations_by_invariant"].values()) == {0}
    for name in ("lost", "duplicate_effects", "fires_lost", "fires_duplicated",
                 "stream_gaps", "failover_missing"):
        assert figures[name] == 0, (name, figures)
    assert figures["ok"] is True and result.returncode == 0, result.stderr[-4000:]
    # Something of each kind happened, so the checks had something to check.
    for name in ("kills", "acknowledged", "fire_times", "subtasks", "calls",
                 "stream_frames", "stream_node_hops", "effects"):
        assert figures[name] > 0, (name, figures)
    assert figures["runs_by_status"] == {"completed": figures["runs"]}, figures
    assert figures["final_exit"] == [0, 0, 0]
