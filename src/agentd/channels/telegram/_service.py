"""The channel as the runtime holds it: the inbox, the outbox, their Bot API clients,
and the check of agents' ``settings.channels.telegram`` when they are saved."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from agentd.channels.telegram._botapi import BotAPI, RedactTokens
from agentd.channels.telegram._inbound import Inbox
from agentd.channels.telegram._outbound import Outbox
from agentd.errors import InvalidInput
from agentd.security.tls import tls_context
from agentd.settings import AgentSettings, stored_settings
from agentd.settings.channels import TelegramConfig, TelegramSettings
from agentd.store.records import AgentRecord
from agentd.store.telegram import TelegramStore

if TYPE_CHECKING:
    from agentd.runtime.ports import AgentHost

__all__ = ["TelegramChannel"]

log = logging.getLogger(__name__)

_HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2",
                 "httpcore.connection", "httpcore.proxy")


class TelegramChannel:
    """Every agent's Telegram bot, on one node (``[channels.telegram] worker``)."""

    def __init__(self, runtime: AgentHost, store: TelegramStore, config: TelegramConfig
                 ) -> None:
        self.runtime = runtime
        self.store = store
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._settings: dict[str, tuple[float, TelegramSettings | None]] = {}
        self._filter = RedactTokens()
        #: This node's name on the chats' leases, and how long one holds unrenewed
        #: (renewed before every hand-over and every Bot API send, so at least three
        #: calls' timeouts).
        self.owner = runtime.node_id
        self.lease_ttl_s = max(runtime.lease.ttl, 3 * config.timeout_s)
        self.inbox = Inbox(runtime, store, config, settings_of=self.settings_of,
                           api_for=self.api_for, hold=self.hold)
        self.outbox = Outbox(runtime, store, config, settings_of=self.settings_of,
                             api_for=self.api_for, hold=self.hold)
        self.inbox.on_bind = self.outbox.watch
        self._started = False

    # -- settings -----------------------------------------------------------------------

    def check_settings(self, settings: AgentSettings) -> None:
        """Refuse (422) variable names outside the operator's ``env_prefix``."""
        conf = settings.channels.telegram
        if conf is None:
            return
        for name in ("bot_token_env", "secret_token_env"):
            value = getattr(conf, name)
            if not self.config.allows_env(value):
                prefix = self.config.env_prefix
                raise InvalidInput(
                    f"settings.channels.telegram.{name}: {value!r} is not a variable "
                    + (f"agents may name: it must start with {prefix!r}" if prefix else
                       "agents may name: the daemon's [channels.telegram] env_prefix is "
                       "empty")
                    + " ([channels.telegram] env_prefix)",
                    field=f"body.settings.channels.telegram.{name}")

    def settings_of(self, agent: AgentRecord) -> TelegramSettings | None:
        """The agent's Telegram settings when they are usable here (read once per
        version of the agent), else None."""
        cached = self._settings.get(agent.id)
        if cached is not None and cached[0] == agent.updated_at:
            return cached[1]
        try:
            conf = stored_settings(agent.settings).channels.telegram
        except InvalidInput:
            conf = None
        if conf is not None and not (self.config.allows_env(conf.bot_token_env)
                                     and self.config.allows_env(conf.secret_token_env)):
            log.warning("agent %s: its Telegram variables are outside [channels.telegram] "
                        "env_prefix; the channel is off for it", agent.name)
            conf = None
        self._settings[agent.id] = (agent.updated_at, conf)
        return conf

    def api_for(self, conf: TelegramSettings) -> BotAPI:
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                             verify=tls_context())
        return BotAPI(self._client, self.config.api_base, conf.bot_token_env,
                      timeout_s=self.config.timeout_s)

    async def hold(self, agent_id: str, chat_id: int) -> bool:
        """Take or renew this node's lease on the chat (one node serves a chat at a
        time: on a shared PostgreSQL store, every node may run the workers)."""
        return await self.store.hold(agent_id, chat_id, self.owner, self.lease_ttl_s)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        if self.config.worker:
            self.inbox.start()
            self.outbox.start()
        self._started = True

    async def close(self) -> None:
        if self._started:
            await self.inbox.stop()
            await self.outbox.stop()
            if self.config.worker:
                try:
                    await self.store.release(self.owner)
                except Exception:
                    log.exception("could not release this node's Telegram chats")
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        self._started = False

    def forget(self, agent_id: str) -> None:
        """The agent was deleted (its chats and inbox went with it)."""
        self.outbox.forget_agent(agent_id)
        self._settings.pop(agent_id, None)

    async def prune(self) -> int:
        """Delete handled inbox rows past ``inbox_keep_s`` (a housekeeper job)."""
        if self.config.inbox_keep_s <= 0:
            return 0
        return await self.store.prune(time.time() - self.config.inbox_keep_s)

    # -- the API ------------------------------------------------------------------------

    async def accept(self, agent: str, secret: str | None, body: bytes) -> dict[str, Any]:
        """A webhook call (see :meth:`Inbox.accept`)."""
        return await self.inbox.accept(agent, secret, body)

    async def state(self, name: str, *, limit: int = 20) -> dict[str, Any]:
        """The agent's channel: its settings, bound chats (cursor, messages sent, last
        error), inbox counts and latest updates (without their bodies)."""
        agent = await self.runtime.stored_agent(name)
        conf = self.settings_of(agent)
        chats = await self.store.chats(agent.id)
        recent = await self.store.inbox_page(agent.id, limit)
        return {
            "agent": agent.name,
            "enabled": conf is not None,
            "worker": self.config.worker,
            "chats": [{"chat_id": c.chat_id, "session": c.session_key,
                       "delivered_seq": c.delivered_seq, "sent": c.sent,
                       "last_error": c.last_error} for c in chats],
            "inbox": await self.store.inbox_counts(agent.id),
            "recent": [{"update_id": r.update_id, "chat_id": r.chat_id,
                        "status": r.status, "attempts": r.attempts, "error": r.error,
                        "run_id": r.run_id, "received_at": r.received_at}
                       for r in recent],
        }
