"""Browser tools (the ``browser`` extra): Chromium, driven by Playwright, under the
agent's network grant (:mod:`agentd.browser._service` says how it is confined).

Off unless the operator sets ``[browser] enabled``; then the runtime registers
:data:`BROWSER_TOOLS` and the :class:`Browsers` service. Playwright is imported only
when a browser starts.
"""

from __future__ import annotations

from agentd.browser._service import Browsers, problem
from agentd.browser.tools import (
    BROWSER_TOOLS,
    browser_act,
    browser_observe,
    browser_open,
    browser_screenshot,
)

__all__ = ["BROWSER_TOOLS", "Browsers", "browser_act", "browser_observe", "browser_open",
           "browser_screenshot", "problem"]
