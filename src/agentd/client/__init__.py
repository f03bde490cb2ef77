"""A synchronous Python client for the agentd HTTP API.

It speaks HTTP only (httpx, httpx-sse) and imports nothing from the server, the
runtime or the store, so it works against a daemon on this machine or any other::

    from agentd.client import Client, image

    with Client() as client:  # AGENTD_URL, else AGENTD_HOST/AGENTD_PORT (agentd.toml)
        client.create_agent("demo", model="scripted")
        run = client.send("demo", "user:1", "hello")
        print(run["output"])
        run = client.send("demo", "user:1", ["what is this?", image("photo.png")])
        for frame in client.stream("demo", "user:1", "and again"):
            if frame.event == "token":
                print(frame.data["text"], end="", flush=True)

Errors::

    ClientError             anything this client raises on purpose
    ├── APIError            the daemon answered with an error (status, code, message, ...)
    ├── ConnectionFailed    the daemon could not be reached at all
    ├── RunFailed           a run asked for a value ended without one (send_parsed)
    └── WaitTimeout         a run did not end within the time given (it goes on)

The client is composed by area (``_agents``, ``_sessions``, ``_runs``, ``_approvals``,
``_usage``, ``_memory``, ``_export``, ``_skills``, ``_schedules``, ``_webhooks``,
``_secrets``, ``_mcp``, ``_identity``, ``_evals``, ``_admin``) over one transport
(``_base``); only the names below are public.
"""

from __future__ import annotations

from agentd.client._admin import AdminAPI
from agentd.client._agents import AgentsAPI
from agentd.client._approvals import ApprovalsAPI
from agentd.client._errors import (
    APIError,
    ClientError,
    ConnectionFailed,
    RunFailed,
    WaitTimeout,
)
from agentd.client._evals import EvalsAPI
from agentd.client._export import ExportAPI
from agentd.client._heartbeat import HeartbeatAPI
from agentd.client._identity import IdentityAPI
from agentd.client._mcp import MCPAuthAPI
from agentd.client._memory import MemoryAPI
from agentd.client._parts import file, image
from agentd.client._runs import RunsAPI
from agentd.client._schedules import SchedulesAPI
from agentd.client._secrets import SecretsAPI
from agentd.client._skills import SkillsAPI
from agentd.client._sse import SSEEvent
from agentd.client._usage import UsageAPI
from agentd.client._webhooks import WebhooksAPI
from agentd.client.base import DEFAULT_URL as DEFAULT_URL  # kept importable, as before

__all__ = [
    "APIError",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "RunFailed",
    "SSEEvent",
    "WaitTimeout",
    "file",
    "image",
]


class Client(AgentsAPI, RunsAPI, ApprovalsAPI, UsageAPI, MemoryAPI, SkillsAPI,
             SchedulesAPI, HeartbeatAPI, WebhooksAPI, SecretsAPI, MCPAuthAPI, IdentityAPI,
             ExportAPI, EvalsAPI, AdminAPI):
    """Synchronous client for one agentd daemon.

    Args:
        base_url: Daemon URL. Default: ``$AGENTD_URL``; else the local daemon as the
            ``agentd`` command finds it (``AGENTD_HOST`` / ``AGENTD_PORT``, ``.env``,
            ``$AGENTD_HOME/agentd.toml``), normally ``http://127.0.0.1:8721``.
        token: Bearer token. Default: ``$AGENTD_TOKEN``; else, for a daemon on this
            machine, its first configured token or the bootstrap token in its home.
        timeout: Seconds to wait for a reply. ``send(..., wait=True)`` waits for the
            whole run, so raise it for long runs. Streams wait between frames forever
            unless given a timeout of their own.
        transport: An httpx transport to use instead of the network (tests).

    Raises (from every method):
        APIError: The daemon answered with an error.
        ConnectionFailed: The daemon is not reachable.
        ClientError: Another transport failure (a timeout, a dropped connection), or
            (from the constructor) a local configuration that does not load.
    """
