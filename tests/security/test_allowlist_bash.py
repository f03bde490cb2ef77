"""The allow-list against real bash: whatever line it accepts, bash runs only programs
of the known-safe set. Every program is a stub on PATH that records its name, so a
line the parser read differently from bash (a here-document that ends elsewhere, a
quote that hides a substitution) shows as a stub that should not have run."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.security import _allowlist
from agentd.security._expand import Unsafe, can_be_dotdot, expand, may_start, render
from agentd.security._expand import _match as _expand_match
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


# --- expansion: what bash makes of a word, and what the gate lets it reach -----------


def _bash(line: str, cwd: Path, path: str, log: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    env = {"PATH": path, "HOME": str(cwd), "LC_ALL": "C"}
    if log is not None:
        env["STUB_LOG"] = str(log)
    try:
        return subprocess.run([BASH, "--noprofile", "--norc", "-c", line], cwd=cwd,
                              env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=5, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(line, 124, "", "timeout")


#: Pieces of words: braces, sequences, quotes, escapes, globs and a loop variable.
BRACE_PIECES = ["{", "}", ",", "..", "a", "b", "1", "-", "0", "'", '"', "\\", "/", ".",
                "x", "Z", "2", "{a,b}", "{1..3}", "${f}", "$f", '"$f"', "*", "?", "[",
                "]", "=", ":", "@", "+", "{-01..2}", "{a..e..2}", "{z..x}", "..2", "$"]


def _as_expanded(word: str) -> str | None:
    """The words _expand makes of ``word`` with f=v, as bash prints them, or None."""
    try:
        words = expand(word, {"f": (("v",),)})
    except Unsafe:
        return None
    return "".join(f"<{render(w.variants[0])}>" for w in words) if words else "<>"


@pytest.mark.parametrize("word", [
    "{a,b}", "x{a,b}y", "{a,{b,c}}d", "{1..3}", "{3..1}", "{01..3}", "{-01..2}",
    "{1..10..3}", "{1..3..-1}", "{a..e..2}", "x{a..c..0}y", "{1..a}{b,c}", "a{b}c", "{}",
    "{,a}", "{a..}", "{..a}", "{a\\,b}", '{a",b"}', '{"a,b"}', '{a,"b"}', "{a..b\",c\"}",
    "\"${f}\"{a,b}", "\"$f\"{a,b}", "{a,b}\"$f\"", "{/,}etc", "{.,.}{.,.}",
    "{\"/\",x}etc", "$f",
])
def test_brace_expansion_is_what_bash_makes(tmp_path: Path, word: str) -> None:
    done = _bash(f"set -f; f=v; printf '<%s>' {word}", tmp_path, "/usr/bin:/bin")
    assert done.returncode == 0 and not done.stderr, done
    assert _as_expanded(word) == done.stdout, word


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(BRACE_PIECES), min_size=1, max_size=10))
def test_any_word_expands_as_bash_expands_it(pieces: list[str]) -> None:
    """Whatever _expand does not refuse, it expands to exactly what bash prints (file
    names off: a pattern is compared as written)."""
    word = "".join(pieces)
    mine = _as_expanded(word)
    if mine is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        done = _bash(f"set -f; f=v; printf '<%s>' {word}", Path(tmp), "/usr/bin:/bin")
    if done.returncode != 0 or done.stderr:
        return  # not one word to bash (an unbalanced quote, a syntax error)
    # A bracket expression is written back as [!...] whichever negation it used.
    assert mine == done.stdout.replace("[^", "[!"), word


# The gate's claim, checked in real bash with hostile names in the workspace: the
# programs are stubs that record their argv; none may be handed a path out of the
# workspace, an option with one glued on (for programs that have such options), or an
# option that reads a list of files.

RECORDED = sorted(_allowlist._PLAIN | set(_allowlist._CHECKS) - {"[", "test", "echo",
                                                               "printf", "pwd", "true",
                                                               "false", "type", "cd"})
HOSTILE_NAMES = ["a.txt", "b.txt", "x.py", "notes.txt", "sub/x.py", ".hidden",
                 "-f/etc/hostname", "-f../a_other/notes.txt", "--from-file=..",
                 "--files0-from=x.py", "a .. b.txt", "@x", "-c", "--check.txt"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "a_other").mkdir()
    (root / "a_other" / "notes.txt").write_text("another agent's notes\n")
    work = root / "work"
    for name in HOSTILE_NAMES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("x\n")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in RECORDED:
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nprintf '%s\\0' \"${0##*/}\" \"$@\" >> \"$STUB_LOG\"\n"
                        "printf '\\001' >> \"$STUB_LOG\"\n")
        stub.chmod(0o755)
    return root


def _calls(root: Path, line: str) -> list[list[str]]:
    log = root / "calls.log"
    log.write_bytes(b"")
    _bash(line, root / "work", str(root / "bin"), log)
    records = log.read_bytes().decode("utf-8", "replace").split("\x01")
    return [r.split("\0")[:-1] for r in records if r]


def _escapes(work: Path, argv: list[str]) -> str | None:
    """The argument that leaves the workspace, or None."""
    name, args = argv[0], argv[1:]
    lists = _allowlist._NAME_LISTS.get(name)
    for a in args:
        values = [a]
        if a.startswith("-") and a != "-":
            if name in _allowlist._NO_FILE_OPTIONS:
                continue  # none of its options names a file
            values += a.split("=", 1)[1:]
            if re.match(r"-[A-Za-z0-9]", a):
                values += [a[i:] for i in range(2, len(a))]
            if lists:  # the option that reads a list of files, as getopt sees it
                longs, short, glued = lists
                option = a.split("=", 1)[0]
                if (len(option) > 2 and any(o.startswith(option) for o in longs)) or (
                        short and re.fullmatch(rf"-[A-Za-z0-9]*{short}"
                                               + (".*" if glued else "[A-Za-z0-9]*"),
                                               a, re.S)):
                    return a
        if name == "strings" and a.startswith("@"):
            return a
        for value in values:
            if value in ("/dev/null", "/dev/stdout", "/dev/stderr"):
                continue
            resolved = os.path.normpath(os.path.join(work, value))
            if resolved != str(work) and not resolved.startswith(f"{work}/"):
                return a
    return None


@pytest.mark.parametrize("line", [
    "cat {/etc/hostname,x}", "ls {/,.}", "cat {/proc/1/cmdline,x}", "ls {/,}etc",
    "ls {..,x}", "ls .{.,}", "cat {.,x}./a_other/notes.txt", "cat {{/etc,x}/hostname,y}",
    "cat {\"/\",x}etc/hostname", "ls {~root,x}", "grep --file={/etc/hostname,x} y",
    "for f in .; do ls \"$f$f\"; done", "for f in *.txt; do grep -r x $f; done",
    "grep x */etc/hostname", "grep x */a_other/notes.txt", "diff *", "wc -l *.py",
    "grep -rnf/etc/hostname x", "grep -f../a_other/notes.txt x", "md5sum -c x.py",
    "strings @x", "cat $'\\x2fetc/hostname'", "cat ~root/.bashrc",
])
def test_each_expansion_the_gate_refuses_reaches_out_in_bash(hostile: Path,
                                                             line: str) -> None:
    # What bash hands the programs really leaves the workspace (so the refusal is not
    # a guess), and the gate asks.
    calls = _calls(hostile, line)
    assert any(_escapes(hostile / "work", argv) for argv in calls), (line, calls)
    assert not provably_safe(line)[0], line


WORDS_OUT = ["{", "}", ",", "..", ".", "/", "*", "?", "[.]", "[a-z]", "etc", "a", "x",
             "-f", "=", "~", "'", '"', "\\", "$f", '"$f"', "{a,b}", "{.,x}", "{/,}",
             "{..,}", "a_other", "notes.txt", "hostname", "-", "--from-file=", "@", ".txt",
             ".py", "sub", "[^.]", "**", "\\.", '"."', "'..'", "~root", "$?", "${f}",
             "{1..2}", "{-f,x}", ":", "[.a]", "[[:punct:]]", "[-]", "[a-]"]
PROGRAMS = ["cat", "ls", "grep x", "wc -l", "diff", "md5sum", "head -n 1", "file",
            "strings", "jq .", "sort", "du"]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PROGRAMS),
       st.lists(st.lists(st.sampled_from(WORDS_OUT), min_size=1, max_size=6),
                min_size=1, max_size=3),
       st.lists(st.lists(st.sampled_from(WORDS_OUT), min_size=1, max_size=4),
                max_size=2))
def test_what_the_gate_accepts_stays_in_the_workspace(
        hostile: Path, program: str, words: list[list[str]], loop: list[list[str]]
) -> None:
    line = f"{program} {' '.join(''.join(w) for w in words)}"
    if loop:
        line = f"for f in {' '.join(''.join(w) for w in loop)}; do {line}; done"
    if not provably_safe(line)[0]:
        return
    # In a persistent shell an approved command may have changed IFS or the glob
    # options: what the gate accepts must not depend on them.
    for state in ("", "IFS='.x/a-'\n", "shopt -s dotglob globstar; shopt -u globskipdots\n"):
        for argv in _calls(hostile, state + line):
            assert _escapes(hostile / "work", argv) is None, (state, line, argv)


GLOB_PIECES = ["[", "]", "^", ".", "-", "a", "=", ":", "[:punct:]", "[:alpha:]",
               "[:digit:]", "[=a=]", "*", "?", "\\", "'", '"', "z", "/", "0", "_"]
NAMES = ["..", "-f..", "-x", ".a", "a.", "--x=..", "ab", "..a", "a b", "[", "]", "^",
         "-", "=", ":", "a-z", "0", "_a", ".-", "-."]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(GLOB_PIECES), min_size=1, max_size=8))
def test_the_gate_knows_every_name_a_pattern_matches_in_bash(pieces: list[str]) -> None:
    """The checks ask what a pattern can match; whatever bash matches (dotglob on,
    globskipdots off, as in a bash before 5.2), they must have thought possible."""
    word = "".join(pieces)
    try:
        words = expand(word, {})
    except Unsafe:
        return
    if len(words) != 1 or "/" in render(words[0].variants[0]):
        return
    pattern = words[0].variants[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            if name != "..":
                (Path(tmp) / name).write_text("")
        done = _bash("shopt -u globskipdots 2>/dev/null; shopt -s dotglob nullglob\n"
                     f"for x in {word}; do printf '%s\\0' \"$x\"; done", Path(tmp),
                     "/usr/bin:/bin")
    if done.returncode != 0 or done.stderr:
        return
    for name in done.stdout.split("\0")[:-1]:
        if not words[0].glob:
            continue  # no pattern: the word is its own text
        assert _expand_match(pattern, name), (word, name)
        if name == "..":
            assert can_be_dotdot(pattern), word
        if name.startswith("-"):
            assert may_start(pattern, "-"), (word, name)


def test_the_recording_stubs_see_hostile_names(hostile: Path) -> None:
    # The names the property test relies on are there for bash to match.
    [argv] = _calls(hostile, "cat -- ./*")
    assert "./--files0-from=x.py" in argv and "./a .. b.txt" in argv
    assert _escapes(hostile / "work", ["grep", "x", "-f/etc/hostname"]) is not None
    assert _escapes(hostile / "work", ["cat", "-f/etc/hostname"]) is None


@pytest.mark.parametrize(("line", "planted", "shown"), [
    # A file named --files0-from=.l.py: wc counts the lines of the files .l.py lists.
    ("wc -l *.py", {"work/--files0-from=.l.py": "", "work/.l.py": "../notes.txt\0"},
     "1 ../notes.txt"),
    # A directory named -f..: grep takes its patterns from ../notes.txt, and the
    # pattern x becomes a file to search.
    ("grep x */notes.txt mine", {"work/-f../notes.txt": "", "work/mine": "SECRET\n"},
     "SECRET"),
    # A file named --from-file=..: diff compares ../mine with mine.
    ("diff *", {"work/--from-file=..": "", "work/mine": "mine\n",
                "mine": "SECRET\n"}, "SECRET"),
])
def test_hostile_names_make_real_programs_read_outside(
        tmp_path: Path, line: str, planted: dict[str, str], shown: str) -> None:
    """With the real programs: each line shows what is in a file outside the workspace,
    as main's gate allowed; the gate asks now."""
    (tmp_path / "notes.txt").write_text("SECRET\n")
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = _bash(line, tmp_path / "work", "/usr/bin:/bin")
    assert shown in done.stdout, (line, done)
    assert not provably_safe(line)[0]


