"""Proof by killing (issue 3): kill -9 the daemon hundreds of times under load, then check.

The harness starts a real daemon (``python -m agentd serve``) on a fresh
``AGENTD_HOME`` with the tools of ``bench/killtest_tools.py``, whose side effects are
lines in files (``effects.log`` for the non-idempotent ``record_once``, ``idem.log``
for the idempotent ``record_idem``). Client threads send messages (``wait=false``,
``wait=true`` and ``stream=true``; some with an ``Idempotency-Key``) to sessions of
agents whose scripts call those tools, answer in plain text, and take their time
(``delay_ms``), so that kills land during model calls, during tool calls and between
steps. Two more threads follow sessions over SSE, reconnecting with ``Last-Event-ID``
after every kill. Every 20-400 ms (random) the daemon gets SIGKILL and is started
again on the same home.

After the last kill it restarts once more, lets every run reach a terminal state
(bounded) and counts violations of these invariants:

1. ``ack_once``: every acknowledged message (a 2xx answer) has exactly one run, and its
   ``message.user`` event is in its session's log exactly once (no message is ever
   logged twice, acknowledged or not, and none that was never sent);
2. ``run_terminal``: every run is in a terminal state, with exactly one terminal event,
   its last, of the kind its status says;
3. ``seq_dense``: each session's seqs are 1..N with no gap or duplicate, N = last_seq;
4. ``effect_once``: no effect id is twice in effects.log, each has a ``tool.started``
   intent, ``record_once`` is never started twice for one effect id, and each
   ``record_once`` with a recorded result did its effect; ``idem_effects``: every
   ``record_idem`` effect of a completed run (or with a recorded result) is in idem.log;
5. ``sse_replay``: an SSE replay from seq 0 yields exactly the stored log (seqs, kinds,
   data, frame ids and names), and so does each follower's stream stitched across
   reconnections;
6. ``idempotency_key``: every 2xx answer to one Idempotency-Key names the same run,
   including re-sends after a kill;
7. ``step_once``: in each run the model steps are 1, 2, 3... (no recorded model call
   made again) and no tool call has two results;
8. ``run_outcome``: no run failed or was cancelled (nothing in these scripts can fail),
   and a run is interrupted only for a non-idempotent tool.

Stdout gets one JSON line of figures; progress goes to stderr. Exit status 1 when any
invariant is violated (or the harness itself failed). Loopback only; every wait is
bounded; every process started here is stopped in ``finally``.

    .venv/bin/python bench/killtest.py --kills 200
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError

BENCH_DIR = Path(__file__).resolve().parent
TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})
TERMINAL_KIND = {"run.completed": "completed", "run.failed": "failed",
                 "run.cancelled": "cancelled", "run.interrupted": "interrupted"}
SSE_NAMES = {"tool.started": "tool_start", "tool.finished": "tool_end",
             "run.completed": "done", "run.cancelled": "done", "run.interrupted": "done",
             "run.failed": "error"}
INVARIANTS = ("ack_once", "run_terminal", "seq_dense", "effect_once", "idem_effects",
              "sse_replay", "idempotency_key", "step_once", "run_outcome")
TOOLS = ["record_once", "record_idem", "peek"]
NON_IDEMPOTENT = {"record_once"}


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# Scripts are played one turn per model call in a session (the position is the number
# of assistant messages so far), so a run is "tool steps, then the first text turn".
AGENTS: dict[str, list[dict[str, Any]]] = {
    # No model latency: kills land in tool calls (0-50 ms each) and between commits.
    "kt-tools": [
        {"tool_calls": [_call("record_once", note="a"), _call("record_idem", note="b")]},
        {"text": "recorded both"},
    ],
    # Slow model calls around tools: kills land mid-model-call and between steps.
    "kt-slow": [
        {"tool_calls": [_call("record_idem", note="first")], "delay_ms": 120},
        {"tool_calls": [_call("peek"), _call("peek"), _call("record_once", note="then")],
         "delay_ms": 60},
        {"tool_calls": [_call("record_idem", note="x"), _call("record_once", note="y"),
                        _call("record_idem", note="z")]},
        {"text": "slow and steady, word by word", "delay_ms": 150},
    ],
    # Plain text turns, streamed word by word.
    "kt-chat": [
        {"text": "just talking, no tools at all", "delay_ms": 40},
        {"text": "another plain answer"},
    ],
}


def info(message: str) -> None:
    print(f"[killtest] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session_path(agent: str, key: str) -> str:
    return f"/v1/agents/{agent}/sessions/{quote(key, safe='')}"


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """``python -m agentd serve`` on one home and port, started and killed many times."""

    def __init__(self, workdir: Path, home: Path, effects_dir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTD_") and k != "OPENAI_API_KEY"}
        path = [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        env.update(
            AGENTD_HOME=str(home),
            AGENTD_DEMO_AGENT="false",
            AGENTD_TOOL_MODULES='["killtest_tools"]',
            AGENTD_KILLTEST_DIR=str(effects_dir),
            PYTHONPATH=os.pathsep.join(path),
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_s: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.logs / f"agentd-{self.starts:04d}.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout_s: float) -> None:
        """Start and wait for /health; a port taken meanwhile moves to another one."""
        for attempt in range(3):
            self.starts += 1
            t0 = time.monotonic()
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "agentd", "serve", "--port", str(self.port)],
                    env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C on the harness does not reach it; the
                    # finally block stops it.
                    start_new_session=True)
            if self._wait_healthy(timeout_s):
                self.start_s.append(time.monotonic() - t0)
                return
            tail = self.log_tail()
            self.kill()
            if "address already in use" in tail.lower() and attempt < 2:
                info(f"port {self.port} is taken; moving to another")
                self.port = free_port()
                continue
            raise RuntimeError(f"agentd did not become healthy (start {self.starts}); "
                               f"log tail:\n{tail}")

    def _wait_healthy(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                response = httpx.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                info(f"agentd still running {timeout_s:.0f}s after SIGTERM; killing it")
                self.kill()
        return self.proc.returncode


# --------------------------------------------------------------------------- clients


@dataclass
class Msg:
    """One message the clients sent (perhaps several times, with its Idempotency-Key)."""

    agent: str
    key: str
    content: str
    idem_key: str | None
    attempts: int = 0
    acked: bool = False
    ack_epoch: int = -1
    #: Run ids named by 2xx answers (several when an Idempotency-Key was re-sent).
    run_ids: list[str] = field(default_factory=list)
    resent: int = 0


class Shared:
    """What the client threads and the kill loop share, under one lock."""

    def __init__(self, daemon: Daemon, sessions: list[tuple[str, str]], backlog: int) -> None:
        self.daemon = daemon
        self.sessions = sessions
        self.backlog = backlog
        self.lock = threading.Lock()
        self.epoch = 0  # incremented at every kill
        self.stop = threading.Event()  # threads end now
        self.drain = threading.Event()  # no new messages: finish retries and re-sends
        self.msgs: dict[str, Msg] = {}
        self.outstanding: dict[tuple[str, str], collections.deque[str]] = {
            s: collections.deque() for s in sessions}
        self.counts: collections.Counter[str] = collections.Counter()
        self.live_violations: list[tuple[str, str]] = []

    def url(self, path: str) -> str:
        return self.daemon.url + path

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def violation(self, invariant: str, text: str) -> None:
        with self.lock:
            self.live_violations.append((invariant, text))


class Client(threading.Thread):
    """Sends messages in a loop; records what was acknowledged; retries and re-sends keys."""

    MODES = ("nowait", "nowait", "nowait", "wait", "wait", "stream")
    MAX_ATTEMPTS = 200

    def __init__(self, index: int, shared: Shared, seed: int, idem_share: float) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.shared = shared
        self.rng = random.Random(f"{seed}/client/{index}")
        self.idem_share = idem_share
        self.pending: list[Msg] = []  # carry a key, not acknowledged yet: retry
        self.keyed: list[Msg] = []  # carry a key, acknowledged: re-send after a kill
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0)) as http:
                self._loop(http)
        except BaseException as exc:  # reported by the harness
            self.error = exc

    def _loop(self, http: httpx.Client) -> None:
        shared, rng = self.shared, self.rng
        n = 0
        while not shared.stop.is_set():
            draining = shared.drain.is_set()
            if self.pending:
                msg = self.pending[0]
                shared.count("idempotency_retries")
                if self._send(http, msg, rng.choice(self.MODES)):
                    self.pending.pop(0)
                    self.keyed.append(msg)
                elif msg.attempts >= self.MAX_ATTEMPTS:
                    self.pending.pop(0)  # never acknowledged: nothing to check
                else:
                    time.sleep(rng.uniform(0.01, 0.05))
                continue
            resend = self._resend_candidate()
            if resend is not None and (draining or rng.random() < 0.1):
                self._resend(http, resend)
                continue
            if draining:
                return
            target = self._pick_session(http)
            if target is None:
                time.sleep(0.01)
                continue
            n += 1
            agent, key = target
            idem_key = f"k{self.index}-{n}" if rng.random() < self.idem_share else None
            msg = Msg(agent=agent, key=key, content=f"m{self.index}-{n}", idem_key=idem_key)
            with shared.lock:
                shared.msgs[msg.content] = msg
            if not self._send(http, msg, rng.choice(self.MODES)):
                if idem_key is not None:
                    self.pending.append(msg)
                time.sleep(rng.uniform(0.01, 0.05))  # the daemon is probably down
            elif idem_key is not None:
                self.keyed.append(msg)
            time.sleep(rng.uniform(0.0, 0.02))

    def _resend_candidate(self) -> Msg | None:
        epoch = self.shared.epoch
        for msg in self.keyed:
            if msg.resent == 0 and msg.ack_epoch < epoch:
                return msg
        return None

    def _resend(self, http: httpx.Client, msg: Msg) -> None:
        """Send an acknowledged key again after a kill: it must name the same run."""
        for _ in range(self.MAX_ATTEMPTS):
            if self.shared.stop.is_set():
                return
            before = len(msg.run_ids)
            acked = self._send(http, msg, self.rng.choice(self.MODES), resend=True)
            if acked and len(msg.run_ids) > before:
                msg.resent += 1
                self.shared.count("idempotency_resends")
                return
            time.sleep(self.rng.uniform(0.01, 0.05))
        msg.resent += 1  # give up on this one
        self.shared.count("idempotency_resends_abandoned")

    def _pick_session(self, http: httpx.Client) -> tuple[str, str] | None:
        """A session with fewer than ``backlog`` runs of ours not known to be finished."""
        shared = self.shared
        for _ in range(4):
            session = self.rng.choice(shared.sessions)
            with shared.lock:
                queue = shared.outstanding[session]
                oldest = queue[0] if len(queue) >= shared.backlog else None
            if oldest is None:
                return session
            try:
                response = http.get(shared.url(f"/v1/runs/{oldest}"), timeout=5.0)
            except httpx.HTTPError:
                return None
            if response.status_code == 200 and response.json()["status"] in TERMINAL:
                with shared.lock:
                    if queue and queue[0] == oldest:
                        queue.popleft()
                    if len(queue) < shared.backlog:
                        return session
        return None

    def _acked(self, msg: Msg, status: int) -> None:
        shared = self.shared
        with shared.lock:
            if not msg.acked:
                msg.acked = True
                msg.ack_epoch = shared.epoch
                shared.counts["acknowledged"] += 1
            shared.counts[f"http_{status}"] += 1

    def _got_run(self, msg: Msg, run_id: str, mode: str, resend: bool) -> None:
        shared = self.shared
        with shared.lock:
            first = msg.run_ids[0] if msg.run_ids else None
            msg.run_ids.append(run_id)
            if mode != "wait" and not resend and first is None:
                shared.outstanding[(msg.agent, msg.key)].append(run_id)
        if first is not None and first != run_id:
            shared.violation("idempotency_key",
                             f"Idempotency-Key {msg.idem_key!r} ({msg.content!r}) answered "
                             f"run {first} then run {run_id}")

    def _send(self, http: httpx.Client, msg: Msg, mode: str, resend: bool = False) -> bool:
        """POST the message once; True when the answer was 2xx (acknowledged)."""
        shared = self.shared
        body = {"content": msg.content, "wait": mode == "wait", "stream": mode == "stream"}
        headers = {"Idempotency-Key": msg.idem_key} if msg.idem_key else {}
        msg.attempts += 1
        shared.count("requests")
        shared.count(f"requests_{mode}")
        acked = False
        try:
            with http.stream("POST", shared.url(session_path(msg.agent, msg.key) + "/messages"),
                             json=body, headers=headers) as response:
                if not 200 <= response.status_code < 300:
                    response.read()
                    shared.count(f"http_{response.status_code}")
                    info(f"{msg.content}: HTTP {response.status_code} {response.text[:200]}")
                    return False
                # The message and its run are committed before the status line is sent.
                acked = True
                self._acked(msg, response.status_code)
                if mode == "stream":
                    # The run's frames, from its message.user to its done / error frame
                    # (or until a kill cuts the stream).
                    run_id = None
                    for name, _, event in iter_events(response):
                        if run_id is None:
                            run_id = event["run_id"]
                            self._got_run(msg, run_id, mode, resend)
                        if name in ("done", "error"):
                            break
                else:
                    self._got_run(msg, json.loads(response.read())["id"], mode, resend)
            return True
        except httpx.ConnectError:
            shared.count("connect_errors")  # the daemon is down: nothing was sent
            return acked
        except (httpx.HTTPError, SSEError, ValueError, KeyError):
            # Cut by a kill: before its answer (not acknowledged) or while reading it.
            shared.count("requests_cut_after_ack" if acked else "requests_cut")
            return acked


# --------------------------------------------------------------------------- SSE


def iter_events(response: httpx.Response) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(frame name, frame id, event) for each committed-event frame (tokens skipped)."""
    for sse in EventSource(response).iter_sse():
        if sse.event == "token":
            continue
        yield sse.event, sse.id, json.loads(sse.data)


