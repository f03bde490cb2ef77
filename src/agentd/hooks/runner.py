"""The :class:`agentd.runtime.hooks.Checks` of a daemon: one runner for every kind."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from agentd.config import HooksConfig
from agentd.errors import InvalidInput
from agentd.hooks._command import run_command
from agentd.hooks._python import allowed, call_python, resolve
from agentd.hooks._webhook import post
from agentd.runtime.hooks import CheckCall, CheckFailed
from agentd.security.hosts import HostRules, Refused
from agentd.settings import AgentSettings

__all__ = ["HookRunner"]

#: Sync Python checks running at once (more wait for a thread, within their timeout).
THREADS = 8


class HookRunner:
    """Runs agents' checks, within what the operator's ``[hooks]`` allows."""

    def __init__(self, config: HooksConfig, *, daemon_ports: Iterable[int] = (),
                 environ: Mapping[str, str] | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.rules = HostRules.of(config.allow_hosts, config.allow_http,
                                  (p for p in daemon_ports if p))
        env = os.environ if environ is None else environ
        self.secret: str | None = env.get(config.secret_env) or None
        self._client = client
        self._owns_client = client is None
        self._callables: dict[str, Any] = {}
        #: Sync Python checks run here (made on first use).
        self._threads: ThreadPoolExecutor | None = None
        self.commands = [shlex.split(entry) for entry in config.commands]

    def command_allowed(self, argv: list[str]) -> bool:
        """Whether ``argv`` starts with one of the operator's ``[hooks] commands``."""
        return any(prefix and argv[:len(prefix)] == prefix for prefix in self.commands)

    def check_settings(self, settings: AgentSettings) -> None:
        """Refuse (422, naming the field) a callable or a URL the operator does not
        allow; called when an agent is saved, whoever saves it."""
        placed = [(f"body.settings.hooks.checks[{i}]", c)
                  for i, c in enumerate(settings.hooks.checks)]
        placed += [(f"body.settings.guardrails[{i}]", c)
                   for i, c in enumerate(settings.guardrails)]
        for where, check in placed:
            if check.callable is not None:
                why = allowed(check.callable, self.config.allow)
                if why is not None:
                    raise InvalidInput(f"{where}.callable: {why}",
                                       field=f"{where}.callable")
            if check.command is not None and not self.command_allowed(check.command):
                raise InvalidInput(
                    f"{where}.command: {shlex.join(check.command)[:200]!r} does not start "
                    "with a command this daemon allows: the operator lists them in "
                    "[hooks] commands (agentd.toml)", field=f"{where}.command")
            if check.url is not None:
                if not self.rules.enabled:
                    raise InvalidInput(
                        f"{where}.url: webhook checks are off on this daemon: the "
                        "operator allows no host ([hooks] allow_hosts)", field=f"{where}.url")
                try:
                    self.rules.check_url(check.url)
                except Refused as exc:
                    raise InvalidInput(f"{where}.url: {exc}".replace(
                        "[webhooks] allow", "[hooks] allow"), field=f"{where}.url") from None

    async def run(self, call: CheckCall) -> Any:
        kind = call.check.kind
        if kind == "python":
            spec = call.check.callable or ""
            fn = self._callables.get(spec)
            if fn is None:
                fn = self._callables[spec] = resolve(spec, self.config.allow)
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=THREADS,
                                                   thread_name_prefix="agentd-check")
            return await call_python(fn, call, self._threads)
        if kind == "webhook":
            return await post(self._http(), self.rules, call, self.secret)
        if kind == "command":
            if not self.command_allowed(list(call.check.command or ())):
                raise CheckFailed("the command is no longer one this daemon allows "
                                  "([hooks] commands)")
            return await run_command(call)
        raise CheckFailed(f"{kind} checks are run by the run loop, not here")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None
        if self._threads is not None:
            # (a check still hanging keeps its thread; the daemon does not wait for it)
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
