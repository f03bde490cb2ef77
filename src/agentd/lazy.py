"""Names a package exports but imports on first use (PEP 562).

A package whose ``__init__`` imported all its modules made every import of any one
of them pay for all: ``agentd.tools.mcp`` (which the settings import, and so every
CLI call) pulled in the sandbox, the HTTP client and the shell parser. Such a package
lists what it exports here instead; type checkers still see the names through an
``if TYPE_CHECKING:`` import beside it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["exports"]


def exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: each name of ``where`` is imported
    from its module on first use, then kept in the package."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
