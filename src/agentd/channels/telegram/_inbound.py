"""Updates in: the webhook's check and acknowledgement, and the inbox worker that hands
each chat's updates to the agent in ``update_id`` order.

The webhook only records the update (one insert, keyed by ``(agent, update_id)``) and
answers; everything that can be slow (downloading attachments, waking the agent)
happens in the worker, one task per chat, so a slow chat holds up only itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from agentd.channels import TELEGRAM_SESSIONS
from agentd.channels.telegram._botapi import BotAPI, BotAPIError
from agentd.channels.telegram._files import AttachmentFile
from agentd.channels.telegram._text import safe_file_name
from agentd.errors import (
    AgentdError,
    AgentNotAccepting,
    AgentNotFound,
    BadRequest,
    Forbidden,
    InvalidInput,
    ShuttingDown,
    Unauthorized,
)
from agentd.media import Attachments, RawPart
from agentd.settings.channels import TelegramConfig, TelegramSettings
from agentd.store.records import AgentRecord
from agentd.store.telegram import ChatRow, InboxRow, TelegramStore

if TYPE_CHECKING:
    from agentd.runtime.ports import AgentHost

__all__ = ["SECRET_HEADER", "Inbox", "session_key"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Failed hand-overs of one update (errors other than a paused agent or a Bot API
#: outage) before it is set aside as ``failed``.
MAX_ATTEMPTS = 10


def session_key(chat_id: int) -> str:
    """The session a chat's messages go to (its prefix is registered in
    :data:`agentd.channels.CHANNEL_SESSIONS`: such a session is outside the daemon)."""
    return f"{TELEGRAM_SESSIONS}{chat_id}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Inbox:
    """The webhook's side (:meth:`accept`) and the worker that empties the inbox."""

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
        self._wake = asyncio.Event()
        self._chats: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        # A secret compared when there is none to compare with (no such agent, no
        # channel): a refusal then costs what a wrong secret costs.
        self._decoy = secrets.token_urlsafe(32).encode()
        #: Told of every binding (the outbox follows the chat from then on).
        self.on_bind: Callable[[ChatRow], None] = lambda chat: None

    # -- the webhook ----------------------------------------------------------------------

    async def accept(self, agent_name: str, secret: str | None, body: bytes
                     ) -> dict[str, Any]:
        """Check the secret, record the update, answer. Raises :class:`Unauthorized`
        (no secret), :class:`Forbidden` (a wrong one, or no Telegram channel for this
        agent: the two look the same to the caller), :class:`BadRequest` (a body that
        is not an update)."""
        agent: AgentRecord | None
        try:
            agent = await self.runtime.stored_agent(agent_name)
        except AgentNotFound:
            agent = None
        conf = None if agent is None else self.settings_of(agent)
        expected = None
        if conf is not None and self.config.allows_env(conf.secret_token_env):
            expected = os.environ.get(conf.secret_token_env) or None
            if expected is None:
                log.warning("agent %s: its Telegram webhook secret variable %s is not "
                            "set; every update is refused", agent_name,
                            conf.secret_token_env)
        if secret is None:
            raise Unauthorized(f"missing {SECRET_HEADER} header (set secret_token in "
                               "setWebhook; docs/channels.md)")
        given = secret.encode("utf-8", "surrogateescape")
        matches = hmac.compare_digest(given, expected.encode() if expected else self._decoy)
        if not matches or expected is None or agent is None or conf is None:
            raise Forbidden(f"wrong {SECRET_HEADER} for this agent's Telegram webhook "
                            "(or the agent has no Telegram channel)", code="bad_secret")
        update = _parse(body)
        update_id = update["update_id"]
        chat_id, status, why = self._classify(update, conf)
        fresh = await self.store.receive(
            agent_id=agent.id, update_id=update_id, chat_id=chat_id,
            body=body.decode(), status=status, error=why)
        if fresh and status == "pending":
            self._wake.set()
        if fresh and status == "refused":
            log.info("agent %s: Telegram update %d from chat %s refused (not in "
                     "allowed_chats)", agent.name, update_id, chat_id)
        return {"ok": True, "update_id": update_id, "duplicate": not fresh,
                "status": status if fresh else "duplicate"}

    @staticmethod
    def _classify(update: dict[str, Any], conf: TelegramSettings
                  ) -> tuple[int | None, str, str | None]:
        message = update.get("message")
        if not isinstance(message, dict):
            kinds = sorted(k for k in update if k != "update_id")
            return None, "skipped", ("not a message: " + ", ".join(kinds[:3]))[:200]
        chat = message.get("chat")
        chat_id = _int(chat.get("id")) if isinstance(chat, dict) else None
        if chat_id is None or not -(2**63) < chat_id < 2**63:
            raise InvalidInput("message.chat.id must be an integer (64 bits)",
                               field="body.message.chat.id")
        if conf.allowed_chats is not None and chat_id not in conf.allowed_chats:
            return chat_id, "refused", "the chat is not in allowed_chats"
        return chat_id, "pending", None

    # -- the worker -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="telegram-inbox")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._chats.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        self._chats.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                for key in await self.store.pending_chats():
                    if key not in self._chats and await self.hold(*key):
                        task = asyncio.create_task(self._chat(*key),
                                                   name=f"telegram-in-{key[1]}")
                        self._chats[key] = task
                        task.add_done_callback(partial(self._done, key))
            except Exception:
                log.exception("the Telegram inbox could not be read; trying again")
            # Also a poll: updates another node acknowledged, retries after a restart.
            try:
                async with asyncio.timeout(5.0):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _done(self, key: tuple[str, int], _task: object) -> None:
        self._chats.pop(key, None)
        self._wake.set()  # an update may have come in as the task was ending

    async def _chat(self, agent_id: str, chat_id: int) -> None:
        """Hand the chat's pending updates over, oldest first, one at a time: the next
        is not looked at before this one is done (or set aside)."""
        delay = self.config.retry_base_s
        while True:
            if not await self.hold(agent_id, chat_id):
                return  # another node serves the chat now
            row = await self.store.next_pending(agent_id, chat_id)
            if row is None:
                return
            try:
                try:
                    await self._hand_over(row)
                except (_Later, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    log.exception("Telegram update %d of chat %d could not be handed "
                                  "over", row.update_id, chat_id)
                    raise _Later(f"internal error ({type(exc).__name__})",
                                 counts=True) from None
                delay = self.config.retry_base_s
            except _Later as later:
                log.warning("Telegram update %d of chat %d: %s; retrying in %.1f s",
                            row.update_id, chat_id, later, delay)
                attempts = await self.store.attempt_failed(agent_id, row.update_id,
                                                           str(later))
                if later.counts and attempts >= MAX_ATTEMPTS:
                    await self.store.finish(agent_id, row.update_id, status="failed",
                                            error=str(later))
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)

    async def _hand_over(self, row: InboxRow) -> None:
        assert row.chat_id is not None
        agent = await self.runtime.agents.by_id(row.agent_id)
        conf = None if agent is None else self.settings_of(agent)
        if agent is None or conf is None:
            await self.store.finish(row.agent_id, row.update_id, status="failed",
                                    error="the agent has no Telegram channel any more")
            return
        message = orjson.loads(row.body)["message"]
        text = message.get("text") or message.get("caption") or ""
        if not isinstance(text, str):
            text = ""
        try:
            notes, files = await self._attachments(agent, conf, row.update_id, message)
        except BotAPIError as exc:
            raise _Later(f"attachment: {exc}", counts=exc.permanent) from None
        attachments = await self._shown(agent, text, files, notes) if files else None
        content = (attachments.content if attachments is not None
                   else "\n\n".join(part for part in (text, *notes) if part))
        if not content and attachments is None:
            await self.store.finish(row.agent_id, row.update_id, status="skipped",
                                    error="nothing the agent can read (a sticker, a "
                                          "location, ...)")
            return
        key = session_key(row.chat_id)
        try:
            result = await self.runtime.send(
                agent.name, key, content, idempotency_key=f"telegram:{row.update_id}",
                attachments=attachments)
        except (ShuttingDown, AgentNotAccepting) as exc:
            raise _Later(exc.message, counts=False) from None
        except (AgentNotFound, BadRequest) as exc:
            await self.store.finish(row.agent_id, row.update_id, status="failed",
                                    error=f"{exc.code}: {exc.message}"[:500])
            return
        except AgentdError as exc:
            raise _Later(f"{exc.code}: {exc.message}", counts=True) from None
        # A new binding (the chat's first message, or its session was deleted) delivers
        # what follows the event before this message; an existing one keeps its cursor.
        # From the run, not the session's end: after a crash between the send and
        # here, the retry finds the run (the idempotency key) and its reply may be
        # logged already.
        before = max((result.run.queued_seq or 2) - 2, 0)
        self.on_bind(await self.store.bind(
            agent_id=agent.id, chat_id=row.chat_id, session_key=key,
            session_id=result.session.id, after_seq=before))
        await self.store.finish(row.agent_id, row.update_id, status="done",
                                run_id=result.run.id)

    async def _shown(self, agent: AgentRecord, text: str, files: list[RawPart],
                     notes: list[str]) -> Attachments | None:
        """The message with its photo and document as parts the model sees, each
        checked as any image or file is: one that does not pass, or an image for a
        model that takes none, stays a file in the workspace (its note says why)."""
        shown: list[RawPart] = []
        for raw in files:
            if raw.kind == "image" and not self.runtime.takes_images(agent):
                notes.append(f"[{raw.name}: not shown to the model, which takes no images]")
                continue
            try:
                await self.runtime.media.prepare([raw], where=raw.name or "attachment")
            except AgentdError as exc:
                notes.append(f"[{raw.name}: not shown to the model: {exc.message}]")
                continue
            shown.append(raw)
        if not shown:
            return None
        body = "\n\n".join(part for part in (text, *notes) if part)
        return await self.runtime.media.prepare(
            [RawPart(kind="text", text=body), *shown] if body else shown)

    async def _attachments(self, agent: AgentRecord, conf: TelegramSettings,
                           update_id: int, message: dict[str, Any]
                           ) -> tuple[list[str], list[RawPart]]:
        """Download the message's photo or document into the workspace; a line for the
        agent about each (saved where, or why not), and each one saved as a part."""
        files: list[tuple[dict[str, Any], str]] = []
        photo = message.get("photo")
        photo_item: dict[str, Any] | None = None
        if isinstance(photo, list) and photo and isinstance(photo[-1], dict):
            photo_item = photo[-1]  # the largest size comes last
            files.append((photo_item, "photo.jpg"))
        document = message.get("document")
        if isinstance(document, dict):
            files.append((document, safe_file_name(document.get("file_name"), "document")))
        notes = []
        parts: list[RawPart] = []
        saved = False
        limit = conf.max_file_mb << 20
        api = self.api_for(conf)
        for index, (item, name) in enumerate(files):
            file_id = item.get("file_id")
            if not isinstance(file_id, str):
                continue
            name = f"{update_id}-{index}-{name}"
            size = _int(item.get("file_size"))
            if size is not None and size > limit:
                notes.append(f"[attachment not saved: {name} ({size} bytes) is larger "
                             f"than the {conf.max_file_mb} MB limit]")
                continue
            try:
                found = await api.call("getFile", {"file_id": file_id})
                path = found.get("file_path") if isinstance(found, dict) else None
                if not isinstance(path, str) or not path:
                    raise BotAPIError(method="getFile", status=200, permanent=True,
                                      description="no file_path in the answer")
                data = await self._save(agent, api, path, name, limit)
            except BotAPIError as exc:
                if not exc.permanent:
                    raise
                notes.append(f"[attachment not saved: {name}: {exc.description}]")
                continue
            except OSError as exc:
                notes.append(f"[attachment not saved: {name}: {exc.strerror or exc}]")
                continue
            mime = item.get("mime_type") if isinstance(item.get("mime_type"), str) else (
                "image/jpeg" if name.endswith("photo.jpg") else "application/octet-stream")
            notes.append(f"[attachment saved in the workspace: attachments/{name} "
                         f"({mime}, {len(data)} bytes)]")
            parts.append(RawPart(kind="image" if item is photo_item else "file", data=data,
                                 media_type=mime, name=name))
            saved = True
        if saved:
            # Under a root daemon: the new files become the agent's uid's, as files a
            # restore wrote do.
            await self.runtime.sandboxes.prepare(self.runtime.workspace_of(agent),
                                                 agent_id=agent.id)
        return notes, parts

    async def _save(self, agent: AgentRecord, api: BotAPI, path: str, name: str,
                    limit: int) -> bytes:
        """The file written into the workspace; its bytes."""
        workspace = self.runtime.workspace_of(agent)
        target = await asyncio.to_thread(AttachmentFile, workspace, name)
        data = bytearray()
        try:
            async def write(chunk: bytes) -> None:
                data.extend(chunk)
                await asyncio.to_thread(target.write, chunk)

            await api.download(path, write, limit)
            return bytes(data)
        finally:
            await asyncio.to_thread(target.close)


class _Later(Exception):
    """The update could not be handed over now; ``counts``: towards MAX_ATTEMPTS."""

    def __init__(self, message: str, *, counts: bool) -> None:
        super().__init__(message)
        self.counts = counts


def _parse(body: bytes) -> dict[str, Any]:
    try:
        update = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON (a Telegram Update object)",
                         code="malformed_update") from None
    if not isinstance(update, dict):
        raise BadRequest("the body must be a Telegram Update object",
                         code="malformed_update")
    update_id = _int(update.get("update_id"))
    if update_id is None or update_id < 0 or update_id >= 2**63:
        raise InvalidInput("update_id must be a non-negative integer",
                           field="body.update_id")
    return update
