"""What the runtime does to a session as a whole: checkpoints, restore and fork (with
the workspace's files), messages added without a run, and the session's own policy
layer. Mixed into :class:`~agentd.runtime.sessions.Sessions`."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentd.errors import InvalidInput, PayloadTooLarge
from agentd.events import (
    MessageAdded,
    MessageAddedData,
    SessionRestored,
    WorkspaceRestored,
    WorkspaceSnapshot,
)
from agentd.runtime.workspaces import snapshot_at
from agentd.security.identity import Principal
from agentd.security.policy import Policy, PolicyConfig, parse_policy
from agentd.security.redaction import SecretRedactor
from agentd.store import NewEvent, Store
from agentd.store.records import CheckpointRecord, EventRecord, SessionRecord, tenant_of

if TYPE_CHECKING:
    from agentd.config import Settings
    from agentd.runtime.agents import Agents
    from agentd.runtime.bus import EventBus
    from agentd.runtime.history import HistoryCache
    from agentd.runtime.sandboxes import Sandboxes
    from agentd.runtime.workspaces import WorkspaceKeeper
    from agentd.store.records import AgentRecord

__all__ = ["CHECKPOINT_NAME", "MAX_ADDED_MESSAGES", "SessionOps", "check_session_key"]

CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
MAX_KEY_LEN = 256
#: A control character (C0 or DEL), refused in a session key.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The most messages one :meth:`SessionOps.add_messages` adds.
MAX_ADDED_MESSAGES = 1000


def check_session_key(key: str) -> str:
    """A new session's key: 1-256 characters, none a control character, no
    ``/``-separated segment ``.`` or ``..`` (clients and proxies remove those from a URL
    path), no last segment that names a session's sub-resource. Such a session could be
    created but never reached again; refused with 422 rather than escaped: a key is the
    client's own string."""
    if not key or len(key) > MAX_KEY_LEN:
        raise InvalidInput(f"session key must be 1-{MAX_KEY_LEN} characters",
                           field="path.key")
    if _CONTROL.search(key) is not None:
        raise InvalidInput("session key must not contain control characters",
                           field="path.key")
    if "." in key and any(part in (".", "..") for part in key.split("/")):
        raise InvalidInput("session key must not be '.' or '..' nor have such a "
                           "'/'-separated part (URLs drop them)", field="path.key")
    if "/" in key and key.rpartition("/")[2] in ("events", "checkpoints", "policy",
                                                  "context"):
        # GET .../sessions/a/events reads the events of session "a", never the session
        # "a/events" (keys may hold '/', the sub-resources' routes come first).
        raise InvalidInput("session key must not end in '/events', '/checkpoints', "
                           "'/policy' or '/context' (the path would name that part of "
                           "another session)",
                           field="path.key")
    return key


def _check_target(seq: int | None, checkpoint: str | None) -> None:
    if (seq is None) == (checkpoint is None):
        raise InvalidInput("give exactly one of checkpoint and seq", field="body")
    if seq is not None and seq < 0:
        raise InvalidInput("seq must be >= 0", field="body.seq")


def new_id_suffix() -> str:
    """A short random suffix for generated session keys (forks)."""
    return secrets.token_hex(4)


