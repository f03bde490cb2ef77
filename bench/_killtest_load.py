"""The load of the kill test (``bench/killtest.py``): client threads that send messages
across kills (retrying and re-sending Idempotency-Keys) and follower threads that read
sessions over SSE, reconnecting with ``Last-Event-ID`` after every kill."""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError

from _killtest_common import AUTH, TERMINAL, Session, info, session_path
from _killtest_daemon import Daemon
from _killtest_sse import FrameTags, frame_problem, iter_events


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

    def __init__(self, daemon: Daemon, sessions: list[Session], backlog: int) -> None:
        self.daemon = daemon
        self.sessions = sessions
        self.backlog = backlog
        self.lock = threading.Lock()
        self.epoch = 0  # incremented at every kill
        self.stop = threading.Event()  # threads end now
        self.drain = threading.Event()  # no new messages: finish retries and re-sends
        self.msgs: dict[str, Msg] = {}
        self.outstanding: dict[Session, collections.deque[str]] = {
            s: collections.deque() for s in sessions}
        self.counts: collections.Counter[str] = collections.Counter()
        self.live_violations: list[tuple[str, str]] = []
        self.tags = FrameTags()  # every SSE reader's frame id tags, by session

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
            with httpx.Client(headers=AUTH, timeout=httpx.Timeout(30.0, connect=2.0)) as http:
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

    def _pick_session(self, http: httpx.Client) -> Session | None:
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



class Follower(threading.Thread):
    """Follows one session's SSE stream across kills, reconnecting with Last-Event-ID
    (the id of the last frame it got, as it got it)."""

    def __init__(self, shared: Shared, session: Session) -> None:
        super().__init__(name=f"follow-{session[1]}", daemon=True)
        self.shared = shared
        self.session = session
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.connects = 0
        self.last_id = "0"
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
                with httpx.Client(headers=AUTH, timeout=timeout) as http, http.stream(
                        "GET", self.shared.url(path),
                        headers={"Accept": "text/event-stream",
                                 "Last-Event-ID": self.last_id}) as response:
                    if response.status_code != 200:  # no session yet
                        response.read()
                        time.sleep(0.05)
                        continue
                    self.connects += 1
                    for name, frame_id, event in iter_events(response):
                        problem = frame_problem(self.session, name, frame_id, event,
                                                self.shared.tags)
                        if problem is None and event.get("seq") != self.last + 1:
                            problem = f"after seq {self.last} came seq {event.get('seq')}"
                        if problem is not None:
                            self.problems.append(problem)
                        self.events.append(event)
                        self.last_id = frame_id or str(event.get("seq"))
                        if self.done() or self.shared.stop.is_set():
                            return
            except (httpx.HTTPError, SSEError, ValueError):
                time.sleep(0.02)
