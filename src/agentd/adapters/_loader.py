"""Resolving ``MODULE:OBJECT`` names to adapters, only where the operator allows."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

from agentd.errors import InvalidModel

__all__ = ["PREFIX", "is_allowed", "load_object", "make_adapter", "parse_target"]

#: An agent's ``model`` naming an adapter: ``adapter:MODULE:OBJECT``.
PREFIX = "adapter:"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_FIELD = "body.model"


def parse_target(spec: str) -> tuple[str, str]:
    """``adapter:pkg.mod:obj`` (or ``pkg.mod:obj``) as ``("pkg.mod", "obj")``; a
    clear :class:`InvalidModel` naming ``body.model`` for anything else."""
    target = spec.strip()
    if target.startswith(PREFIX):
        target = target[len(PREFIX):]
    module, sep, name = target.partition(":")
    if not sep or not _DOTTED.match(module) or not _DOTTED.match(name):
        raise InvalidModel(
            f"invalid adapter name {spec!r}: use 'adapter:MODULE:OBJECT' with a dotted "
            "module path and an object name (e.g. 'adapter:my_pkg.agent:Adapter')",
            field=_FIELD)
    return module, name


def is_allowed(module: str, name: str, allow: Sequence[str]) -> bool:
    """Whether ``module:name`` matches one of the operator's patterns."""
    target = f"{module}:{name}"
    return any(fnmatch.fnmatchcase(target, pattern) for pattern in allow)


def load_object(spec: str, allow: Sequence[str]) -> Any:
    """The object ``spec`` names, imported if the operator allows it (``[adapters]
    allow`` in the daemon's configuration); else :class:`InvalidModel`."""
    module, name = parse_target(spec)
    if not is_allowed(module, name, allow):
        raise InvalidModel(
            f"adapter {module}:{name} is not allowed on this daemon: the operator lists "
            "the adapters agents may use in [adapters] allow (agentd.toml) or "
            "AGENTD_ADAPTERS", field=_FIELD, details={"adapter": f"{module}:{name}"})
    try:
        loaded = importlib.import_module(module)
    except Exception as exc:  # an allowed module that fails to import: say why
        raise InvalidModel(f"adapter module {module!r} cannot be imported: "
                           f"{type(exc).__name__}: {exc}", field=_FIELD) from None
    obj: Any = loaded
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidModel(f"module {module!r} has no {name!r} (adapter {spec!r})",
                               field=_FIELD) from None
    if not (inspect.isclass(obj) or callable(obj)
            or hasattr(obj, "send_message") or hasattr(obj, "send_message_stream")):
        raise InvalidModel(f"{module}:{name} is not an adapter: an adapter class or "
                           "instance, or a reply function", field=_FIELD)
    return obj


def make_adapter(obj: Any) -> Any:
    """An adapter from what a name resolved to: a class is instantiated (one per
    agent), an adapter instance is used as it is (shared by the agents naming it), a
    function is wrapped by :func:`agentd.adapters.function`."""
    from agentd.adapters.function import FunctionAdapter

    if inspect.isclass(obj):
        return obj()
    if hasattr(obj, "send_message") or hasattr(obj, "send_message_stream"):
        return obj
    return FunctionAdapter(obj)
