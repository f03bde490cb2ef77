"""What a member token may still use of the operator-only settings, from the daemon's
configuration (:class:`agentd.trust.Grants`).

- a model string of a public provider (``member_providers``), of one of the operator's
  named endpoints (``[models.NAME]``), or an adapter (the operator's ``[adapters]
  allow`` list decides those);
- a sandbox backend at least as strong as the daemon's (gvisor > bubblewrap > process;
  ``auto`` is the daemon's own);
- sandbox limits, a workspace quota and a snapshot budget up to the daemon's;
- a network grant that covers none of the operator's ``private_endpoints`` (``true``
  covers them all when there are any);
- a stdio MCP command on ``mcp_commands``, an MCP URL under one of ``mcp_urls``.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from agentd.config import Settings
from agentd.llm.registry import PROVIDERS, endpoint_providers
from agentd.sandbox.egress import parse_endpoint

__all__ = ["BACKEND_STRENGTH", "DaemonGrants"]

#: How much each backend isolates (``auto``: the daemon's choice).
BACKEND_STRENGTH = {"process": 0, "bubblewrap": 1, "gvisor": 2}
_ADAPTER = "adapter:"


class DaemonGrants:
    """:class:`agentd.trust.Grants` for one daemon's configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.private_hosts = [parse_endpoint(e)[0] for e in
                              settings.sandbox.private_endpoints]
        self.configure(settings)
        #: The backend the daemon runs commands in (set once the sandbox has started).
        self.default_backend: Callable[[], str | None] = lambda: None

    def configure(self, settings: Settings) -> None:
        """Take ``member_providers``, ``models``, ``mcp_commands`` and ``mcp_urls`` from
        ``settings`` (at start, and on a configuration reload); the sandbox's grants
        stay as the daemon started (they need a restart)."""
        self.providers = frozenset(settings.member_providers)
        self.endpoints = endpoint_providers(settings.models)
        self.commands = [shlex.split(entry) for entry in settings.mcp_commands]
        self.urls = [urlsplit(entry) for entry in settings.mcp_urls]

    def model(self, spec: str) -> bool:
        text = spec.strip()
        if text.startswith(_ADAPTER):
            return True
        provider = text.partition(":")[0]
        if provider not in PROVIDERS and provider not in self.endpoints:
            return True  # (an unknown provider is refused for what it is: 422)
        return provider in self.providers or provider in self.endpoints

    def backend(self, name: str) -> bool:
        if name == "auto":
            return True
        daemon = self.default_backend() or (
            None if self.settings.sandbox.backend == "auto"
            else self.settings.sandbox.backend)
        if daemon is None:  # (not started: only the strongest is surely not weaker)
            return name == "gvisor"
        return BACKEND_STRENGTH.get(name, -1) >= BACKEND_STRENGTH.get(daemon, 3)

    def limits(self, limits: dict[str, float]) -> bool:
        defaults = self.settings.sandbox.limits
        return all(value <= getattr(defaults, name, 0) for name, value in limits.items())

    def disk(self, name: str, megabytes: int) -> bool:
        daemon = int(getattr(self.settings.sandbox, name))
        return daemon == 0 or megabytes <= daemon

    def network(self, grant: bool | Sequence[str]) -> bool:
        if not self.private_hosts or grant is False:
            return True
        if grant is True:
            return False
        return not any(fnmatch.fnmatchcase(host, pattern.lower())
                       for host in self.private_hosts for pattern in grant)

    def mcp_command(self, argv: Sequence[str]) -> bool:
        return any(prefix and list(argv[:len(prefix)]) == prefix
                   for prefix in self.commands)

    def mcp_url(self, url: str) -> bool:
        wanted = urlsplit(url)
        try:
            port = wanted.port
        except ValueError:
            return False
        for entry in self.urls:
            if (wanted.scheme == entry.scheme and wanted.hostname == entry.hostname
                    and port == entry.port and wanted.path.startswith(entry.path or "/")
                    and not wanted.username and not wanted.password):
                return True
        return False
