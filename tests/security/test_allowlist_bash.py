"""The allow-list against real bash: whatever line it accepts, bash runs only programs
of the known-safe set. Every program is a stub on PATH that records its name, so a
line the parser read differently from bash (a here-document that ends elsewhere, a
quote that hides a substitution) shows as a stub that should not have run."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.security import _allowlist
from agentd.security.commands import analyse, provably_safe

BASH = shutil.which("bash")
SAFE = sorted(_allowlist._PLAIN | set(_allowlist._CHECKS) - {"[", "test", "cd", "echo",
                                                           "printf", "pwd", "true",
                                                           "false", "type"})
UNSAFE = ["sh", "curl", "python3", "awk", "xargs", "nc", "evil", "x.sh", "id2"]
WORDS = [*SAFE[:12], "git", "find", "sort", "sed", *UNSAFE, "-c", "-exec", "x", "'x'",
         '"x"', "*", "$f", "${f}", "f", "for", "in", "do", "done", ";", "&&", "||", "|",
         "&", "\n", "<<EOF", "<<'EOF'", "EOF", "E\\OF", "<<E\\OF", "(", ")", "{", "}",
         "#", "'", '"', "\\", "$(", "`", ">", "<", "2>&1", "/dev/null", "=", "a=b", "\t",
         "if", "then", "fi", "!", "\\;", "--", "-n", "1p", "s/a/b/"]

pytestmark = pytest.mark.skipif(BASH is None, reason="no bash here")


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stubs")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in [*SAFE, *UNSAFE, "git", "bash"]:
        stub = bin_dir / name
        stub.write_text('#!/bin/sh\necho "${0##*/}" >> "$STUB_LOG"\n')
        stub.chmod(0o755)
    return root


def _ran(stubs: Path, line: str) -> list[str]:
    log = stubs / "ran.log"
    log.write_text("")
    work = stubs / "work"
    work.mkdir(exist_ok=True)
    assert BASH is not None
    # A loop that never ends is stopped; it ran only what the log says.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([BASH, "--noprofile", "--norc", "-c", line], cwd=work,
                       env={"PATH": str(stubs / "bin"), "STUB_LOG": str(log),
                            "HOME": str(work)},
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=5,
                       check=False)
    return log.read_text().split()


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
def test_what_the_allow_list_accepts_runs_only_safe_programs(stubs: Path,
                                                             words: list[str]) -> None:
    line = " ".join(words)
    if not provably_safe(line)[0]:
        return
    ran = _ran(stubs, line)
    assert set(ran) <= set(SAFE), (line, ran)


@pytest.mark.parametrize("line", [
    "cat <<E\\OF\nEOF\nevil\nE\\OF\n",
    "cat <<EOF\ndon't\nEOF\nevil\n",
    "cat <<-EOF\n\tEOF\nevil\nEOF\n",
])
def test_here_documents_bash_ends_elsewhere_run_the_rest(stubs: Path, line: str) -> None:
    assert "evil" in _ran(stubs, line)  # what bash does: the differential is real
    assert not provably_safe(line)[0]


def test_the_stubs_record_what_runs(stubs: Path) -> None:
    assert sorted(_ran(stubs, "cat x | sort; evil")) == ["cat", "evil", "sort"]


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
def test_what_a_pattern_rule_may_allow_runs_only_the_programs_it_matched(
        stubs: Path, words: list[str]) -> None:
    """A ``commands`` allow rule matches the analyser's simple commands; past the gate,
    bash must run no program the analyser did not list."""
    line = " ".join(words)
    if not provably_safe(line, known_only=False)[0] or analyse(line).parse_error:
        return
    listed = {argv[0].rsplit("/", 1)[-1] for argv in analyse(line).commands if argv}
    assert set(_ran(stubs, line)) <= listed, line