def test_an_unquoted_variable_next_to_text_is_asked_whatever_ifs_holds(
        hostile: Path) -> None:
    line = "for f in x; do ls ..$f; done"
    # With the IFS an approved command may leave in a persistent shell, ls gets "..".
    assert ["ls", ".."] in _calls(hostile, f"IFS=x\n{line}")
    assert not provably_safe(line)[0]
    assert provably_safe('for f in x; do ls "..$f"; done')[0]


@pytest.mark.parametrize("line", ["echo !!", "echo !$ !-1", "^a^b"])
def test_history_is_not_expanded_where_agentd_runs_bash(tmp_path: Path, line: str) -> None:
    """The gate refuses history designators, but does not rely on that: bash -c, and
    the persistent shell's eval of a quoted variable, never expand them (set -H too)."""
    one_off = _bash(f"set -H\n{line}", tmp_path, "/usr/bin:/bin")
    assert "echo" not in one_off.stdout and line.split()[-1] in one_off.stdout + (
        one_off.stderr)
    script = f"set -H\n__c={shlex.quote(line)}\neval \"$__c\" </dev/null\n"
    assert BASH is not None
    persistent = subprocess.run([BASH, "--noprofile", "--norc"], input=script,
                                capture_output=True, text=True, cwd=tmp_path,
                                timeout=5, check=False)
    assert persistent.stdout == one_off.stdout
    assert not provably_safe(line)[0]
