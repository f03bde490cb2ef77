"""What traces cost a turn: the build before issue 32, this build with traces off, on
(to a local OTLP receiver) and on with the receiver down, in one run.

    python bench/traces.py --baseline-src /work/wt-export-base   # a checkout of 861e4aa
    python bench/traces.py --rounds 2 --seconds 10 --clients 16

Each phase runs ``bench/turns.py --skip-termo`` as a subprocess, which spawns its own
daemon (``python -m agentd serve``, SQLite with ``AGENTD_STORE='{"synchronous":
"NORMAL"}'``) and measures turns per second, p50/p99 latency and the daemon's CPU per
turn (from /proc), non-streamed then streamed. The phases:

- ``base``: the build before issue 32 (``PYTHONPATH=<baseline>/src``, same venv);
- ``off``: this build, no ``OTEL_*`` variable (traces off; ``/metrics`` on, as by
  default);
- ``bare``: this build, traces off and ``/metrics`` off (``AGENTD_TELEMETRY=
  '{"metrics": false}'``): what of ``off``'s difference from ``base`` is the metrics;
- ``on``: this build, ``OTEL_TRACES_EXPORTER=otlp`` to ``bench/_otlp_receiver.py`` in a
  process of its own (answers 200, counts spans by name);
- ``down``: traces on to a closed port (the exporter fails and backs off; the turns
  must not notice).

Rounds are interleaved (the order reversed every other round) so that the load other
work puts on the machine spreads over every variant. Model calls per turn come from
the receiver's span counts (``chat`` spans per ``invoke_agent`` span), for the CPU per
step. Without ``--baseline-src`` a detached worktree of ``--baseline`` (861e4aa, the
parent of issue 32's first commit) is made in a temporary directory and removed after.
Since the export worker (traces are built and sent by a process of the daemon's own,
``agentd.telemetry.worker``), the daemon's CPU (``server_cpu_ms_per_turn``, what the
issue's bar is about: the serving process) and its children's
(``children_cpu_ms_per_turn``: the worker) are given apart, and
``on_total_cpu_us_per_step`` adds them. Either is a lower bound when
``exported_per_turn`` is below 1 (the worker did not keep up: runs wait in the log);
bench/traces_send.py measures what building and sending a run costs. Progress on
stderr, one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import mean
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
KEYS = ("turns_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_turn",
        "children_cpu_ms_per_turn", "stream_turns_per_s", "stream_p50_ms", "stream_p99_ms",
        "stream_server_cpu_ms_per_turn", "stream_children_cpu_ms_per_turn")


def info(message: str) -> None:
    print(f"[traces] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as reply:
        data: dict[str, int] = json.loads(reply.read())
        return data


def start_receiver() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(BENCH / "_otlp_receiver.py"),
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            stats(port)
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the OTLP receiver did not start")


def phase_env(variant: str, baseline: Path, receiver_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OTEL_") and k not in ("PYTHONPATH", "AGENTD_TELEMETRY")}
    env["AGENTD_STORE"] = '{"synchronous":"NORMAL"}'
    if variant == "base":
        env["PYTHONPATH"] = str(baseline / "src")
    if variant == "bare":
        env["AGENTD_TELEMETRY"] = '{"metrics": false}'
    if variant in ("on", "down"):
        port = receiver_port if variant == "on" else free_port()  # (nothing listens)
        env["OTEL_TRACES_EXPORTER"] = "otlp"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    return env


def run_phase(variant: str, args: argparse.Namespace, baseline: Path,
              receiver_port: int) -> dict[str, Any]:
    before = stats(receiver_port)
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(BENCH / "turns.py"), "--skip-termo",
           "--clients", str(args.clients), "--seconds", str(args.seconds),
           "--warmup", str(args.warmup)]
    info(f"{variant}: {' '.join(cmd[1:])} (load {load:.2f})")
    done = subprocess.run(cmd, env=phase_env(variant, baseline, receiver_port),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant}: turns.py exited {done.returncode}: {lines[-1:]}")
    figures = json.loads(lines[-1])
    after = stats(receiver_port)
    got = {k: after.get(k, 0) - before.get(k, 0)
           for k in ("requests", "spans", "invoke_agent", "chat")}
    out: dict[str, Any] = {"variant": variant, "loadavg_1m": round(load, 2),
                           **{k: figures.get(k) for k in KEYS},
                           "turns_measured": (figures.get("turns") or 0)
                           + (figures.get("stream_turns") or 0),
                           "errors": (figures.get("errors") or 0)
                           + (figures.get("stream_errors") or 0),
                           "durability_mismatches": figures.get("durability_mismatches")}
    if variant == "on":
        out["spans_received"] = got["spans"]
        out["runs_received"] = got["invoke_agent"]
        out["runs_per_request"] = (round(got["invoke_agent"] / got["requests"], 1)
                                   if got["requests"] else None)
        # Runs exported by the daemon's end (warm-up runs and the last flush
        # included) per measured turn: below 1, the follower fell behind, and
        # the CPU per turn above counts only the share it exported.
        out["exported_per_turn"] = (round(got["invoke_agent"] / out["turns_measured"], 2)
                                    if out["turns_measured"] else None)
        out["steps_per_turn"] = (round(got["chat"] / got["invoke_agent"], 3)
                                 if got["invoke_agent"] else None)
    info(f"{variant}: {json.dumps(out)}")
    return out


def pct(new: float | None, old: float | None) -> float | None:
    return round((new - old) / old * 100, 1) if new is not None and old else None


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    means: dict[str, dict[str, Any]] = {}
    for variant in ("base", "bare", "off", "on", "down"):
        rows = [r for r in results if r["variant"] == variant]
        if rows:
            means[variant] = {k: round(mean(r[k] for r in rows if r.get(k) is not None), 3)
                              for k in KEYS if any(r.get(k) is not None for r in rows)}
    on, off, base = means.get("on", {}), means.get("off", {}), means.get("base", {})
    steps = [r["steps_per_turn"] for r in results if r.get("steps_per_turn")]
    per_step = mean(steps) if steps else None
    out: dict[str, Any] = {"means": means}
    for key in ("server_cpu_ms_per_turn", "p99_ms", "stream_server_cpu_ms_per_turn",
                "stream_p99_ms", "turns_per_s"):
        out[f"off_vs_base_{key}_pct"] = pct(off.get(key), base.get(key))
        out[f"on_vs_off_{key}_pct"] = pct(on.get(key), off.get(key))
        out[f"down_vs_off_{key}_pct"] = pct(means.get("down", {}).get(key), off.get(key))
        out[f"bare_vs_base_{key}_pct"] = pct(means.get("bare", {}).get(key), base.get(key))
    for key, name in (("server_cpu_ms_per_turn", "on_cpu_us_per_step"),
                      ("stream_server_cpu_ms_per_turn", "on_stream_cpu_us_per_step")):
        if on.get(key) is not None and off.get(key) is not None and per_step:
            out[name] = round((on[key] - off[key]) * 1000 / per_step, 1)
    for key, kids, name in (
            ("server_cpu_ms_per_turn", "children_cpu_ms_per_turn", "on_total_cpu_us_per_step"),
            ("stream_server_cpu_ms_per_turn", "stream_children_cpu_ms_per_turn",
             "on_stream_total_cpu_us_per_step")):
        # The daemon's and its export worker's together: what traces cost the machine.
        if on.get(key) is not None and off.get(key) is not None and per_step:
            total = on[key] + (on.get(kids) or 0.0)
            out[name] = round((total - off[key] - (off.get(kids) or 0.0)) * 1000 / per_step, 1)
    out["steps_per_turn"] = per_step
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="traces off / on / receiver down / before, "
                                            "interleaved (one JSON line out)")
    p.add_argument("--baseline-src", type=Path,
                   help="a checkout of the build before issue 32 (default: a temporary "
                        "worktree of --baseline)")
    p.add_argument("--baseline", default="861e4aa", help="commit for the temporary worktree")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--variants", default="base,bare,off,on,down",
                   help="comma-separated, in the first round's order")
    args = p.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    made: Path | None = None
    baseline = args.baseline_src
    if baseline is None and "base" in variants:
        made = Path(tempfile.mkdtemp(prefix="agentd-base-")) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(made),
                        args.baseline], check=True, stdout=subprocess.DEVNULL)
        baseline = made
    receiver, port = start_receiver()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
    out: dict[str, Any] = {"bench": "traces", "commit": head, "baseline": args.baseline
                           if args.baseline_src is None else str(args.baseline_src),
                           "clients": args.clients, "seconds": args.seconds,
                           "rounds": args.rounds, "python": platform.python_version(),
                           "cpu_count": os.cpu_count(),
                           "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    results: list[dict[str, Any]] = []
    try:
        for round_ in range(args.rounds):
            order = variants if round_ % 2 == 0 else list(reversed(variants))
            for variant in order:
                results.append({"round": round_ + 1,
                                **run_phase(variant, args, baseline or ROOT, port)})
    finally:
        receiver.terminate()
        receiver.wait(10)
        if made is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(made)], check=False)
            shutil.rmtree(made.parent, ignore_errors=True)
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["phases"] = results
    out.update(summarise(results))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
