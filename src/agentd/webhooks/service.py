"""Webhooks: an agent's events posted, signed, to URLs the operator allows.

**Subscriptions.** Per agent: a URL, the event kinds wanted (``run.completed``,
``run.*`` or ``*``, checked against :data:`agentd.events.EVENT_KINDS`), a description,
enabled or not, and a secret the daemon makes (``whsec_`` + base64 of 32 random bytes,
shown when it is made or rotated, never again). The URL is checked when it is saved
and before every attempt (:mod:`agentd.security.hosts`): a refused one is a 422
naming ``url``, and nothing is stored.

**At least once.** Two tasks per runtime. The *ingester* turns committed events into
delivery rows (:func:`agentd.store.webhooks._ingest`: one transaction per session,
ids derived from (subscription, session, seq), cursors moved forward in the same
transaction): nudged by the live feed of committed events, and scanning at start and
every ``poll_s`` for sessions no subscription has caught up with (a crash, events of
another node, a feed that lagged). The *sender* leases due deliveries and posts them,
``concurrency`` at once; a non-2xx answer, a timeout or a refused address is retried
after an exponential backoff with jitter (or the receiver's ``Retry-After``), until
the delivery's attempts are spent (``failed``). A delivery is marked ``delivered``
only after a 2xx: a crash in between sends it again, with the same ``webhook-id``.
Deliveries of one subscription are not ordered (retries overtake); ``event.seq``
orders them within a session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from agentd.config import WebhooksConfig
from agentd.errors import AgentdError, Forbidden, InvalidInput
from agentd.events import EVENT_KINDS
from agentd.logcontext import default_trace_id, span_id, trace_id_from
from agentd.runtime.bus import Feed, Lagged
from agentd.security.hosts import HostRules, Refused
from agentd.security.identity import Principal
from agentd.security.tls import tls_context
from agentd.store.records import EventRecord, iso
from agentd.store.rows import new_id
from agentd.store.webhooks import DeliveryRecord, WebhookRecord
from agentd.webhooks._send import attempt, backoff_s

if TYPE_CHECKING:
    from agentd.runtime.bus import EventBus
    from agentd.store import Store

__all__ = ["MAX_KINDS", "PING", "WebhookIn", "Webhooks", "delivery_dict", "wants",
           "webhook_dict"]

log = logging.getLogger(__name__)

#: Kinds one subscription may list.
MAX_KINDS = 100
#: The kind of a test delivery (``POST /v1/webhooks/{id}/ping``).
PING = "webhook.ping"
#: Events read per ingest transaction.
BATCH = 500
_SCAN = 1000
_PREFIXES = frozenset(kind.split(".", 1)[0] for kind in EVENT_KINDS if "." in kind)


@dataclass(frozen=True, kw_only=True)
class WebhookIn:
    url: str
    kinds: tuple[str, ...] = ("*",)
    description: str = ""
    enabled: bool = True


def wants(kinds: Sequence[str], kind: str) -> bool:
    """Whether a subscription's ``kinds`` take an event of ``kind``."""
    for wanted in kinds:
        if wanted == "*" or wanted == kind or (
                wanted.endswith(".*") and kind.startswith(wanted[:-1])):
            return True
    return False


