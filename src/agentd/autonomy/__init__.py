"""Agents that act on their own: services that start runs without a client.

=================  ===========================================================
``schedules``      cron / interval / one-shot fires, each exactly once
``heartbeat``      a periodic autonomous turn from a heartbeat document
``proactive``      messages an agent posts into its own other sessions
``subtasks``       child runs a run starts and waits on
``calls``          one agent asking another and getting its reply
=================  ===========================================================

Each is a service built by :class:`agentd.assembly.Runtime` from the parts it needs
(the store, ``Runs.send`` with an ``origin`` and an ``also`` claim committed with the
run, the housekeeper), with its agent tools reading it from ``ToolContext.services``.
Import the modules themselves (``agentd.autonomy.schedules``); this package exports
nothing of its own.
"""

__all__: list[str] = []
