"""No function of agentd passes 25 in radon's cyclomatic complexity rating unless a
comment just above it (``# complexity: why``) says why it is better whole
(docs/contributing.md)."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

SRC = Path(__file__).resolve().parents[1] / "src" / "agentd"
LIMIT = 25


def _functions(text: str) -> list[Function]:
    found: list[Function] = []
    for block in cc_visit(text):
        if isinstance(block, Function):
            found.append(block)
        found.extend(getattr(block, "methods", []) or [])
    return found


def _justified(lines: list[str], lineno: int) -> bool:
    """A ``# complexity:`` comment among the lines above the ``def`` (and its
    decorators)."""
    i = lineno - 2  # the line above the def, 0-based
    while i >= 0 and lines[i].lstrip().startswith("@"):
        i -= 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if "complexity:" in lines[i]:
            return True
        i -= 1
    return False


def test_no_function_is_too_complex_without_saying_why() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for f in _functions(text):
            if f.complexity > LIMIT and not _justified(lines, f.lineno):
                unexplained.append(f"{path.relative_to(SRC.parent)}:{f.lineno} "
                                   f"{f.fullname} ({f.complexity})")
    unexplained = sorted(set(unexplained))  # (radon lists a method twice)
    assert not unexplained, (
        f"over {LIMIT} in radon's rating: split it, or say above it why it is better "
        "whole (# complexity: ...):\n" + "\n".join(unexplained))


def test_the_check_finds_what_it_looks_for() -> None:
    branches = "".join(f"    if x == {n}:\n        return {n}\n" for n in range(30))
    text = f"def f(x):\n{branches}    return -1\n"
    (f,) = _functions(text)
    assert f.complexity > LIMIT
    assert not _justified(text.splitlines(), f.lineno)
    said = "# complexity: one branch per case\n" + text
    assert _justified(said.splitlines(), _functions(said)[0].lineno)
