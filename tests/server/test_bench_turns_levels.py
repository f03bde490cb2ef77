"""bench/turns.py --levels in small: the agentd side runs once per SQLite durability
level in each round, the first level's figures under the plain keys and the other's
with its suffix, each daemon at the level asked whatever ``AGENTD_STORE`` the bench
inherited (figures are not judged here: timing belongs to the bench)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.daemons import clean_env, run_bench, run_refused

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_each_level_gets_a_daemon_of_its_own_at_that_level(tmp_path: Path) -> None:
    # The inherited store says NORMAL: the first level asked (FULL) must still win.
    env = {**clean_env(), "AGENTD_STORE": '{"synchronous": "NORMAL"}'}
    figures, result = run_bench(BENCH / "turns.py", [
        "--skip-termo", "--waited-only", "--levels", "full,NORMAL", "--clients", "2",
        "--seconds", "1", "--warmup", "0.2"], tmp_path, env=env)
    assert result.returncode == 0, (figures, result.stderr[-4000:])
    assert figures["store_synchronous"] == "FULL"
    assert figures["store_synchronous_normal"] == "NORMAL"
    for suffix in ("", "_normal"):
        assert figures[f"errors{suffix}"] == 0, result.stderr[-4000:]
        assert figures[f"turns{suffix}"] > 0
        assert figures[f"server_cpu_ms_per_turn{suffix}"] > 0
        # The kernel's part of it (/proc's system time), never more than the whole.
        assert 0 <= figures[f"server_sys_ms_per_turn{suffix}"] \
            <= figures[f"server_cpu_ms_per_turn{suffix}"]
        assert figures[f"durability_mismatches{suffix}"] == 0
        assert figures[f"agentd_exit{suffix}"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--levels", "FULL,OFF"], "--levels takes NORMAL and FULL, each at most once"),
    (["--levels", "FULL,full"], "--levels takes NORMAL and FULL, each at most once"),
    (["--levels", "FULL", "--url", "http://127.0.0.1:9"],
     "--levels needs the spawned daemon, not --url"),
])
def test_a_bad_levels_option_is_one_clear_line(args: list[str], message: str,
                                               tmp_path: Path) -> None:
    assert message in run_refused(BENCH / "turns.py", args, tmp_path)


@pytest.mark.parametrize("inherited", ["[1]", "{not json"])
def test_an_inherited_store_levels_cannot_merge_into_is_refused_at_once(
        inherited: str, tmp_path: Path) -> None:
    # Refused before any daemon starts, rather than failing each round.
    stderr = run_refused(BENCH / "turns.py", ["--levels", "FULL,NORMAL"], tmp_path,
                         env={**clean_env(), "AGENTD_STORE": inherited})
    assert "the AGENTD_STORE inherited is not a JSON object" in stderr
