"""The suite's replay mode (tests/replay_mode.py): which tests replay their runs, and
that CI's test command turns it on for the tests that drive the run loop (issue 35,
item 1: "the test suite replays every run it makes to catch" determinism bugs)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.replay_mode import selects

ROOT = Path(__file__).resolve().parents[1]


def test_the_setting_selects_every_test_some_paths_or_none() -> None:
    test = "tests/runtime/test_replay.py::test_plain_turn_replays_equal[sqlite]"
    assert selects("1", test) and selects("1", "tests/cli/test_x.py::t")
    assert not selects("", test) and not selects("0", test)
    assert selects("tests/runtime", test) and selects("tests/cli, tests/runtime/", test)
    assert selects("tests/runtime/test_replay.py", test)
    assert not selects("tests/runtime/test_replay", test)  # (a file is named whole)
    assert not selects("tests/run", test) and not selects("tests/hooks", test)


def test_ci_s_test_command_replays_the_run_loop_s_tests() -> None:
    """scripts/test.sh (what .ci/run runs) sets AGENTD_TEST_REPLAY unless the caller
    did; the folders it names exist (a renamed one would quietly replay nothing)."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    found = re.search(r'AGENTD_TEST_REPLAY=\$\{AGENTD_TEST_REPLAY-([^}]+)\}', script)
    assert found, "scripts/test.sh does not set AGENTD_TEST_REPLAY"
    paths = found.group(1).split(",")
    assert "tests/runtime" in paths and "tests/hooks" in paths
    for path in paths:
        assert (ROOT / path).exists(), path
