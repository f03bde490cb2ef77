"""How long a cancel takes to reach a run another node drives (issue 33, item 5).

Two daemons (``python -m agentd serve``) share a fresh schema of a PostgreSQL
database. For each of ``--runs`` runs: node B starts it (a model call that would take a
minute), then node A is asked to cancel it (``POST /v1/runs/{id}/cancel``). A does not
hold the run: it asks B through the store, and answers once the run is cancelled.

Figures: ``to_cancelled_ms`` (from the request to the ``run.cancelled`` event's commit
on B, by its ``at``; one machine, one clock), ``answer_ms`` (the request's round trip
on A) and ``answered_cancelled`` (how many answers said the run was cancelled). With
``--src DIR`` the daemons run another tree's agentd (the code before a change).

    PYTHONPATH=src .venv/bin/python bench/cancel_nodes.py \\
        --postgres postgresql://postgres@127.0.0.1:5432/test [--runs 50] [--src DIR]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

TOKEN = "cancel-bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Node:
    def __init__(self, name: str, workdir: Path, url: str, src: Path, ttl: float) -> None:
        self.name = name
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTD_") and k != "OPENAI_API_KEY"}
        env.update(AGENTD_HOME=str(workdir / name), AGENTD_DATABASE_URL=url,
                   AGENTD_NODE_ID=name, AGENTD_TOKEN=TOKEN, AGENTD_DEMO_AGENT="false",
                   AGENTD_LEASE_TTL_S=str(ttl), PYTHONPATH=str(src.resolve()),
                   PYTHONUNBUFFERED="1")
        self.log = (workdir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "serve", "--port", str(self.port)], env=env,
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=AUTH,
                                 timeout=300)

    def wait_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"node {self.name} exited ({self.proc.returncode})")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/health").status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"node {self.name} did not start")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _running(node: Node, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = node.http.get(f"/v1/runs/{run_id}").json()
        if run["status"] == "running":
            return
        time.sleep(0.02)
    raise SystemExit(f"run {run_id} did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postgres", required=True, metavar="URL")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--lease-ttl-s", type=float, default=30.0,
                   help="the nodes' lease_ttl_s (default: the daemon's default)")
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src",
                   help="the agentd source tree the daemons run")
    args = p.parse_args(argv)

    import psycopg

    schema = f"cancel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.postgres else "?"
    url = f"{args.postgres}{sep}options={quote(f'-csearch_path={schema}')}"
    workdir = Path(tempfile.mkdtemp(prefix="agentd-cancel-"))
    nodes: list[Node] = []
    try:
        # One after the other: both migrate the same schema otherwise.
        for name in ("node-a", "node-b"):
            nodes.append(Node(name, workdir, url, args.src, args.lease_ttl_s))
            nodes[-1].wait_up()
        a, b = nodes
        created = a.http.post("/v1/agents", json={"name": "slow", "settings": {
            "script": [{"text": "late", "delay_ms": 60_000}]}})
        assert created.status_code == 201, created.text
        to_cancelled: list[float] = []
        answers: list[float] = []
        answered_cancelled = 0
        for i in range(args.runs):
            key = f"s{i}"
            sent = b.http.post(f"/v1/agents/slow/sessions/{key}/messages",
                               json={"content": "go", "wait": False})
            run_id = sent.json()["id"]
            _running(b, run_id)
            asked = time.time()
            answer = a.http.post(f"/v1/runs/{run_id}/cancel")
            answers.append((time.time() - asked) * 1000)
            answered_cancelled += answer.json()["status"] == "cancelled"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                events = b.http.get(f"/v1/agents/slow/sessions/{key}/events").json()["events"]
                ended = [e for e in events if e["kind"] == "run.cancelled"]
                if ended:
                    at = ended[0]["at"]
                    stamp = at if isinstance(at, (int, float)) else _epoch(at)
                    to_cancelled.append((stamp - asked) * 1000)
                    break
                time.sleep(0.05)
        out: dict[str, Any] = {
            "bench": "cancel_nodes", "nodes": 2, "runs": args.runs,
            "lease_ttl_s": args.lease_ttl_s, "src": str(args.src),
            "cancelled": len(to_cancelled), "answered_cancelled": answered_cancelled,
            "to_cancelled_ms_p50": round(statistics.median(to_cancelled), 1),
            "to_cancelled_ms_p99": round(_percentile(to_cancelled, 0.99), 1),
            "to_cancelled_ms_max": round(max(to_cancelled), 1),
            "answer_ms_p50": round(statistics.median(answers), 1),
            "answer_ms_p99": round(_percentile(answers, 0.99), 1),
            "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 1)},
        }
        print(json.dumps(out, separators=(",", ":")))
        return 0
    finally:
        for node in nodes:
            node.stop()
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    raise SystemExit(main())
