"""Protocol doors: other servers' HTTP surfaces served by the daemon.

A door speaks a foreign protocol at the edge and reaches agentd only through the
Runtime facade (``runtime.send``, ``runtime.wait``, ``runtime.read_events``,
``runtime.subscribe``, ...) and, for an adapter-backed agent, the adapter's own hooks;
it never touches the store. ``agentd.protocols.termo`` is termo-agent's.
"""
