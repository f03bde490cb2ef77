"""termo-agent's HTTP surface for one adapter-backed agent (``agentd serve --adapter``).

A termo-agent client (``POST /api/send``, streamed or not, sessions and their
history, config, tools, memory, heartbeat, health, update, restart, the adapter's
extra and public routes, bearer auth) works unchanged against the daemon, with
agentd's durable log, budgets and crash rules behind it. See docs/termo.md.
"""

from agentd.protocols.termo._door import DEFAULT_SESSION, Termo, TermoDoor

__all__ = ["DEFAULT_SESSION", "Termo", "TermoDoor"]
