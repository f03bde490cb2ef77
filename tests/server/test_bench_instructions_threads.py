"""bench/instructions.py --threads reads each thread's count from the files callgrind
writes with ``--separate-threads=yes`` (``<out>-NN``, a ``totals:`` line each): the
main thread's (the event loop) first, then the others that ran anything, most first.
The files here carry callgrind's own header lines; a real run needs valgrind, which
the suite does not install (docs/benchmarks.md has the figures it measured)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("instructions", None)
    return importlib.import_module("instructions")


def _part(path: Path, thread: int, total: int) -> None:
    path.write_text(f"# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\n"
                    f"pid: 4242\ncmd:  python -m agentd serve\npart: 1\nthread: {thread}\n"
                    f"\nevents: Ir\n\nsummary: 0\ntotals: {total}\n\nfl=(1) x.c\n")


def test_the_main_thread_first_then_the_others_that_ran_most_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = _bench(monkeypatch)
    out = tmp_path / "callgrind.out"
    for thread, total in ((1, 472_000), (2, 0), (3, 228_000), (4, 3_300), (12, 440)):
        _part(tmp_path / f"callgrind.out-{thread:02d}", thread, total)
    (tmp_path / "callgrind.out").write_text("totals: 999999999\n")  # not a thread's
    (tmp_path / "callgrind.out-old").write_text("totals: 999999999\n")
    (tmp_path / "other.out-05").write_text("totals: 999999999\n")
    assert instructions.thread_totals(out) == [472_000, 228_000, 3_300, 440]


def test_no_main_thread_file_is_an_error(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = _bench(monkeypatch)
    _part(tmp_path / "callgrind.out-03", 3, 228_000)
    with pytest.raises(RuntimeError, match="no main thread"):
        instructions.thread_totals(tmp_path / "callgrind.out")
