"""The version of agentd (one place: the package's ``__version__``, the daemon's
/health and /v1/kernel, the doors' server names and User-Agent headers).

A module of its own so that reading it loads nothing else: ``agentd/__init__`` names
the client, the configuration and the tools for users, and a layer below them must not
import those to learn a version string (docs/architecture.md)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