class SessionOps:
    """Checkpoints, restore, fork and session policy (declares what it uses)."""

    settings: Settings
    store: Store
    bus: EventBus
    histories: HistoryCache
    sandboxes: Sandboxes
    workspaces: WorkspaceKeeper | None
    agents: Agents
    #: The values of the secrets an agent could use (tenant, agent): see ``Runs``.
    secret_values: Callable[[str, str], Awaitable[Mapping[str, str]]] | None = None

    async def get_session(self, name: str, key: str) -> tuple[AgentRecord, SessionRecord]:
        raise NotImplementedError

    async def create_checkpoint(self, name: str, key: str, checkpoint_name: str | None = None
                                ) -> CheckpointRecord:
        if checkpoint_name is not None and not CHECKPOINT_NAME.match(checkpoint_name):
            raise InvalidInput(
                f"invalid checkpoint name {checkpoint_name!r}: use 1-64 letters, digits, "
                "'_', '-' or '.', starting with a letter or digit", field="body.name")
        _, session = await self.get_session(name, key)
        checkpoint, event = await self.store.create_checkpoint(
            session.id, name=checkpoint_name, kind="manual")
        self.bus.publish([event])
        self.histories.offer([event])
        return checkpoint

    async def list_checkpoints(self, name: str, key: str) -> list[CheckpointRecord]:
        _, session = await self.get_session(name, key)
        return await self.store.list_checkpoints(session.id)

    async def get_checkpoint(self, checkpoint_id: str
                             ) -> tuple[CheckpointRecord, str, SessionRecord]:
        return await self.store.get_checkpoint(checkpoint_id)

    async def restore(self, name: str, key: str, *, seq: int | None = None,
                      checkpoint: str | None = None) -> tuple[SessionRecord, EventRecord]:
        """Set a session back to a checkpoint (id or name) or a seq; see
        :meth:`Store.restore_session`. The session must have no run queued or under way."""
        _check_target(seq, checkpoint)
        _, session = await self.get_session(name, key)
        event = await self.store.restore_session(session.id, seq=seq, checkpoint=checkpoint)
        self.histories.drop(session.id)
        self.bus.publish([event])
        session.last_seq, session.updated_at = event.seq, event.at
        typed = event.typed
        assert isinstance(typed, SessionRestored)
        restored = await self._restore_files(session.agent_id, session.id,
                                             typed.data["to_seq"])
        if restored is not None:
            session.last_seq, session.updated_at = restored.seq, restored.at
        return session, event

    async def fork(self, name: str, key: str, *, new_key: str | None = None,
                   seq: int | None = None, checkpoint: str | None = None) -> SessionRecord:
        """A new session of the agent holding ``key``'s state at a checkpoint or seq."""
        _check_target(seq, checkpoint)
        if new_key is None:
            new_key = f"{key}~{new_id_suffix()}"
        try:
            check_session_key(new_key)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="body.key") from None
        agent, session = await self.get_session(name, key)
        forked = await self.store.fork_session(
            session.id, key=new_key, seq=seq, checkpoint=checkpoint,
            source={"agent": agent.name, "session": key},
            quota=self.agents.guard.quotas.quota(tenant_of(agent.settings), "sessions"))
        restored = await self._restore_files(forked.agent_id, forked.id, forked.last_seq)
        if restored is not None:
            forked.last_seq, forked.updated_at = restored.seq, restored.at
        return forked

    async def _restore_files(self, agent_id: str, session_id: str, seq: int
                             ) -> EventRecord | None:
        """Put the agent's workspace back to the session's files at ``seq`` and log it
        (``workspace.restored``); None when the session never snapshotted its files."""
        keeper = self.workspaces
        if keeper is None:
            return None
        events = await self.store.read_events(session_id)
        if not any(isinstance(e.typed, WorkspaceSnapshot) for e in events):
            return None
        agent = await self.agents.by_id(agent_id)
        scope = (tenant_of(agent.settings) if agent is not None else None) or "_none"
        data = await keeper.restore(agent_id, self.settings.workspaces_dir / agent_id,
                                    snapshot_at(events, seq), seq=seq, scope=scope)
        await self.sandboxes.prepare(self.settings.workspaces_dir / agent_id,
                                     agent_id=agent_id)
        [record] = await self.store.append(session_id, [
            NewEvent.of(WorkspaceRestored(data=data))])
        self.bus.publish([record])
        self.histories.drop(session_id)
        return record

    async def add_messages(self, name: str, key: str, messages: Sequence[MessageAddedData],
                           *, create: bool = False, expect_seq: int | None = None,
                           on_new_session: Callable[[list[str]], None] | None = None
                           ) -> tuple[SessionRecord, list[EventRecord]]:
        """Add messages to a session's conversation without running the agent: one
        ``message.added`` event each, committed together, which the next run's model
        sees where they stand (a user message begins a turn; an assistant message is
        the agent's own). Refused with nothing written (409 ``session_busy``) while
        the session has a run queued, running or waiting for a decision: messages go
        in between runs, never into one. ``expect_seq``: only if the session's last
        seq is still that (409 ``session_changed`` otherwise). ``create``: make the
        session if it does not exist (:class:`SessionNotFound` otherwise), calling
        ``on_new_session`` in the transaction as :meth:`Store.add_messages` says
        (a door whose sessions are one agent's). Returns the session and the events."""
        if not messages:
            raise InvalidInput("no message to add", field="body.messages")
        if len(messages) > MAX_ADDED_MESSAGES:
            raise InvalidInput(f"at most {MAX_ADDED_MESSAGES} messages are added at once",
                               field="body.messages")
        limit = self.settings.max_message_bytes
        for i, message in enumerate(messages):
            if message.get("role") not in ("user", "assistant"):
                raise InvalidInput("a message's role is user or assistant",
                                   field=f"body.messages.{i}.role")
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                raise InvalidInput("a message needs some text",
                                   field=f"body.messages.{i}.content")
            if len(content.encode()) > limit:
                raise PayloadTooLarge(f"message {i} is over {limit} bytes")
        if create:
            check_session_key(key)
        agent = await self.agents.get(name)
        tenant = tenant_of(agent.settings)
        if self.secret_values is not None and tenant is not None:
            # (A key pasted into the conversation is logged by its name, as in Runs.)
            redactor = SecretRedactor(await self.secret_values(tenant, agent.name))
            messages = [redactor.data(m) for m in messages]
        session, records, _ = await self.store.add_messages(
            agent.id, key, [NewEvent.of(MessageAdded(data=m)) for m in messages],
            create=create, expect_seq=expect_seq, on_new_session=on_new_session,
            quota=self.agents.guard.quotas.quota(tenant_of(agent.settings), "sessions"))
        self.bus.publish(records)
        self.histories.offer(records)
        return session, records

    def permissions_for(self, agent: PolicyConfig, session: PolicyConfig | None) -> Policy:
        """The layered policy of an agent's session (daemon < agent < session)."""
        return Policy(daemon=self.settings.policy, agent=agent, session=session)

    async def set_session_policy(self, name: str, key: str, policy: dict[str, Any] | None,
                                 *, actor: Principal | None = None) -> SessionRecord:
        """Set (None: clear) a session's own policy layer; its next run uses it.
        ``actor``: who sets it (a network grant reaching the operator's private
        endpoints needs an operator; the change is audited)."""
        parsed = None if policy is None else parse_policy(policy, "policy", "body")
        layer = None if parsed is None else parsed.model_dump(exclude_none=True)
        _, session = await self.get_session(name, key)
        guard = self.agents.guard
        if parsed is not None:
            before = (parse_policy(session.policy, "policy", "body")
                      if session.policy is not None else None)
            guard.check_operator_only(actor, parsed, before, prefix="")
        await self.store.set_session_policy(session.id, layer)
        if guard.audit is not None and actor is not None:
            await guard.audit.append(actor=actor.name, role=actor.role,
                                     action="session.policy",
                                     resource=f"agent:{name}/session:{key}",
                                     details={"policy": layer})
        session.policy = layer
        return session
