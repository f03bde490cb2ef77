"""What every door shares: the HTTP plumbing between a request and the runtime.

The native REST API (:mod:`agentd.server`) and the protocol doors
(:mod:`agentd.protocols`: OpenAI, LangGraph, MCP, A2A, WebSocket, termo) all stand on
this package and on nothing of each other's:

- :mod:`agentd.doors.http`: bodies read strictly, errors as responses, who the caller
  is (its :class:`~agentd.security.identity.Principal`);
- :mod:`agentd.doors.access`: the runtime a request reaches (:func:`runtime_of`) and
  what its token may see and do there;
- :mod:`agentd.doors.sse`: Server-Sent Events framing of the runtime's event feeds.

It sits above the runtime and below every door (docs/architecture.md).
"""
