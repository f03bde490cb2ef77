"""How long the shell-command analyser takes per line, over the test corpora.

It runs on every shell call a model asks for, so it must stay cheap. Prints one JSON
line: microseconds per line for `analyse` (the deny-list walk and its rules) and for
`provably_safe` (the allow-list), best of five passes after a warm-up, in CPU time
(the process's own, so other load on the machine barely moves it).

    python bench/analyser.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agentd.security.commands import analyse, provably_safe

CORPORA = ("dangerous_commands.txt", "bypass_commands.txt")


def _lines() -> list[str]:
    root = Path(__file__).resolve().parent.parent / "tests" / "security"
    out = []
    for name in CORPORA:
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                out.append(line.split("\t", 1)[-1])
    return out


def _per_line_us(fn: Callable[[str], object], lines: list[str]) -> float:
    for line in lines:
        fn(line)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for line in lines:
            fn(line)
        best = min(best, time.process_time() - start)
    return round(best * 1e6 / len(lines), 1)


def main() -> None:
    lines = _lines()
    print(json.dumps({"bench": "analyser", "lines": len(lines),
                      "analyse_us_per_line": _per_line_us(analyse, lines),
                      "provably_safe_us_per_line": _per_line_us(provably_safe, lines)}))


if __name__ == "__main__":
    main()
