"""The composition root: the one place that builds the daemon.

:class:`Runtime` (:mod:`agentd.assembly.runtime`) opens the store, builds the core's
services (:mod:`agentd.runtime`) and every capability (memory, autonomy, channels,
webhooks, skills, browser, adapters, identity), wires them through the interfaces the
core declares, and is the facade every door reaches the agents through. Adding a
capability is a package of its own and its lines here (docs/contributing.md).
"""

from __future__ import annotations

from agentd.assembly.runtime import Runtime
from agentd.runtime.runs import SendResult

__all__ = ["Runtime", "SendResult"]
