"""The adapters an agent's plan names, and their instances while agents are awake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agentd.adapters._loader import PREFIX, load_object, make_adapter
from agentd.errors import AgentdError, InvalidModel, ModelError
from agentd.llm.messages import ModelRequest, StreamEvent
from agentd.llm.model import Model

__all__ = ["AdapterModel", "Adapters", "adapter_model"]

log = logging.getLogger(__name__)


class AdapterModel(Model):
    """The ``model`` of an adapter-backed agent in its plan: it names the adapter
    (the loaded object); it is never called as a model (its runs are driven by
    :class:`agentd.adapters.executor.AdapterExecutor`)."""

    provider = "adapter"

    def __init__(self, spec: str, obj: Any) -> None:
        self.spec = spec
        self.target = spec[len(PREFIX):]
        self.obj = obj

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        raise ModelError(f"{self.spec} is an adapter, not a model: it answers turns, "
                         "not model calls", retryable=False)
        yield  # pragma: no cover - (an async generator)


def adapter_model(spec: str, allow: Sequence[str], *, fallbacks: int = 0) -> AdapterModel:
    """The plan's model of an agent whose ``model`` is ``adapter:MODULE:OBJECT``
    (checked against the operator's allow list and imported now)."""
    if fallbacks:
        raise InvalidModel("settings.fallbacks: an adapter-backed agent has no fallback "
                           "models (its adapter calls its own)",
                           field="body.settings.fallbacks")
    return AdapterModel(spec.strip(), load_object(spec, allow))


class AdapterModels:
    """The models of adapter-backed agents (``model = "adapter:MODULE:OBJECT"``), for
    the core's agents (a :class:`agentd.runtime.ports.ModelSource`): only objects the
    operator's ``[adapters] allow`` list names are loaded."""

    prefix = PREFIX

    def __init__(self, allow: Callable[[], Sequence[str]]) -> None:
        #: The allow list as it is now (read at each use: the daemon's settings).
        self.allow = allow

    def model(self, spec: str, *, fallbacks: int = 0) -> AdapterModel:
        return adapter_model(spec, self.allow(), fallbacks=fallbacks)


class Adapters:
    """One adapter instance per awake agent, initialised once before its first turn
    and shut down when the agent sleeps, is deleted or the daemon stops."""

    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._instances: dict[str, tuple[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[asyncio.Task[None]] = set()
        #: ``initialize(config_path=...)`` per agent id (termo-agent's ``--config``).
        self.config_paths: dict[str, str] = {}

    async def get(self, agent_id: str, model: AdapterModel) -> Any:
        """The agent's adapter, made and initialised on first use."""
        held = self._instances.get(agent_id)
        if held is not None and held[0] == model.spec:
            return held[1]
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        async with lock:
            held = self._instances.get(agent_id)
            if held is not None and held[0] == model.spec:
                return held[1]
            if held is not None:  # the agent now names another adapter
                await self.release(agent_id)
            try:
                adapter = make_adapter(model.obj)
                init = getattr(adapter, "initialize", None)
                if init is not None:
                    path = self.config_paths.get(agent_id)
                    async with asyncio.timeout(self.timeout_s):
                        await (init() if path is None else init(config_path=path))
            except TimeoutError:
                raise AgentdError(
                    f"adapter {model.target} did not initialise within "
                    f"{self.timeout_s:g}s ([adapters] timeout_s)", code="adapter_timeout",
                    retryable=True) from None
            except Exception as exc:
                raise AgentdError(
                    f"adapter {model.target} failed to initialise: "
                    f"{type(exc).__name__}: {exc}", code="adapter_error",
                    retryable=True) from None
            self._instances[agent_id] = (model.spec, adapter)
            return adapter

    async def release(self, agent_id: str) -> None:
        """Shut the agent's adapter down, if it has one (errors are logged)."""
        held = self._instances.pop(agent_id, None)
        if held is None:
            return
        shutdown = getattr(held[1], "shutdown", None)
        if shutdown is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await shutdown()
        except Exception:
            log.exception("adapter %s of agent %s failed to shut down", held[0], agent_id)

    def release_later(self, agent_id: str) -> None:
        """:meth:`release` from synchronous code (an agent put to sleep)."""
        if agent_id in self._instances:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (the daemon is gone): nothing to await on
                self._instances.pop(agent_id, None)
                return
            task = loop.create_task(self.release(agent_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Shut every adapter down (the daemon stops)."""
        for agent_id in list(self._instances):
            await self.release(agent_id)
