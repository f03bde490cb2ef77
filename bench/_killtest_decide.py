"""The human of the kill test (``bench/killtest.py``): a thread that finds runs waiting
for a decision about a tool call of unknown outcome and decides.

It reads every session's log incrementally (``GET .../events?after=N``): an
``approval.requested`` makes its run pending, an ``approval.decided`` or a terminal
event settles it. Runs seen ``waiting_approval`` elsewhere (the settle phase polls every
run it knows from the clients' answers and the logs) are handed in with
:meth:`Decider.notice`. A pending run is decided after a random pause (so that kills
find runs waiting, and a waiting run must survive restarts): ``GET /v1/runs/{id}``,
and when it says ``waiting_approval``, ``POST /v1/runs/{id}/decide`` with ``skip``
(mostly, with :data:`SKIP_OUTPUT`), ``retry`` or ``fail``, drawn from a seeded random.
A 409 ``not_waiting`` (already decided, or just after a restart, before the new daemon
holds the run again) means "look again later"; so does a kill.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from _killtest_common import AUTH, SKIP_OUTPUT, TERMINAL, TERMINAL_KIND, Session, session_path
from _killtest_load import Shared

PAGE = 1_000


@dataclass
class Pending:
    """A run that waits (or waited, as far as the log read so far says) for a decision."""

    run_id: str
    action: str
    due: float  # monotonic time of the next look
    tries: int = 0


class Decider(threading.Thread):
    """Decides about every run that waits for a decision, during load and after it."""

    def __init__(self, shared: Shared, seed: int, retry_share: float, fail_share: float,
                 max_delay_s: float, poll_s: float = 0.2) -> None:
        super().__init__(name="decider", daemon=True)
        self.shared = shared
        self.rng = random.Random(f"{seed}/decide")
        self.retry_share = retry_share
        self.fail_share = fail_share
        self.max_delay_s = max_delay_s
        self.poll_s = poll_s
        self.lock = threading.Lock()
        self.cursor: dict[Session, int] = {}
        self.pending: dict[str, Pending] = {}
        self._noticed: list[str] = []
        #: Every (run id, action) POSTed, answered or not: a logged decision must be one.
        self.posted: set[tuple[str, str]] = set()
        #: (run id, action) of each 2xx answer: each must be logged.
        self.acked: collections.Counter[tuple[str, str]] = collections.Counter()
        self.error: BaseException | None = None

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the harness
            self.error = exc

    def notice(self, run_id: str) -> None:
        """Someone saw ``run_id`` waiting_approval: decide about it too."""
        with self.lock:
            self._noticed.append(run_id)

    def waiting(self) -> int:
        with self.lock:
            return len(self.pending)

    def _loop(self) -> None:
        shared = self.shared
        timeout = httpx.Timeout(5.0, connect=2.0)
        while not shared.stop.is_set():
            try:
                with httpx.Client(headers=AUTH, timeout=timeout) as http:
                    while not shared.stop.is_set():
                        self._scan(http)
                        self._take_notices()
                        self._decide_due(http)
                        shared.stop.wait(self.poll_s)
            except httpx.HTTPError:
                shared.stop.wait(0.05)  # the daemon is down or was killed meanwhile

    # -- finding waiting runs ----------------------------------------------------------

    def _scan(self, http: httpx.Client) -> None:
        for session in self.shared.sessions:
            after = self.cursor.get(session, 0)
            while True:
                response = http.get(self.shared.url(session_path(*session) + "/events"),
                                    params={"after": after, "limit": PAGE})
                if response.status_code == 404:  # no message sent to it yet
                    break
                response.raise_for_status()
                page = response.json()["events"]
                for event in page:
                    self._saw(event)
                if page:
                    after = int(page[-1]["seq"])
                    self.cursor[session] = after
                if len(page) < PAGE:
                    break

    def _saw(self, event: dict[str, Any]) -> None:
        run_id, kind = event.get("run_id"), event["kind"]
        if run_id is None:
            return
        with self.lock:
            if kind == "approval.requested":
                self.pending[run_id] = Pending(run_id, self._choose(), self._due())
            elif kind == "approval.decided" or kind in TERMINAL_KIND:
                self.pending.pop(run_id, None)

    def _take_notices(self) -> None:
        with self.lock:
            noticed, self._noticed = self._noticed, []
            for run_id in noticed:
                if run_id not in self.pending:
                    self.pending[run_id] = Pending(run_id, self._choose(), time.monotonic())

    def _choose(self) -> str:
        draw = self.rng.random()
        if draw < self.fail_share:
            return "fail"
        return "retry" if draw < self.fail_share + self.retry_share else "skip"

    def _due(self, low: float = 0.0) -> float:
        return time.monotonic() + self.rng.uniform(low, self.max_delay_s)

    # -- deciding ----------------------------------------------------------------------

    def _decide_due(self, http: httpx.Client) -> None:
        now = time.monotonic()
        with self.lock:
            due = [p for p in self.pending.values() if p.due <= now]
        for p in due:
            if self.shared.stop.is_set():
                return
            self._decide(http, p)

    def _decide(self, http: httpx.Client, p: Pending) -> None:
        shared = self.shared
        p.tries += 1
        p.due = self._due(0.05)  # look again then, unless the log settles it first
        response = http.get(shared.url(f"/v1/runs/{p.run_id}"))
        if response.status_code != 200:
            shared.violation("decision", f"GET run {p.run_id} of a waiting run: HTTP "
                             f"{response.status_code} {response.text[:200]}")
            self._drop(p)
            return
        status = response.json()["status"]
        if status in TERMINAL:
            self._drop(p)
            return
        if status != "waiting_approval":
            return  # decided meanwhile (the log will say so), or not waiting yet
        body: dict[str, Any] = {"action": p.action}
        if p.action == "skip":
            body["output"] = SKIP_OUTPUT
        with self.lock:
            self.posted.add((p.run_id, p.action))
        shared.count("decide_requests")
        try:
            response = http.post(shared.url(f"/v1/runs/{p.run_id}/decide"), json=body)
        except httpx.HTTPError:
            shared.count("decide_requests_cut")  # perhaps decided: the log will say
            raise
        if 200 <= response.status_code < 300:
            shared.count("decide_acknowledged")
            with self.lock:
                self.acked[(p.run_id, p.action)] += 1
            return
        code = _error_code(response)
        shared.count(f"decide_http_{response.status_code}_{code}")
        if response.status_code != 409 or code != "not_waiting":
            shared.violation("decision", f"decide {body} for run {p.run_id}: HTTP "
                             f"{response.status_code} {response.text[:200]}")
            self._drop(p)

    def _drop(self, p: Pending) -> None:
        with self.lock:
            if self.pending.get(p.run_id) is p:
                del self.pending[p.run_id]


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "?"
    error = body.get("error", body) if isinstance(body, dict) else {}
    code = error.get("code") if isinstance(error, dict) else None
    return str(code or "?")