def frame_problem(name: str, frame_id: str | None, event: dict[str, Any]) -> str | None:
    expected = SSE_NAMES.get(event.get("kind", ""), event.get("kind"))
    if name != expected:
        return f"seq {event.get('seq')}: frame named {name!r}, expected {expected!r}"
    if frame_id != str(event.get("seq")):
        return f"seq {event.get('seq')}: frame id {frame_id!r}"
    return None


class Follower(threading.Thread):
    """Follows one session's SSE stream across kills, reconnecting with Last-Event-ID."""

    def __init__(self, shared: Shared, session: tuple[str, str]) -> None:
        super().__init__(name=f"follow-{session[1]}", daemon=True)
        self.shared = shared
        self.session = session
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.connects = 0
        self.target: int | None = None  # stop once this seq is seen
        self.error: BaseException | None = None

    @property
    def last(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def done(self) -> bool:
        return self.target is not None and self.last >= self.target

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc

    def _loop(self) -> None:
        path = session_path(*self.session) + "/events"
        timeout = httpx.Timeout(3.0, connect=2.0)
        while not self.shared.stop.is_set() and not self.done():
            try:
                with httpx.Client(timeout=timeout) as http, http.stream(
                        "GET", self.shared.url(path),
                        headers={"Accept": "text/event-stream",
                                 "Last-Event-ID": str(self.last)}) as response:
                    if response.status_code != 200:  # no session yet
                        response.read()
                        time.sleep(0.05)
                        continue
                    self.connects += 1
                    for name, frame_id, event in iter_events(response):
                        problem = frame_problem(name, frame_id, event)
                        if problem is None and event.get("seq") != self.last + 1:
                            problem = f"after seq {self.last} came seq {event.get('seq')}"
                        if problem is not None:
                            self.problems.append(problem)
                        self.events.append(event)
                        if self.done() or self.shared.stop.is_set():
                            return
            except (httpx.HTTPError, SSEError, ValueError):
                time.sleep(0.02)


def sse_replay(base: str, agent: str, key: str, last_seq: int, timeout_s: float
               ) -> tuple[list[dict[str, Any]], list[str]]:
    """Replay a session from seq 0 over SSE until ``last_seq`` (bounded)."""
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    if last_seq == 0:
        return events, problems
    with httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0)) as http, http.stream(
            "GET", base + session_path(agent, key) + "/events", params={"after": 0},
            headers={"Accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            return events, [f"HTTP {response.status_code}"]
        deadline = time.monotonic() + timeout_s
        for name, frame_id, event in iter_events(response):
            problem = frame_problem(name, frame_id, event)
            if problem is not None:
                problems.append(problem)
            events.append(event)
            if int(event["seq"]) >= last_seq or time.monotonic() > deadline:
                break
    return events, problems


# --------------------------------------------------------------------------- reading back


@dataclass
class Snapshot:
    sessions: dict[tuple[str, str], dict[str, Any]]
    logs: dict[tuple[str, str], list[dict[str, Any]]]
    runs: dict[str, dict[str, Any]]


def read_log(http: httpx.Client, agent: str, key: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = http.get(session_path(agent, key) + "/events",
                            params={"after": after, "limit": 10_000})
        response.raise_for_status()
        page = response.json()["events"]
        events.extend(page)
        if len(page) < 10_000:
            return events
        after = page[-1]["seq"]


def snapshot(base: str, runs: dict[str, dict[str, Any]], deadline: float) -> Snapshot:
    """Read every session, its log and its runs; poll until every run is terminal or
    ``deadline`` passes (``runs`` keeps the terminal ones between calls)."""
    with httpx.Client(base_url=base, timeout=30.0) as http:
        settled = False
        while True:
            sessions: dict[tuple[str, str], dict[str, Any]] = {}
            for agent in AGENTS:
                response = http.get(f"/v1/agents/{agent}/sessions")
                response.raise_for_status()
                for s in response.json()["sessions"]:
                    sessions[(agent, s["key"])] = s
            logs = {s: read_log(http, *s) for s in sessions}
            run_ids = {e["run_id"] for log in logs.values() for e in log if e["run_id"]}
            if settled and all(runs.get(r, {}).get("status") in TERMINAL for r in run_ids):
                # Every run was terminal before these logs were read: they are final.
                return Snapshot(sessions, logs, {r: runs[r] for r in run_ids})
            for run_id in sorted(run_ids):
                if runs.get(run_id, {}).get("status") not in TERMINAL:
                    response = http.get(f"/v1/runs/{run_id}")
                    runs[run_id] = response.json() if response.status_code == 200 else {
                        "status": f"HTTP {response.status_code}"}
            waiting = [r for r in run_ids if runs[r].get("status") not in TERMINAL]
            if waiting and time.monotonic() > deadline:
                return Snapshot(sessions, logs, {r: runs[r] for r in run_ids})
            if not waiting:
                settled = True  # read the logs once more, after the last run ended
                continue
            info(f"{len(waiting)} run(s) not terminal yet")
            time.sleep(0.5)


def resume_points(snap: Snapshot) -> collections.Counter[str]:
    """For each ``run.resumed``, the kind of the run's event before it: ``tool.started``
    means a kill during a tool call, ``run.started`` during the first model call..."""
    points: collections.Counter[str] = collections.Counter()
    for log in snap.logs.values():
        last: dict[str, str] = {}
        for e in log:
            if e["kind"] == "run.resumed":
                points[last.get(e["run_id"], "?")] += 1
            last[e["run_id"]] = e["kind"]
    return points


def read_effects(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- checks


class Violations:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(INVARIANTS, 0))
        self.examples: list[dict[str, Any]] = []

    def add(self, invariant: str, text: str, session: tuple[str, str] | None = None) -> None:
        assert invariant in INVARIANTS, invariant
        self.counts[invariant] += 1
        if len(self.examples) < 20:
            self.examples.append({"invariant": invariant, "text": text,
                                  "session": list(session) if session else None})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def check(snap: Snapshot, shared: Shared, effects: list[str], idem: list[str],
          violations: Violations) -> None:
    # -- 3. dense seqs ----------------------------------------------------------------
    for s, log in snap.logs.items():
        seqs = [e["seq"] for e in log]
        if seqs != list(range(1, len(seqs) + 1)):
            dups = [q for q, c in collections.Counter(seqs).items() if c > 1]
            violations.add("seq_dense", f"seqs are not 1..{len(seqs)} (duplicates {dups[:5]}, "
                           f"first/last {seqs[:1]}/{seqs[-1:]})", s)
        if snap.sessions[s]["last_seq"] != len(seqs):
            violations.add("seq_dense", f"last_seq {snap.sessions[s]['last_seq']} but "
                           f"{len(seqs)} events", s)

    # Events of each run, in log order, and where each run lives.
    by_run: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    run_session: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    users: dict[str, list[tuple[tuple[str, str], dict[str, Any]]]] = \
        collections.defaultdict(list)
    for s, log in snap.logs.items():
        for e in log:
            if e["run_id"]:
                by_run[e["run_id"]].append(e)
                run_session[e["run_id"]].add(s)
            if e["kind"] == "message.user":
                users[e["data"]["content"]].append((s, e))

    # -- 1. acknowledged messages: one run, one message.user --------------------------
    with shared.lock:
        msgs = dict(shared.msgs)
    for content, found in users.items():
        msg = msgs.get(content)
        if msg is None:
            violations.add("ack_once", f"message.user {content!r} that no client sent",
                           found[0][0])
        elif len(found) > 1:
            violations.add("ack_once", f"message {content!r} logged {len(found)} times "
                           f"(seqs {[e['seq'] for _, e in found]}, runs "
                           f"{[e['run_id'] for _, e in found]})", found[0][0])
    for content, msg in msgs.items():
        if not msg.acked:
            continue
        found = users.get(content, [])
        session = (msg.agent, msg.key)
        if not found:
            violations.add("ack_once", f"acknowledged message {content!r} (run "
                           f"{msg.run_ids[:1]}) is not in the log", session)
            continue
        where, event = found[0]
        if where != session:
            violations.add("ack_once", f"message {content!r} logged in {where}, sent to "
                           f"{session}", session)
        run_id = event["run_id"]
        if msg.run_ids and msg.run_ids[0] != run_id and msg.idem_key is None:
            violations.add("ack_once", f"message {content!r} acknowledged as run "
                           f"{msg.run_ids[0]} but logged for run {run_id}", session)
        run = snap.runs.get(run_id, {})
        if run.get("input") != content:
            violations.add("ack_once", f"run {run_id} of message {content!r} has input "
                           f"{run.get('input')!r}", session)

    # -- 2. runs: terminal, one terminal event, its last --------------------------------
    effect_of: dict[str, dict[str, Any]] = {}  # effect id -> its tool.started
    started_count: collections.Counter[str] = collections.Counter()
    finished_ok: dict[str, str] = {}  # effect id -> tool name, for results without error
    completed_idem: set[str] = set()
    for run_id, events in by_run.items():
        session = sorted(run_session[run_id])[0]
        if len(run_session[run_id]) > 1:
            violations.add("run_terminal", f"run {run_id} has events in "
                           f"{sorted(run_session[run_id])}", session)
        run = snap.runs.get(run_id, {})
        status = run.get("status")
        kinds = [e["kind"] for e in events]
        terminal = [k for k in kinds if k in TERMINAL_KIND]
        if status not in TERMINAL:
            violations.add("run_terminal", f"run {run_id} is {status!r}; its events: "
                           f"{kinds}", session)
        elif terminal != [kinds[-1]] or TERMINAL_KIND[kinds[-1]] != status:
            violations.add("run_terminal", f"run {run_id} is {status} but its events are "
                           f"{kinds}", session)
        if kinds.count("message.user") != 1 or kinds.count("run.queued") != 1 or \
                kinds[:2] != ["message.user", "run.queued"]:
            violations.add("ack_once", f"run {run_id} starts {kinds[:3]} with "
                           f"{kinds.count('message.user')} message.user", session)

        # -- 7. steps and results once; collect effects ------------------------------
        steps = [e["data"].get("step") for e in events if e["kind"] == "message.assistant"]
        if steps != list(range(1, len(steps) + 1)):
            violations.add("step_once", f"run {run_id} model steps {steps}", session)
        call_effect: dict[str, str] = {}
        finished: collections.Counter[str] = collections.Counter()
        run_idem: set[str] = set()
        for e in events:
            data = e["data"]
            if e["kind"] == "tool.started":
                effect_id = data["effect_id"]
                call_effect[data["call_id"]] = effect_id
                effect_of.setdefault(effect_id, e)
                started_count[effect_id] += 1
                if data["name"] in NON_IDEMPOTENT and (data.get("retry") or
                                                      started_count[effect_id] > 1):
                    violations.add("effect_once", f"non-idempotent {data['name']} started "
                                   f"again for effect {effect_id} (seq {e['seq']})", session)
                if data["name"] == "record_idem":
                    run_idem.add(effect_id)
            elif e["kind"] == "tool.finished":
                effect_id = call_effect.get(data["call_id"], f"?{data['call_id']}")
                finished[effect_id] += 1
                if finished[effect_id] > 1:
                    violations.add("step_once", f"run {run_id}: effect {effect_id} has "
                                   f"{finished[effect_id]} results", session)
                if not data["is_error"]:
                    finished_ok[effect_id] = data["name"]
        if status == "completed":
            completed_idem |= run_idem

        # -- 8. outcomes -------------------------------------------------------------
        if status in ("failed", "cancelled"):
            last = events[-1]["data"] if events else {}
            violations.add("run_outcome", f"run {run_id} {status}: "
                           f"{json.dumps(last)[:300]}", session)
        elif status == "interrupted":
            effect_id = events[-1]["data"].get("effect_id") if events else None
            tool = effect_of.get(effect_id or "", {}).get("data", {}).get("name")
            if tool not in NON_IDEMPOTENT:
                violations.add("run_outcome", f"run {run_id} interrupted for effect "
                               f"{effect_id} of tool {tool!r}", session)

    # -- 4. effects ---------------------------------------------------------------------
    seen = collections.Counter(effects)
    for effect_id, n in seen.items():
        if n > 1:
            violations.add("effect_once", f"effect {effect_id} is {n} times in effects.log",
                           _session_of(effect_id, by_run, run_session))
        intent = effect_of.get(effect_id)
        if intent is None or intent["data"]["name"] != "record_once":
            violations.add("effect_once", f"effect {effect_id} in effects.log has no "
                           "record_once tool.started", _session_of(effect_id, by_run,
                                                                   run_session))
    idem_seen = set(idem)
    for effect_id in idem_seen:
        intent = effect_of.get(effect_id)
        if intent is None or intent["data"]["name"] != "record_idem":
            violations.add("idem_effects", f"effect {effect_id} in idem.log has no "
                           "record_idem tool.started", _session_of(effect_id, by_run,
                                                                   run_session))
    for effect_id, name in finished_ok.items():
        if name == "record_once" and effect_id not in seen:
            violations.add("effect_once", f"record_once {effect_id} has a result but no "
                           "line in effects.log", _session_of(effect_id, by_run, run_session))
        if name == "record_idem" and effect_id not in idem_seen:
            completed_idem.add(effect_id)
    for effect_id in sorted(completed_idem - idem_seen):
        violations.add("idem_effects", f"record_idem {effect_id} (of a completed run or "
                       "with a result) is not in idem.log",
                       _session_of(effect_id, by_run, run_session))

    # -- 6. idempotency keys ----------------------------------------------------------
    with shared.lock:
        live = list(shared.live_violations)
    for invariant, text in live:
        violations.add(invariant, text)
    for content, msg in msgs.items():
        if msg.idem_key is None or not msg.acked:
            continue
        found = users.get(content, [])
        if found and any(r != found[0][1]["run_id"] for r in msg.run_ids):
            violations.add("idempotency_key", f"Idempotency-Key {msg.idem_key!r}: answers "
                           f"named runs {sorted(set(msg.run_ids))}, the log "
                           f"{found[0][1]['run_id']}", (msg.agent, msg.key))


def _session_of(effect_id: str, by_run: dict[str, list[dict[str, Any]]],
                run_session: dict[str, set[tuple[str, str]]]) -> tuple[str, str] | None:
    run_id = effect_id.split("/", 1)[0]
    sessions = run_session.get(run_id)
    return sorted(sessions)[0] if sessions else None


def check_sse(base: str, snap: Snapshot, followers: list[Follower], sample: int,
              rng: random.Random, timeout_s: float, violations: Violations) -> int:
    sessions = sorted(snap.logs)
    if 0 < sample < len(sessions):
        sessions = sorted(rng.sample(sessions, sample))
    for s in sessions:
        log = snap.logs[s]
        try:
            replayed, problems = sse_replay(base, *s, len(log), timeout_s)
        except (httpx.HTTPError, SSEError, ValueError) as exc:
            violations.add("sse_replay", f"replay failed: {exc!r}", s)
            continue
        for problem in problems[:3]:
            violations.add("sse_replay", f"replay: {problem}", s)
        if replayed != log:
            violations.add("sse_replay", _diff("replay", replayed, log), s)
    for follower in followers:
        s = follower.session
        for problem in follower.problems[:3]:
            violations.add("sse_replay", f"follower: {problem}", s)
        if follower.events != snap.logs.get(s, []):
            violations.add("sse_replay", _diff("follower", follower.events,
                                               snap.logs.get(s, [])), s)
    return len(sessions)


def _diff(what: str, got: list[dict[str, Any]], log: list[dict[str, Any]]) -> str:
    for i, (a, b) in enumerate(zip(got, log, strict=False)):
        if a != b:
            return f"{what}: event {i + 1} is {json.dumps(a)[:300]}, stored {json.dumps(b)[:300]}"
    return f"{what}: {len(got)} events, stored {len(log)}"


def render_log(log: list[dict[str, Any]]) -> str:
    lines = []
    for e in log:
        data = {k: v for k, v in e["data"].items() if k not in ("usage", "model")}
        lines.append(f"  {e['seq']:>5} {e['run_id']} {e['kind']:<18} "
                     f"{json.dumps(data)[:160]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def setup_agents(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30.0) as http:
        for name, script in AGENTS.items():
            response = http.post("/v1/agents", json={
                "name": name, "model": "scripted", "tools": TOOLS,
                # An unknown outcome ends the run (interrupted) instead of waiting for a
                # client's decision, so every run settles without a human.
                "settings": {"script": script, "on_unknown_outcome": "interrupt"}})
            if response.status_code != 201:
                raise RuntimeError(f"creating agent {name}: HTTP {response.status_code} "
                                   f"{response.text[:500]}")


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Violations, str]:
    t0 = time.monotonic()
    home, effects_dir = workdir / "home", workdir / "effects"
    home.mkdir(parents=True, exist_ok=True)
    effects_dir.mkdir(parents=True, exist_ok=True)
    kill_rng = random.Random(f"{args.seed}/kills")
    names = list(AGENTS)
    sessions = [(names[i % len(names)], f"kill:{i}") for i in range(args.sessions)]
    daemon = Daemon(workdir, home, effects_dir)
    shared = Shared(daemon, sessions, args.backlog)
    clients = [Client(i, shared, args.seed, args.idem_share) for i in range(args.clients)]
    followers = [Follower(shared, s) for s in sessions[:args.followers]]
    violations = Violations()
    out: dict[str, Any] = {"bench": "killtest", "seed": args.seed, "kills": 0,
                           "restarts": 0}
    report = ""
    try:
        daemon.start(args.startup_timeout)
        setup_agents(daemon.url)
        info(f"agentd at {daemon.url}, home {home}; {args.clients} clients, "
             f"{len(sessions)} sessions, {args.kills} kills")
        for thread in [*clients, *followers]:
            thread.start()
        for k in range(args.kills):
            time.sleep(kill_rng.uniform(args.min_kill_ms, args.max_kill_ms) / 1000.0)
            daemon.kill()
            with shared.lock:
                shared.epoch += 1
            out["kills"] += 1
            if k == args.kills - 1:
                shared.drain.set()  # the last restart: no new messages after it
            daemon.start(args.startup_timeout)
            out["restarts"] += 1
            if (k + 1) % 20 == 0 or k + 1 == args.kills:
                with shared.lock:
                    acked = shared.counts["acknowledged"]
                info(f"{k + 1}/{args.kills} kills, {acked} messages acknowledged, "
                     f"{time.monotonic() - t0:.0f}s")
        if args.kills == 0:
            shared.drain.set()
        deadline = time.monotonic() + args.drain_timeout
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
        stuck = [c.name for c in clients if c.is_alive()]
        if stuck:
            raise RuntimeError(f"clients still busy after {args.drain_timeout:.0f}s: {stuck}")
        for client in clients:
            if client.error is not None:
                raise RuntimeError(f"{client.name} crashed: {client.error!r}")

        info("every message sent; waiting for every run to end")
        snap = snapshot(daemon.url, {}, time.monotonic() + args.settle_timeout)
        for follower in followers:
            follower.target = len(snap.logs.get(follower.session, []))
        for follower in followers:
            follower.join(args.settle_timeout)
            if follower.error is not None:
                raise RuntimeError(f"{follower.name} crashed: {follower.error!r}")
        health = httpx.get(f"{daemon.url}/health", timeout=10.0).json()

        effects = read_effects(effects_dir / "effects.log")
        idem = read_effects(effects_dir / "idem.log")
        check(snap, shared, effects, idem, violations)
        replayed = check_sse(daemon.url, snap, followers, args.sse_sessions,
                             random.Random(f"{args.seed}/sse"), args.settle_timeout,
                             violations)

        events = [e for log in snap.logs.values() for e in log]
        statuses = collections.Counter(r.get("status") for r in snap.runs.values())
        counts = shared.counts
        out.update({
            "clients": args.clients,
            "sessions": len(snap.sessions),
            "messages_sent": len(shared.msgs),
            "requests": counts["requests"],
            "requests_by_mode": {m: counts[f"requests_{m}"]
                                 for m in ("nowait", "wait", "stream")},
            "acknowledged": counts["acknowledged"],
            "acknowledged_with_key": sum(m.acked and m.idem_key is not None
                                         for m in shared.msgs.values()),
            "connect_errors": counts["connect_errors"],
            "requests_cut": counts["requests_cut"],
            "requests_cut_after_ack": counts["requests_cut_after_ack"],
            "http_status": {k.removeprefix("http_"): v for k, v in sorted(counts.items())
                            if k.startswith("http_")},
            "idempotency_retries": counts["idempotency_retries"],
            "idempotency_resends": counts["idempotency_resends"],
            "idempotency_resends_abandoned": counts["idempotency_resends_abandoned"],
            "runs": len(snap.runs),
            "runs_by_status": dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))),
            "runs_resumed": len({e["run_id"] for e in events if e["kind"] == "run.resumed"}),
            "resumes": sum(e["kind"] == "run.resumed" for e in events),
            # What each resumed run had last committed: where the kill found it.
            "resumed_after": dict(resume_points(snap).most_common()),
            "tool_retries": sum(e["kind"] == "tool.started" and bool(e["data"].get("retry"))
                                for e in events),
            "events": len(events),
            "effects": len(effects),
            "idem_effects": len(idem),
            "idem_effects_repeated": len(idem) - len(set(idem)),
            "sse_sessions_replayed": replayed,
            "followed_events": sum(len(f.events) for f in followers),
            "follower_connects": sum(f.connects for f in followers),
            "final_active_runs": health.get("active_runs"),
            "final_queued_runs": health.get("queued_runs"),
            "daemon_start_s_median": round(sorted(daemon.start_s)[len(daemon.start_s) // 2],
                                           3),
        })
        report = _report(snap, violations)
    finally:
        shared.stop.set()
        out["final_exit"] = daemon.stop()
        for thread in [*clients, *followers]:
            thread.join(5.0)
        out["duration_s"] = round(time.monotonic() - t0, 1)
    return out, violations, report


def _report(snap: Snapshot, violations: Violations) -> str:
    """Each violation, with the log of the first session it names."""
    if not violations.total:
        return ""
    parts = [f"{v['invariant']}: {v['text']} (session {v['session']})"
             for v in violations.examples]
    shown: set[tuple[str, str]] = set()
    for v in violations.examples:
        if v["session"] and tuple(v["session"]) not in shown and len(shown) < 3:
            s = (v["session"][0], v["session"][1])
            shown.add(s)
            parts.append(f"log of {s}:\n{render_log(snap.logs.get(s, []))}")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kill -9 the daemon under load, then check "
                                "that nothing acknowledged was lost or repeated")
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs (default 200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--sessions", type=int, default=12, help="sessions (default 12)")
    p.add_argument("--followers", type=int, default=2,
                   help="sessions followed live over SSE across kills (default 2)")
    p.add_argument("--min-kill-ms", type=float, default=20.0)
    p.add_argument("--max-kill-ms", type=float, default=400.0)
    p.add_argument("--backlog", type=int, default=3,
                   help="unfinished runs a session may have before clients pick another")
    p.add_argument("--idem-share", type=float, default=0.35,
                   help="share of messages sent with an Idempotency-Key (default 0.35)")
    p.add_argument("--sse-sessions", type=int, default=0,
                   help="sessions replayed over SSE at the end (default 0: all)")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the home, logs and effect files go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args(argv)
    if args.kills < 0 or args.clients < 1 or args.sessions < 1:
        p.error("--kills must be >= 0, --clients and --sessions >= 1")
    if not 0 <= args.min_kill_ms <= args.max_kill_ms:
        p.error("need 0 <= --min-kill-ms <= --max-kill-ms")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.followers = min(args.followers, args.sessions)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="agentd-killtest-"))
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    failed = False
    violations = Violations()
    try:
        out, violations, report = run(args, workdir)
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        failed = True
        out = {"bench": "killtest", "seed": args.seed, "error": str(exc)[:2000]}
        report = ""
        info(f"harness failed: {exc}")
    out["violations"] = violations.total
    out["violations_by_invariant"] = dict(violations.counts)
    if violations.examples:
        out["violation_examples"] = [f"{v['invariant']}: {v['text']}"[:400]
                                     for v in violations.examples[:5]]
    if report:
        (workdir / "violations.txt").write_text(report + "\n")
        info(f"VIOLATIONS:\n{report}")
    keep = args.keep or failed or violations.total > 0
    if keep:
        info(f"kept {workdir}")
        out["workdir"] = str(workdir)
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 1 if failed or violations.total else 0


if __name__ == "__main__":
    sys.exit(main())
