"""Protocol doors: each agent reachable through a protocol its users already speak.

A door translates its protocol's requests into the Runtime facade's public calls
(``send``, ``wait``, ``subscribe``, ``read_events``, ``get_run``, ...) and, for an
adapter-backed agent, the adapter's own hooks, and the answers back; it never touches
the store, so every door has the native API's guarantees (durable sessions, one run at
a time per session, approvals, budgets, auth). A door renders its errors in its
protocol's shape (``agentd.doors.http.add_error_shape``).

=============  =================================================================
``openai``     OpenAI-compatible: ``/v1/models``, ``/v1/chat/completions``,
               ``/v1/responses`` (docs/protocols/openai.md)
``mcp``        an MCP server at ``/mcp``: agents as tools, sessions as resources
               (docs/protocols/mcp.md)
``langgraph``  the Agent Protocol subset ``langgraph-sdk`` uses at ``/langgraph``:
               assistants, threads, runs, the store (docs/protocols/langgraph.md)
``ws``         a WebSocket control channel per session
               (docs/protocols/websocket.md)
``a2a``        each agent an A2A server: card and JSON-RPC at ``/a2a/{agent}``
               (docs/protocols/a2a.md)
``termo``      termo-agent's HTTP routes for one adapter-backed agent
               (``agentd serve --adapter``; docs/termo.md)
=============  =================================================================
"""
