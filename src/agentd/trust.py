"""Settings that are the operator's to give: the mark, and what a member may still use.

Some of an agent's settings reach past the agent: the daemon's **secrets** (the name of
a variable whose value is sent as an API key, the URL it is sent to), the **host** (a
sandbox backend that does not isolate, limits above the defaults, a network grant to a
private endpoint, a command run off the operator's list) or **other tenants** (a channel
bot's variable, a shared endpoint). Each such field is marked on its typed model::

    base_url: Annotated[str | None, OperatorOnly("secrets", "where the API key is sent")]

and one check (:func:`agentd.settings.operator_only`) walks an agent's settings and
refuses every marked field a change sets, unless the token's role allows it
(``operator`` and ``admin``: docs/security.md, "Roles"). Marking the model, not the
routes, means a new door or route that saves settings cannot forget the check, and a
new field is one annotation away from being covered.

A mark may say which values a member may still use (``allows``): a named model endpoint
the operator declared, a sandbox backend at least as strong as the daemon's, a stdio
command on the operator's list. What the operator declared is a :class:`Grants`,
built from the daemon's configuration.

This module sits below everything that defines settings (llm, config, security,
tools, channels, memory), so it imports nothing of agentd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["MODEL_SPEC", "Grants", "OperatorOnly", "Reach"]

Reach = Literal["secrets", "host", "tenants"]


class Grants(Protocol):
    """What the operator lets members use of the operator-only settings."""

    def model(self, spec: str) -> bool:
        """A ``provider:model`` a member may name (a public provider, a named endpoint)."""
        ...

    def backend(self, name: str) -> bool:
        """A sandbox backend at least as strong as the daemon's."""
        ...

    def limits(self, limits: dict[str, float]) -> bool:
        """Sandbox limits none of which is above the daemon's defaults."""
        ...

    def disk(self, name: str, megabytes: int) -> bool:
        """A workspace quota or snapshot budget (``name``: the daemon's setting) at
        most the daemon's."""
        ...

    def network(self, grant: bool | Sequence[str]) -> bool:
        """A network grant that covers none of the operator's private endpoints."""
        ...

    def mcp_command(self, argv: Sequence[str]) -> bool:
        """A stdio MCP command the operator listed (``mcp_commands``)."""
        ...

    def mcp_url(self, url: str) -> bool:
        """An MCP server URL the operator listed (``mcp_urls``)."""
        ...


@dataclass(frozen=True, slots=True)
class OperatorOnly:
    """Marks a settings field that reaches the daemon's secrets, the host or other
    tenants (``reaches``); ``why`` says how, in the words of a 403's message.
    ``allows(grants, value)``: whether a member may still set this value (None: no
    value but the default)."""

    reaches: Reach
    why: str
    allows: Callable[[Grants, Any], bool] | None = None


def _model(grants: Grants, value: Any) -> bool:
    return isinstance(value, str) and grants.model(value)


#: The mark of a ``provider:model`` string: a provider whose server is on the host or
#: the operator's (``vllm``, ``ollama``, ``openai-compatible``...) is the operator's to
#: name; public providers and the operator's named endpoints (``[models.NAME]``) are not.
MODEL_SPEC = OperatorOnly(
    "host", "this provider's server is on the daemon's host or the operator's to choose; "
            "use a public provider or a named endpoint of the daemon's [models]",
    allows=_model)
