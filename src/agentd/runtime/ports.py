"""The interfaces the core declares and the capabilities above it implement.

The core (:mod:`agentd.runtime`) imports no capability's package: where a run or a
service needs one, it asks for one of these, and the composition root
(:mod:`agentd.assembly`) hands it the capability that implements it.

====================  =============================================================
:class:`AgentHost`    the agents, their messages and their sessions' events, for a
                      capability that talks to agents as a client would (a
                      channel); :class:`agentd.assembly.Runtime` implements it
:class:`RunMemory`    what a run asks of the agent's memory: blocks in its
                      instructions, entries recalled, the memory tools' context
                      (:class:`agentd.memory.runs.MemoryForRuns`)
:class:`Compactor`    older turns compacted before a call nears the model's window
                      (:class:`agentd.memory.compaction.Compactor`)
:class:`ModelSource`  models of ``model`` strings the core does not know
                      (``adapter:MODULE:OBJECT``: :mod:`agentd.adapters`)
``SecretValues``      the values of the secrets an agent could use, for redaction
                      (:mod:`agentd.secrets`)
====================  =============================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentd.events import RecalledData, StepCompactionData
from agentd.llm.catalog import ModelInfo
from agentd.llm.messages import ModelRequest
from agentd.llm.model import Model
from agentd.media import Attachments, Media
from agentd.store import Accepted, Lease, Tx
from agentd.store.records import AgentRecord, EventRecord, RunRecord

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents
    from agentd.runtime.bus import Feed
    from agentd.runtime.calls import Target
    from agentd.runtime.history import SessionHistory
    from agentd.runtime.runs import SendResult
    from agentd.runtime.sandboxes import Sandboxes
    from agentd.settings import AgentSettings

__all__ = ["AgentHost", "Commit", "Compactor", "ModelSource", "Note", "RunMemory",
           "SecretValues"]

#: Logs an event about a model call under way (an outage, a recovery).
Note = Callable[[Any], Awaitable[None]]
#: Commits a run's events: ``commit(events, usage=..., unless_changed_after=seq)``.
Commit = Callable[..., Awaitable[list[EventRecord]]]
#: The values of the named secrets an agent could use, by name: ``values(tenant,
#: agent_name)`` (:meth:`agentd.secrets.Secrets.values`), redacted out of its runs' events.
SecretValues = Callable[[str, str], Awaitable[dict[str, str]]]


class AgentHost(Protocol):
    """The agents, their messages and their sessions' events, as one node holds them."""

    #: This node's id, and the lease its runs are held under.
    node_id: str
    lease: Lease
    agents: Agents
    sandboxes: Sandboxes

    async def stored_agent(self, name: str) -> AgentRecord: ...

    def workspace_of(self, agent: AgentRecord) -> Any: ...

    #: Images and files in: their limits and checks.
    media: Media

    async def send(self, name: str, key: str, content: str, *,
                   idempotency_key: str | None = None, mode: str = "enqueue",
                   priority: str | None = None, stream: bool = False,
                   origin: Mapping[str, Any] | None = None,
                   also: Callable[[Tx, Accepted], None] | None = None,
                   attachments: Attachments | None = None) -> SendResult: ...

    def takes_images(self, agent: AgentRecord) -> bool:
        """Whether the agent's model takes images and PDFs (the catalog does not say
        it does not)."""
        ...

    async def read_events(self, session_id: str, after: int = 0, limit: int | None = None,
                          before: int | None = None) -> list[EventRecord]: ...

    def subscribe_all(self) -> Feed[EventRecord]: ...


class RunMemory(Protocol):
    """What a run asks of its agent's memory."""

    #: The memory tools: they write the agent's memory, not its workspace.
    tool_names: frozenset[str]
    #: What the memory tools find in ``ToolContext.memory`` and ``.entries``.
    blocks: Any
    entries: Any

    async def instructions(self, agent_id: str, base: str) -> str:
        """``base`` with the agent's memory blocks."""
        ...

    def scope(self, *, agent_id: str, settings: AgentSettings, session: str, run_id: str,
              seq: int, tainted: str | None) -> Any:
        """Where the memory tools act for a run (``ToolContext.memory_scope``; None:
        the agent has no long-term memory here)."""
        ...

    async def recall(self, scope: Any, message: str) -> tuple[str, RecalledData]:
        """The section of entries most relevant to ``message`` for the system prompt
        ("" when nothing fits), and the log of what it holds."""
        ...


class Compactor(Protocol):
    """Compacts a session's older turns before a call that nears the model's window."""

    async def before_call(self, request: ModelRequest, history: SessionHistory, *,
                          info: ModelInfo | None, run: RunRecord, agent: str,
                          settings: AgentSettings, targets: Sequence[Target],
                          priority: str, note: Note, commit: Commit
                          ) -> StepCompactionData | None: ...


class ModelSource(Protocol):
    """Turns ``model`` strings of a kind the core does not know into models."""

    #: The strings it takes begin with this (``adapter:``).
    prefix: str

    def model(self, spec: str, *, fallbacks: int = 0) -> Model:
        """The model of ``spec`` for an agent with ``fallbacks`` fallback models
        (InvalidModel when it is refused)."""
        ...
