"""Issue 14's figures in one run: schedules at scale, subtask fan-out, and the kill
harness for schedules and subtasks.

    PYTHONPATH=src .venv/bin/python bench/autonomy.py
    PYTHONPATH=src .venv/bin/python bench/autonomy.py --only schedules --modes aligned
    PYTHONPATH=src .venv/bin/python bench/autonomy.py --only fanout,kill --kills 100

* ``schedules``: ``bench/autonomy_schedules.py`` once per ``--modes`` (``aligned``:
  10,000 schedules all due on the same second each minute, as ``* * * * *`` cron
  jobs are; ``spread``: their fire times spread over the minute), each on a fresh
  SQLite runtime in this process: p50 / p99 / max lateness of the fires' claims,
  when their runs started, the CPU used while idle between fires and the due-query's
  time (that script's docstring says how).
* ``fanout``: ``bench/autonomy_fanout.py``: one run starts ``--children`` subtasks
  that each take ``--delay-ms`` and waits for them all; makespan against the ideal
  (one ``delay_ms``), and the exactly-once checks.
* ``kill``: ``bench/killtest_autonomy.py --kills N`` as a subprocess (a real daemon
  killed N times; every fire time once, every subtask's result once). ``"kill":
  null`` with ``kill_error`` saying why when it is absent or printed no figures.

Stdout gets ONE JSON line; progress (the parts' own) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import autonomy_fanout
import autonomy_schedules

HERE = Path(__file__).resolve().parent
PARTS = ("schedules", "fanout", "kill")


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def schedules(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in args.modes.split(","):
        info(f"== schedules, {mode}: {args.schedules} schedules, {args.minutes} minute(s)")
        out[mode] = asyncio.run(autonomy_schedules.main(argparse.Namespace(
            schedules=args.schedules, agents=args.agents, minutes=args.minutes,
            mode=mode, idle_s=args.idle_s, gc=args.gc)))
    return out


def fanout(args: argparse.Namespace) -> dict[str, Any]:
    info(f"== fan-out: {args.children} subtasks of {args.delay_ms:g} ms")
    return asyncio.run(autonomy_fanout.fan_out(args.children, args.delay_ms,
                                               args.database_url))


def kill(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    script = HERE / "killtest_autonomy.py"
    if not script.exists():
        return None, f"{script.name} is absent"
    info(f"== kill harness: {args.kills} kills")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(HERE.parent / "src"), os.environ.get("PYTHONPATH")) if p)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), "--kills", str(args.kills)],
                          stdout=subprocess.PIPE, stderr=None, text=True, env=env,
                          timeout=args.kill_timeout_s, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        return None, f"{script.name} exited {proc.returncode} without figures"
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["exit_status"] = proc.returncode
    figures["wall_s"] = round(time.monotonic() - started, 1)
    return figures, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS),
                        help="comma-separated parts: schedules,fanout,kill (default all)")
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=2,
                        help="minutes of fires measured per mode (after a warm-up one)")
    parser.add_argument("--modes", default="aligned,spread")
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--gc", choices=("daemon", "python"), default="daemon",
                        help="schedules: the daemon's collector settings or Python's")
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=500.0)
    parser.add_argument("--database-url", default=None, help="fan-out's store (SQLite)")
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--kill-timeout-s", type=float, default=3600.0)
    args = parser.parse_args()
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; use {', '.join(PARTS)}")
    result: dict[str, Any] = {"bench": "autonomy", "cpus": os.cpu_count(),
                              "loadavg_start": round(os.getloadavg()[0], 2)}
    if "schedules" in only:
        result["schedules"] = schedules(args)
    if "fanout" in only:
        result["fanout"] = fanout(args)
    if "kill" in only:
        try:
            result["kill"], error = kill(args)
        except subprocess.TimeoutExpired:
            result["kill"], error = None, f"no figures within {args.kill_timeout_s:g} s"
        if error is not None:
            result["kill_error"] = error
    result["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
