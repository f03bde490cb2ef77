"""Agents' checks (``settings.hooks``): how each kind runs (docs/hooks.md).

The run loop decides when a check runs and what its verdict does
(:mod:`agentd.runtime.hooks` declares the interface); :class:`HookRunner` runs one:

- ``python``: a callable the operator allows (``[hooks] allow``), called with the point
  and the facts; a sync one runs in a thread;
- ``webhook``: the facts POSTed as JSON to a host the operator allows (``[hooks]
  allow_hosts``), signed like agentd's outbound webhooks; the verdict is the answer;
- ``command``: argv run in the agent's sandbox, the facts on stdin, the verdict on
  stdout, when its argv starts with one of the operator's ``[hooks] commands``.

(``model`` checks are run by the run loop itself, with the run's models:
``agentd.runtime._hookmodel``.)

Whatever a check answers that is not a verdict is the check failing, decided by its
``fail`` setting. :meth:`HookRunner.check_settings` refuses, when an agent is saved,
a callable or a URL the operator does not allow.
"""

from agentd.hooks.runner import HookRunner

__all__ = ["HookRunner"]