def check_kinds(kinds: Iterable[str], field: str = "body.kinds") -> list[str]:
    out: list[str] = []
    for kind in kinds:
        known = (kind == "*" or kind in EVENT_KINDS
                 or (kind.endswith(".*") and kind[:-2] in _PREFIXES))
        if not known:
            raise InvalidInput(
                f"unknown event kind {kind!r}: use a kind of GET /v1/events/schema "
                f"(run.completed, ...), a family (run.*) or *", field=field)
        if kind not in out:
            out.append(kind)
    if not out:
        raise InvalidInput("kinds must name at least one event kind (or *)", field=field)
    return out


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_dict(rec: WebhookRecord, *, secret: bool = False,
                 counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The API's form of a subscription (the secret only when just made or rotated)."""
    out: dict[str, Any] = {
        "id": rec.id, "agent": rec.agent, "url": rec.url, "kinds": rec.kinds,
        "description": rec.description, "enabled": rec.enabled,
        "created_at": iso(rec.created_at), "updated_at": iso(rec.updated_at),
    }
    if secret:
        out["secret"] = rec.secret
    if counts is not None:
        out["deliveries"] = counts
    return out


def delivery_dict(rec: DeliveryRecord, *, payload: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rec.id, "webhook_id": rec.webhook_id, "kind": rec.kind, "seq": rec.seq,
        "status": rec.status, "attempts": rec.attempts,
        "next_attempt_at": iso(rec.next_attempt_at) if rec.status == "pending" else None,
        "last_status": rec.last_status, "last_error": rec.last_error,
        "last_attempt_at": iso(rec.last_attempt_at), "created_at": iso(rec.created_at),
        "delivered_at": iso(rec.delivered_at),
    }
    if payload:
        out["payload"] = orjson.loads(rec.body)
    return out


def _body(delivery: str, hook: WebhookRecord, agent: str, key: str | None,
          event: EventRecord | None, kind: str) -> str:
    return orjson.dumps({
        "id": delivery, "type": kind, "webhook_id": hook.id, "agent": agent,
        "session": key, "event": None if event is None else event.to_api(),
    }).decode()


class Webhooks:
    """Every agent's subscriptions, and the tasks that deliver (module docstring).

    Args:
        config: the operator's ``[webhooks]``.
        node_id: this node's name on delivery leases.
        daemon_ports: ports of this daemon's API, never a webhook's target on this host.
        exclusive: the store is this daemon's alone (SQLite): every lease left is its.
        clock, rand: the time and randomness decisions use (tests give their own).
    """

    def __init__(self, store: Store, *, bus: EventBus, config: WebhooksConfig,
                 node_id: str, daemon_ports: Iterable[int], exclusive: bool,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.store = store
        #: Trace ids of the runs whose events were delivered lately (see _traceparent).
        self._traces: dict[str, str] = {}
        self.bus = bus
        self.config = config
        self.node_id = node_id
        self.exclusive = exclusive
        self.rules = HostRules.of(config.allow_hosts, config.allow_http, daemon_ports)
        self.clock = clock
        self.rand = rand
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._wake_send = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        #: Whether any subscription is enabled (refreshed by every scan and change):
        #: with none, the feed's events cost nothing.
        self._any = True
        self._wake_ingest = asyncio.Event()
        #: Figures for tests and the bench.
        self.figures: dict[str, int] = {"made": 0, "attempts": 0, "delivered": 0,
                                        "failed": 0, "lost_lease": 0, "scans": 0}

    # -- subscriptions -----------------------------------------------------------------

    def _check_url(self, url: str) -> None:
        try:
            self.rules.check_url(url)
        except Refused as exc:
            raise InvalidInput(str(exc), field="body.url") from None

    async def _check_address(self, url: str, actor: Principal | None = None) -> None:
        """Refuse a URL whose host resolves to an address it may not reach; a name that
        does not resolve now is kept (the attempts will say). A host on the daemon's
        own network (named exactly by the operator, resolving to a private address) is
        an operator's to point a webhook at: 403 for ``actor`` below ``operator``."""
        target = self.rules.check_url(url)
        if target.named and actor is not None and not actor.may("configure_host"):
            private = await asyncio.to_thread(self.rules.private, target)
            if private is not None:
                raise Forbidden(
                    f"{target.host} resolves to {private}, on the daemon's own network: "
                    f"a webhook there needs an operator token (token {actor.label!r} is "
                    f"{actor.role!r})", details={"field": "body.url"})
        try:
            await asyncio.to_thread(self.rules.address, target)
        except Refused as exc:
            raise InvalidInput(str(exc), field="body.url") from None
        except (OSError, UnicodeError) as exc:
            log.info("webhook host %s does not resolve now: %s", target.host, exc)

    async def create(self, agent: str, spec: WebhookIn, *, actor: Principal | None = None
                     ) -> WebhookRecord:
        """A new subscription of ``agent`` (its record holds the new secret);
        ``actor``: who asks (its role decides a host on the daemon's network)."""
        self._check_url(spec.url)
        kinds = check_kinds(spec.kinds)
        owner = await self.store.get_agent(agent)
        await self._check_address(spec.url, actor)
        now = self.clock()
        rec = WebhookRecord(id=new_id("wh_"), agent_id=owner.id, agent=owner.name,
                            url=spec.url, kinds=kinds, description=spec.description,
                            enabled=spec.enabled, secret=new_secret(), created_at=now,
                            updated_at=now)
        made = await self.store.insert_webhook(rec, max_per_agent=self.config.max_per_agent)
        self._any = self._any or made.enabled
        if made.enabled:
            self._wake_ingest.set()
        return made

    async def get(self, webhook_id: str) -> WebhookRecord:
        return await self.store.get_webhook(webhook_id)

    async def counts(self, webhook_id: str) -> dict[str, int]:
        return await self.store.webhook_counts(webhook_id)

    async def list_all(self, *, agent: str | None = None, after: str | None = None,
                   limit: int = 100, agent_ids: Sequence[str] | None = None
                   ) -> list[WebhookRecord]:
        """``agent_ids``: only these agents' (a token's scope)."""
        agent_id = None if agent is None else (await self.store.get_agent(agent)).id
        return await self.store.list_webhooks(agent_id=agent_id, after=after, limit=limit,
                                              agent_ids=agent_ids)

    async def update(self, webhook_id: str, change: dict[str, Any], *,
                     actor: Principal | None = None) -> WebhookRecord:
        """Change ``url``, ``kinds``, ``description`` or ``enabled``; re-enabled, it
        starts from the events logged from then on."""
        change = dict(change)
        if "url" in change:
            self._check_url(change["url"])
        if "kinds" in change:
            change["kinds"] = check_kinds(change["kinds"])
        await self.store.get_webhook(webhook_id)  # 404 before a lookup
        if "url" in change:
            await self._check_address(change["url"], actor)
        rec = await self.store.update_webhook(webhook_id, change, now=self.clock())
        self._any = self._any or rec.enabled
        if rec.enabled:
            self._wake_ingest.set()
        return rec

    async def rotate(self, webhook_id: str) -> WebhookRecord:
        """A new secret; the old one signs nothing from now on (retries included)."""
        return await self.store.update_webhook(webhook_id, {"secret": new_secret()},
                                               now=self.clock())

    async def delete(self, webhook_id: str) -> None:
        """The subscription, its cursors and its deliveries (pending ones are dropped)."""
        await self.store.delete_webhook(webhook_id)

    async def deliveries(self, webhook_id: str, *, status: str | None = None,
                         before: str | None = None, limit: int = 50
                         ) -> list[DeliveryRecord]:
        return await self.store.list_deliveries(webhook_id, status=status, before=before,
                                                limit=limit)

    async def delivery(self, delivery: str) -> DeliveryRecord:
        return await self.store.get_delivery(delivery)

    async def prune(self) -> int:
        """Delete delivered and failed deliveries older than ``keep_deliveries_s`` (a
        housekeeper job); pending ones are never removed. How many."""
        if self.config.keep_deliveries_s <= 0:
            return 0
        return await self.store.prune_deliveries(
            before=self.clock() - self.config.keep_deliveries_s)

    async def replay(self, delivery: str) -> DeliveryRecord:
        """Send a delivery again, now, with the same id (and ``max_attempts`` more
        tries): delivered or failed ones too."""
        rec = await self.store.replay_delivery(delivery, now=self.clock(),
                                               attempts=self.config.max_attempts)
        self._wake_send.set()
        return rec

    async def ping(self, webhook_id: str) -> DeliveryRecord:
        """A test delivery (kind ``webhook.ping``, no event), sent like any other."""
        hook = await self.store.get_webhook(webhook_id)
        delivery = new_id("whd_")
        rec = await self.store.insert_delivery(
            delivery=delivery, webhook_id=hook.id, kind=PING,
            body=_body(delivery, hook, hook.agent, None, None, PING),
            attempt_limit=self.config.max_attempts, now=self.clock())
        self._wake_send.set()
        return rec

    # -- the tasks ---------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                         verify=tls_context(),
                                         limits=httpx.Limits(
                                             max_connections=self.config.concurrency))
        self._tasks = [asyncio.create_task(self._ingest_loop(), name="webhooks-ingest"),
                       asyncio.create_task(self._send_loop(), name="webhooks-send")]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._sending]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._sending.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def catch_up(self, session_ids: Iterable[str] | None = None) -> int:
        """Turn the new events of these sessions (None: of every session behind) into
        deliveries now; how many were made."""
        if session_ids is None:
            ids = await self.store.sessions_behind(_SCAN)
        else:
            wanted = list(session_ids)
            ids = []
            for start in range(0, len(wanted), 500):
                ids += await self.store.behind_among(wanted[start:start + 500])
        made = 0
        for session_id in ids:
            more = True
            while more:
                count, more = await self.store.ingest_webhooks(
                    session_id, now=self.clock(), batch=BATCH,
                    attempt_limit=self.config.max_attempts, wants=wants,
                    body_of=lambda d, h, a, k, e: _body(d, h, a, k, e, e.kind))
                made += count
        if made:
            self.figures["made"] += made
            self._wake_send.set()
        return made

    async def _ingest_loop(self) -> None:
        # The feed only makes deliveries prompt (the scans find whatever it missed), so
        # it is held only while some subscription is enabled: a daemon without webhooks
        # pays nothing per event. ``_wake_ingest`` says one was made or enabled here.
        feed: Feed | None = None
        try:
            scan, scanned = True, 0.0
            while feed is None or not feed.closed:
                if self._any and feed is None:
                    feed, scan = self.bus.subscribe_all(), True
                elif not self._any and feed is not None:
                    feed.close()
                    feed = None
                try:
                    scan, scanned = await self._ingest_once(feed, scan, scanned)
                except Exception:
                    log.exception("webhooks: turning events into deliveries failed")
                    scan = True
                    await asyncio.sleep(self.config.poll_s)
        finally:
            if feed is not None:
                feed.close()

    async def _ingest_once(self, feed: Feed | None, scan: bool, scanned: float
                           ) -> tuple[bool, float]:
        """One pass: what the feed announced (and, when due, a scan for what it did not)
        turned into deliveries; the next pass's (scan, scanned). Without a feed (no
        subscription was enabled at the last look) it waits for one to be made here
        or for the next scan, which finds those made on other nodes."""
        dirty: set[str] = set()
        if scan or time.monotonic() - scanned > self.config.poll_s * 5:
            scanned = time.monotonic()
            self.figures["scans"] += 1
            behind = await self.store.sessions_behind(_SCAN)
            self._any = bool(behind) or bool(await self.store.list_webhooks(limit=1))
            dirty.update(behind)
            scan = len(behind) >= _SCAN
        waited = not (dirty or scan)
        if feed is None or not self._any:
            self._wake_ingest.clear()
            if waited and not self._any and feed is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.poll_s):
                        await self._wake_ingest.wait()
            await self.catch_up(dirty)
            return scan or self._any, scanned
        item = await feed.next(wait_s=self.config.poll_s if waited else 0)
        quiet = item is None
        while item is not None:
            if isinstance(item, Lagged):
                scan = True  # events were dropped: the scan finds their sessions
            elif self._any:
                dirty.add(item.session_id)
            item = await feed.next(wait_s=0) if not feed.queue.empty() else None
        if waited and quiet:
            # poll_s passed quietly: look for what others wrote. (Events this node
            # made while no webhook exists are not a reason to: each would cost a
            # scan; the one every poll_s * 5 finds another node's new webhooks.)
            scan = True
        await self.catch_up(dirty)
        return scan, scanned

    async def _send_loop(self) -> None:
        released = False
        while True:
            try:
                if not released:
                    dropped = await self.store.release_deliveries(
                        None if self.exclusive else self.node_id)
                    released = True
                    if dropped:
                        log.info("webhooks: %d delivery attempt(s) cut off by a stop "
                                 "are due again", dropped)
                await self._send_once()
            except Exception:
                log.exception("webhooks: sending deliveries failed")
                await asyncio.sleep(self.config.poll_s)

    async def _send_once(self) -> None:
        """Lease what is due (up to the free slots) and start sending it; then wait until
        the next is due, a slot frees, or something is queued here."""
        self._wake_send.clear()
        free = self.config.concurrency - len(self._sending)
        claimed = []
        if free > 0:
            claimed = await self.store.claim_deliveries(
                owner=self.node_id, now=self.clock(),
                lease_s=self.config.timeout_s * 2 + 30.0, limit=free)
        for rec, url, secret in claimed:
            task = asyncio.create_task(self._deliver(rec, url, secret),
                                       name=f"webhook-{rec.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)
        if claimed and len(claimed) == free:
            return
        wait = self.config.poll_s
        if free > 0:
            due = await self.store.next_delivery_due()
            if due is not None:
                wait = min(wait, max(due - self.clock(), 0.01))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake_send.wait()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake_send.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks: a delivery task failed", exc_info=task.exception())

    async def _traceparent(self, rec: DeliveryRecord) -> str | None:
        """The ``traceparent`` of a delivery of a run's event: the run's
        ``invoke_agent`` span in its trace (the caller's, or its own), so a receiver
        that traces links its work to the run (issue 32). None for a ping or an
        event of no run."""
        try:
            event = orjson.loads(rec.body).get("event") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return None
        run_id = event.get("run_id") if isinstance(event, dict) else None
        if not isinstance(run_id, str):
            return None
        trace = self._traces.get(run_id)
        if trace is None:
            try:
                starter = await self.store.run_starter(await self.store.get_run(run_id))
            except AgentdError:
                starter = None
            trace = (trace_id_from(starter.data.get("traceparent")) if starter else None) \
                or default_trace_id(run_id)
            self._traces[run_id] = trace
            if len(self._traces) > 4096:
                self._traces.pop(next(iter(self._traces)))
        return f"00-{trace}-{span_id(run_id, 'run')}-01"

    async def _deliver(self, rec: DeliveryRecord, url: str, secret: str) -> None:
        assert self._client is not None
        cfg = self.config
        outcome = await attempt(self._client, self.rules, url=url, secret=secret,
                                delivery=rec.id, body=rec.body, timeout_s=cfg.timeout_s,
                                clock=self.clock, traceparent=await self._traceparent(rec))
        self.figures["attempts"] += 1
        now = self.clock()
        next_at: float | None = None
        if not outcome.delivered and rec.attempts + 1 < rec.attempt_limit:
            if outcome.retry_after_s is not None:
                wait = min(outcome.retry_after_s, cfg.retry_after_max_s)
            else:
                wait = backoff_s(rec.attempts + 1, base_s=cfg.backoff_s,
                                 max_s=cfg.backoff_max_s, rand=self.rand)
            next_at = now + wait
        kept = await self.store.finish_attempt(
            rec.id, owner=self.node_id, now=now, delivered=outcome.delivered,
            next_attempt_at=next_at, status_code=outcome.status_code, error=outcome.error)
        if not kept:
            self.figures["lost_lease"] += 1
        elif outcome.delivered:
            self.figures["delivered"] += 1
        elif next_at is None:
            self.figures["failed"] += 1
            log.warning("webhook delivery %s failed after %d attempts: %s", rec.id,
                        rec.attempts + 1, outcome.error)
