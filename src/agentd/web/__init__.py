"""The web console: static pages served by the daemon at ``/ui``.

Every asset ships inside this package (``assets/``): no CDN, no network at run time, no
build step. The pages hold no data of their own: they sign in with a bearer token kept
in the browser's ``sessionStorage`` and read everything from the public API with that
token's rights, so the console can do nothing the API would not allow.

The assets are public paths (they carry no data), served with a strict Content Security
Policy: scripts and styles only from the daemon itself, no inline script, no frames.
Whatever a model or a tool wrote reaches the page as text (the scripts never assign
HTML), so a hostile reply cannot run in an operator's browser.
"""

from __future__ import annotations

from agentd.web._serve import ASSETS, PREFIX, PUBLIC_PATHS, SECURITY_HEADERS, install

__all__ = ["ASSETS", "PREFIX", "PUBLIC_PATHS", "SECURITY_HEADERS", "install"]
