"""Replies out: each bound chat's session followed from a durable cursor, and what the
chat should see sent with ``sendMessage`` (split at Telegram's limit), with "typing..."
shown while a run of the session works.

What is delivered: a run's final answer (a ``message.assistant`` with text and no tool
calls, unless ``silent``), the agent's ``message.proactive`` posts, and, when
``deliver_failures`` is on, a line saying a run failed (its error code only). A
schedule firing into ``telegram:<chat_id>`` is an ordinary run of that session, so its
answer is delivered the same way.

Guarantee: the cursor moves after each part that Telegram accepted, so a crash repeats
at most the one part that was being sent (sent, but the daemon died before recording
it), and a timed-out call that Telegram did process is sent again on retry. Nothing is
skipped but what Telegram refused for good (400, 403: the chat blocked the bot), which
is logged and kept as the chat's ``last_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from agentd.channels.telegram._botapi import BotAPI, BotAPIError
from agentd.channels.telegram._text import split_message
from agentd.runtime.bus import Feed, Lagged
from agentd.settings.channels import TelegramConfig, TelegramSettings
from agentd.store.records import AgentRecord, EventRecord
from agentd.store.telegram import ChatRow, TelegramStore

if TYPE_CHECKING:
    from agentd.runtime.ports import AgentHost

__all__ = ["Outbox", "texts_of"]

log = logging.getLogger(__name__)

_PAGE = 200
#: How often a long wait renews the chat's lease (leases hold 30 s at least).
_RENEW_S = 5.0
_RUN_ENDS = frozenset({"run.completed", "run.failed", "run.cancelled", "run.interrupted"})


def texts_of(event: EventRecord, conf: TelegramSettings) -> list[str]:
    """What the chat should be sent for this event, split into messages."""
    data = event.data
    text = ""
    if event.kind == "message.assistant":
        if not data.get("tool_calls") and not data.get("silent"):
            text = str(data.get("text") or "")
    elif event.kind == "message.proactive":
        text = str(data.get("content") or "")
    elif event.kind == "run.failed" and conf.deliver_failures:
        error = data.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        text = f"(the agent could not answer: {code or 'run_failed'})"
    # (A lone surrogate cannot be sent as JSON: it becomes "?", not a stuck chat.)
    text = text.encode("utf-8", "replace").decode("utf-8")
    return split_message(text) if text.strip() else []


class Outbox:
    """Delivery tasks started on demand, one per chat at most: by a new event in a
    bound chat's session (the bus's feed), by a binding, and by a rescan every 10 s
    of the chats whose session is ahead of their cursor (``sessions.last_seq``: what a
    restart, another node's commits or a lagging feed left undelivered). A task ends
    once its chat is caught up, so an idle chat costs nothing."""

    def __init__(self, runtime: AgentHost, store: TelegramStore, config: TelegramConfig, *,
                 settings_of: Callable[[AgentRecord], TelegramSettings | None],
                 api_for: Callable[[TelegramSettings], BotAPI],
                 hold: Callable[[str, int], Awaitable[bool]]) -> None:
        self.runtime = runtime
        self.hold = hold
        self.store = store
        self.config = config
        self.settings_of = settings_of
        self.api_for = api_for
        self._wakes: dict[tuple[str, int], asyncio.Event] = {}
        self._by_session: dict[str, tuple[str, int]] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._typing: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._feed_task: asyncio.Task[None] | None = None
        self._bound = asyncio.Event()

    def start(self) -> None:
        self._feed_task = asyncio.create_task(self._feed(), name="telegram-outbox")

    async def stop(self) -> None:
        tasks = [t for t in (self._feed_task, *self._tasks.values(),
                             *self._typing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feed_task = None
        self._tasks.clear()
        self._typing.clear()
        self._wakes.clear()

    def watch(self, chat: ChatRow) -> None:
        """Follow the chat (a new binding, a new session for it, or events to send)."""
        key = (chat.agent_id, chat.chat_id)
        if chat.session_id:
            self._by_session[chat.session_id] = key
            self._bound.set()
        self._poke(key)

    def _poke(self, key: tuple[str, int]) -> None:
        self._wakes.setdefault(key, asyncio.Event()).set()
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._chat(*key),
                                                   name=f"telegram-out-{key[1]}")

    def forget_agent(self, agent_id: str) -> None:
        """The agent was deleted: stop following its chats."""
        for session, key in list(self._by_session.items()):
            if key[0] == agent_id:
                del self._by_session[session]
        for key in [k for k in self._typing if k[0] == agent_id]:
            self._set_typing(key[1], agent_id, None)

    async def _feed(self) -> None:
        """Poke chats whose session got events, and rescan every 10 s. The bus's feed
        is subscribed to only while some chat is bound here: with no Telegram chat, a
        turn pays nothing for the channel."""
        loop = asyncio.get_running_loop()
        feed: Feed | None = None
        try:
            await self._rescan(everything=True)
            rescanned = loop.time()
            while True:
                item: EventRecord | Lagged | None = None
                if not self._by_session:
                    if feed is not None:
                        feed.close()
                        feed = None
                    self._bound.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(10.0):
                            await self._bound.wait()
                else:
                    if feed is None:
                        feed = self.runtime.subscribe_all()
                    item = await feed.next(10.0)
                    if feed.closed:
                        return
                if isinstance(item, Lagged) or loop.time() - rescanned >= 10.0:
                    await self._rescan()
                    rescanned = loop.time()
                if isinstance(item, EventRecord):
                    key = self._by_session.get(item.session_id)
                    if key is not None:
                        self._poke(key)
        finally:
            if feed is not None:
                feed.close()

    async def _rescan(self, *, everything: bool = False) -> None:
        """Start the chats that are behind; ``everything``: learn every bound chat's
        session first (at start)."""
        try:
            if everything:
                for chat in await self.store.chats():
                    if chat.session_id:
                        self._by_session[chat.session_id] = (chat.agent_id, chat.chat_id)
            for chat in await self.store.behind():
                self.watch(chat)
        except Exception:
            log.exception("the Telegram chats could not be read; trying again")

    async def _chat(self, agent_id: str, chat_id: int) -> None:
        key = (agent_id, chat_id)
        wake = self._wakes[key]
        gone = False
        try:
            while True:
                wake.clear()
                try:
                    more = await self._deliver(agent_id, chat_id)
                except asyncio.CancelledError:
                    raise
                except _NotHeld:
                    return  # another node serves the chat (a rescan tries again)
                except Exception:
                    log.exception("Telegram delivery to chat %d failed; trying again",
                                  chat_id)
                    await asyncio.sleep(self.config.retry_base_s)
                    continue
                if more is None:
                    gone = True
                    return  # the chat is gone (its agent was deleted)
                if not more and not wake.is_set():
                    return  # caught up: the next event starts a task again
        finally:
            # (No await between the last look at ``wake`` and here: a poke after this
            # starts a new task.)
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
                self._wakes.pop(key, None)
            if gone:
                self.forget_agent(agent_id)

    async def _deliver(self, agent_id: str, chat_id: int) -> bool | None:
        """Send what follows the chat's cursor (a page of events); whether there may
        be more (None: the chat is gone)."""
        chat = await self.store.chat(agent_id, chat_id)
        if chat is None:
            return None
        if not chat.session_id:
            return False
        if not await self.hold(agent_id, chat_id):
            raise _NotHeld
        self._by_session[chat.session_id] = (agent_id, chat_id)
        agent = await self.runtime.agents.by_id(agent_id)
        if agent is None:
            return None
        conf = self.settings_of(agent)
        if conf is None:
            self._set_typing(chat_id, agent_id, None)
            return False
        api = self.api_for(conf)
        events = await self.runtime.read_events(chat.session_id, after=chat.delivered_seq,
                                                limit=_PAGE)
        handled = chat.delivered_seq
        for event in events:
            if event.kind == "run.started":
                self._set_typing(chat_id, agent_id, api if conf.typing else None)
            elif event.kind in _RUN_ENDS or event.kind == "approval.requested":
                self._set_typing(chat_id, agent_id, None)
            parts = texts_of(event, conf)
            if not parts:
                handled = event.seq
                continue
            skip = chat.partial_parts if chat.partial_seq == event.seq else 0
            error = None
            for index, part in enumerate(parts[skip:], start=skip + 1):
                error = await self._send(api, agent_id, chat_id, part)
                if error is not None:
                    log.warning("Telegram chat %d: a message (event %d) was given up: %s",
                                chat_id, event.seq, error)
                    break
                if index < len(parts):
                    await self.store.advance(agent_id, chat_id, session_id=chat.session_id,
                                             seq=event.seq, parts=index, sent=1)
            sent = 0 if error is not None else 1
            await self.store.advance(agent_id, chat_id, session_id=chat.session_id,
                                     seq=event.seq, sent=sent, error=error)
            handled = event.seq
        if handled != chat.delivered_seq:
            await self.store.advance(agent_id, chat_id, session_id=chat.session_id,
                                     seq=handled)
        return len(events) == _PAGE

    async def _send(self, api: BotAPI, agent_id: str, chat_id: int, text: str
                    ) -> str | None:
        """Send one message, retrying through 429s, 5xx answers and timeouts; None
        once sent, or why Telegram refused it for good. Each try renews the chat's
        lease first (:class:`_NotHeld` when another node took the chat over)."""
        delay = self.config.retry_base_s
        while True:
            if not await self.hold(agent_id, chat_id):
                raise _NotHeld
            try:
                await api.call("sendMessage", {"chat_id": chat_id, "text": text})
                return None
            except BotAPIError as exc:
                if exc.permanent:
                    return str(exc)
                if exc.retry_after is not None:
                    wait = min(max(exc.retry_after, 0.0), self.config.max_retry_after_s)
                else:
                    wait, delay = delay, min(delay * 2, self.config.retry_max_s)
                log.info("Telegram chat %d: %s; retrying in %.1f s", chat_id, exc, wait)
                await self._pause(agent_id, chat_id, wait)

    async def _pause(self, agent_id: str, chat_id: int, seconds: float) -> None:
        """Wait ``seconds`` keeping the chat's lease (a long 429 must not let another
        node take the chat over and send the same message meanwhile)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(left, _RENEW_S))
            if loop.time() < until and not await self.hold(agent_id, chat_id):
                raise _NotHeld

    def _set_typing(self, chat_id: int, agent_id: str, api: BotAPI | None) -> None:
        key = (agent_id, chat_id)
        task = self._typing.get(key)
        if api is None:
            if task is not None:
                task.cancel()
                self._typing.pop(key, None)
            return
        if task is None or task.done():
            self._typing[key] = asyncio.create_task(self._type(api, chat_id),
                                                    name=f"telegram-typing-{chat_id}")

    async def _type(self, api: BotAPI, chat_id: int) -> None:
        """``typing`` every few seconds until cancelled (a run's end), at most an hour."""
        loop = asyncio.get_running_loop()
        until = loop.time() + 3600
        while loop.time() < until:
            try:
                await api.call("sendChatAction", {"chat_id": chat_id, "action": "typing"})
            except BotAPIError as exc:
                log.debug("Telegram chat %d: typing not shown: %s", chat_id, exc)
            await asyncio.sleep(self.config.typing_every_s)


class _NotHeld(Exception):
    """Another node holds the chat's lease."""
