"""How the browser tests may call Playwright under the console's CSP.

``page.wait_for_function`` evaluates its argument with ``eval`` in the page. The first
check runs inside Playwright's own DevTools evaluation, where Chromium lets ``eval``
through; every later poll runs from the page's animation frames, where the console's
``script-src 'self'`` refuses it. A function source (``"() => ..."``) is evaluated once
and then called, so it polls fine; a bare expression (``"location.hash === '#/x'"``) is
evaluated again on each poll and fails with an EvalError whenever it is not already true
at the first check: a race that only a loaded machine loses. This scan keeps bare
expressions out of the tests, the benchmarks and the scripts that drive the console.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "bench", "scripts")


def _source(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value for part in node.values
                       if isinstance(part, ast.Constant) and isinstance(part.value, str))
    return None


def bare_expressions(tree: ast.AST) -> list[int]:
    """Lines of ``wait_for_function`` calls whose first argument is not a function."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "wait_for_function" and node.args):
            continue
        text = _source(node.args[0])
        if text is None:
            continue
        head = text.lstrip()
        if not (head.startswith("(") or head.startswith("function")
                or head.startswith("async")):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_bare_expression() -> None:
    assert bare_expressions(ast.parse("page.wait_for_function(\"location.hash === '#/x'\")")) == [1]
    assert bare_expressions(ast.parse("page.wait_for_function(f\"window.n > {k}\")")) == [1]
    assert bare_expressions(ast.parse("page.wait_for_function(\"() => window.n > 1\")")) == []
    assert bare_expressions(ast.parse("page.wait_for_function('(b) => b', arg=1)")) == []


def test_every_wait_for_function_polls_a_function() -> None:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = bare_expressions(ast.parse(path.read_text(), filename=str(path)))
            found += [f"{path.relative_to(ROOT)}:{line}" for line in lines]
    assert not found, ("wait_for_function with a bare expression (polls with eval, "
                       f"which the console's CSP refuses; write '() => ...'): {found}")
