"""A tool: a typed Python callable, its JSON schema, and what the runtime must know of it."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentd.errors import AgentdError, ToolError
from agentd.llm.messages import ToolSpec
from agentd.sandbox.workspace import set_usage, usage

if TYPE_CHECKING:
    from agentd.events import ToolSandboxData
    from agentd.sandbox.context import Sandbox
    from agentd.tools.secret_refs import SecretSource
    from agentd.tools.workers import WorkerPool

__all__ = ["Tool", "ToolContext", "acting", "tool"]

_T = TypeVar("_T")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}\Z")


@dataclass(kw_only=True, slots=True)
class ToolContext:
    """What a tool may learn about the call it serves (pass a ``ctx: ToolContext``)."""

    agent: str
    session: str
    run_id: str
    call_id: str
    #: Stable id of this side effect, the same if the call is ever re-run.
    effect_id: str
    #: The agent's workspace directory (file tools stay inside it).
    workspace: Path | None = None
    #: Where commands run (:class:`agentd.sandbox.Sandbox`): backend, limits, network.
    sandbox: Sandbox | None = None
    #: Path patterns the agent's policy protects (deny rules with ``paths``): every
    #: tool that reads or lists files keeps away from them (see ``tools._protect``).
    protected: tuple[str, ...] = ()
    #: Set by a tool whose result carries content from outside (why), which taints
    #: the session.
    untrusted: str | None = None
    #: Set by a tool that ran a command in a sandbox: the backend's name and, if the
    #: command was killed at a limit, why (``tool.finished``'s ``sandbox``).
    sandboxed: ToolSandboxData | None = None
    #: Cleared by an ``untrusted_output`` tool while it has contacted nothing (its
    #: grant and address checks): a call that fails then brought nothing from outside
    #: in, so it does not taint. True (the default) for every other failure.
    reached_outside: bool = True
    #: The agent's id, and its core memory blocks (:class:`agentd.memory.MemoryBlocks`)
    #: for the memory tools.
    agent_id: str = ""
    memory: Any = None
    #: Set by a tool that changed the agent's memory blocks: the run's next model call
    #: sees them as they are now.
    memory_changed: bool = False
    #: The agent's long-term memory (:class:`agentd.memory.entries.MemoryEntries`) and
    #: the scope a call acts in (:class:`agentd.memory.entries.Scope`: the agent, its
    #: namespaces, the session, and whether the session is tainted).
    entries: Any = None
    memory_scope: Any = None
    #: Where the run's message came from (the ``message.user`` event's data beyond
    #: ``content``: ``schedule_id`` and ``fire_at`` for a schedule's fire, a parent
    #: run for a subtask, a calling agent, ...); empty for a client's message. A child
    #: run (subtask, call, team step) inherits what started its parent's chain
    #: (``agentd.autonomy.subtasks.INHERITED_ORIGIN``: a schedule's, a heartbeat's).
    origin: Mapping[str, Any] = field(default_factory=dict)
    #: The runtime's services a tool may use, by their class (the composition root
    #: provides them: ``ExecutorFactory.provide``); a tool asks for one with
    #: :meth:`service` and must fail clearly (:class:`ToolError`) when it is missing.
    services: Mapping[type, object] = field(default_factory=dict)
    #: Resolves ``secret:NAME`` for the agent (its own secrets, then its tenant's), at
    #: the point of use only (``http_fetch``'s host headers); None: no secrets here.
    secrets: SecretSource | None = None
    #: Headers ``http_fetch`` adds for a host (``settings.http_headers``; values may be
    #: ``secret:NAME``, resolved by ``secrets`` as a request is sent).
    http_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def service(self, kind: type[_T]) -> _T | None:
        """The service of class ``kind`` this call may use (``ctx.service(Schedules)``),
        or None when the runtime gives this run none."""
        found = self.services.get(kind)
        return found if isinstance(found, kind) else None


@dataclass(kw_only=True)
class Tool:
    """A callable the model may invoke.

    Attributes:
        read_only: changes nothing; calls of one step may run concurrently.
        idempotent: safe to repeat with the same effect id.
        needs_approval: the policy asks a person before it runs, unless a rule allows it.
        needs_network: reaches the network; refused unless the agent's policy grants it.
        sends_out: sends data out of the daemon or acts irreversibly outside the
            workspace (a network write, a message); after untrusted content entered
            the session (taint), such calls need approval or are denied.
        untrusted_output: what it returns comes from outside (a web page, an MCP
            server), so it taints the session that reads it.
        sends_out_to: where one call sends content out of the daemon, when that depends
            on its arguments: given them (as the model sent them, unchecked) and the
            calling session's key, a phrase naming the destination for the person
            asked ("posts its content to Telegram chat '42' ..."), or None when this
            call keeps it inside. A call with a destination is judged like a
            ``sends_out`` one once the session is tainted (asked about, or denied),
            and as its other flags say while it is clean: ``message_post`` into a
            channel's session, a ``schedule_create`` whose runs start later.
        timeout_s: wall-clock limit of one call (None: the daemon's default).
        isolated: its work is CPU-bound Python (regular expressions, big numbers,
            parsing): the runtime runs it in a worker process, killed at the time
            limit, so that it cannot hold the daemon's GIL. It must be a sync function
            defined at the top level of an importable module, with picklable
            arguments and result.
    """

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: dict[str, Any]
    read_only: bool = False
    idempotent: bool = False
    needs_approval: bool = False
    needs_network: bool = False
    sends_out: bool = False
    untrusted_output: bool = False
    sends_out_to: Callable[[Mapping[str, Any], str], str | None] | None = None
    timeout_s: float | None = None
    isolated: bool = False
    _model: type[BaseModel] = field(repr=False, default=BaseModel)
    _wants_ctx: bool = field(repr=False, default=False)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description,
                        parameters=self.parameters)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check the model's arguments against the signature; raise ToolError if wrong."""
        try:
            parsed = self._model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolError(f"invalid arguments for {self.name}: {problems}",
                            code="tool_bad_arguments") from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    async def call(self, arguments: dict[str, Any], ctx: ToolContext,
                   default_timeout_s: float, workers: WorkerPool | None = None) -> Any:
        """Run the tool within its time limit (an ``isolated`` one in ``workers``)."""
        timeout = self.timeout_s or default_timeout_s
        if self.isolated and workers is not None:
            # Validated in the worker too: a huge argument costs the worker, not the loop.
            quota = usage(ctx.workspace) if ctx.workspace is not None else None
            try:
                async with asyncio.timeout(timeout):
                    result, untrusted, used = await workers.run(
                        "agentd.tools._worker", "run_tool", self.fn.__module__,
                        self.name, arguments,
                        # The sandbox's live handles stay here (file tools need none).
                        # (services hold locks and connections: not for a worker)
                        dataclasses.replace(ctx, sandbox=None, memory=None, entries=None,
                                            memory_scope=None, services={},
                                            secrets=None)
                        if self._wants_ctx
                        else None, quota if self._wants_ctx else None, owner=ctx.agent)
            except TimeoutError:
                raise ToolError(f"{self.name} timed out after {timeout:g}s (stopped)",
                                code="tool_timeout") from None
            if untrusted is not None:
                ctx.untrusted = untrusted
            if quota is not None and used is not None and ctx.workspace is not None:
                set_usage(ctx.workspace, *used)  # what the worker's writes counted
            return result
        kwargs = self.validate(arguments)
        if self._wants_ctx:
            kwargs["ctx"] = ctx
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(self.fn):
                    return await self.fn(**kwargs)
                return await asyncio.to_thread(self.fn, **kwargs)
        except TimeoutError:
            raise ToolError(f"{self.name} timed out after {timeout:g}s",
                            code="tool_timeout") from None


def _summary(doc: str | None) -> str:
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ").strip()


def _arg_docs(doc: str | None) -> dict[str, str]:
    """Google-style ``Args:`` descriptions."""
    out: dict[str, str] = {}
    if not doc:
        return out
    text = inspect.cleandoc(doc)
    match = re.search(r"^Args:\s*\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE)
    if not match:
        return out
    for line in match.group(1).splitlines():
        m = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    idempotent: bool = False,
    needs_approval: bool = False,
    needs_network: bool = False,
    sends_out: bool = False,
    untrusted_output: bool = False,
    sends_out_to: Callable[[Mapping[str, Any], str], str | None] | None = None,
    timeout_s: float | None = None,
    isolated: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    idempotent: bool = False,
    needs_approval: bool = False,
    needs_network: bool = False,
    sends_out: bool = False,
    untrusted_output: bool = False,
    sends_out_to: Callable[[Mapping[str, Any], str], str | None] | None = None,
    timeout_s: float | None = None,
    isolated: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a typed function; usable bare or with arguments.

    The JSON schema comes from the signature's type hints (via pydantic) and the
    description from the docstring's first paragraph; ``Args:`` lines describe the
    parameters. A parameter named ``ctx`` receives the :class:`ToolContext`.
    """

    def build(func: Callable[..., Any]) -> Tool:
        tool_name = name or func.__name__
        if not _NAME.match(tool_name):
            raise ValueError(f"invalid tool name {tool_name!r}")
        if isolated and inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {tool_name}: an isolated tool must be a sync function")
        hints = get_type_hints(func)
        docs = _arg_docs(func.__doc__)
        fields: dict[str, Any] = {}
        wants_ctx = False
        for param in inspect.signature(func).parameters.values():
            if param.name == "ctx":
                wants_ctx = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {tool_name}: *args/**kwargs are not supported")
            annotation = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, Field(default, description=docs.get(param.name)))
        model = cast(type[BaseModel], create_model(
            f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields))
        schema = model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return Tool(
            name=tool_name,
            description=description or _summary(func.__doc__),
            fn=func,
            parameters=schema,
            read_only=read_only,
            idempotent=idempotent or read_only,
            needs_approval=needs_approval,
            needs_network=needs_network,
            sends_out=sends_out,
            untrusted_output=untrusted_output,
            sends_out_to=sends_out_to,
            timeout_s=timeout_s,
            isolated=isolated,
            _model=model,
            _wants_ctx=wants_ctx,
        )

    if fn is not None:
        return build(fn)
    return build


async def acting(call: Awaitable[_T]) -> _T:
    """Await a service call from a tool, its refusals (``AgentdError``) turned into
    tool errors the model can act on (same message and code)."""
    try:
        return await call
    except ToolError:
        raise
    except AgentdError as exc:
        raise ToolError(exc.message, code=exc.code) from None
