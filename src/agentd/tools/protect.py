"""Protected paths: what a policy ``deny`` rule with ``paths`` keeps from every tool.

A rule that denies ``read_file`` on ``.env`` means "the agent must not see .env",
whichever tool it would use: grep, glob and list_files skip such files (and do not
name them), read_file / edit_file / write_file(s) refuse them, and git neither shows
nor touches them. The patterns come from :meth:`agentd.security.policy.Policy.
protected_paths` and reach tools as a tuple of strings in ``ToolContext.protected``.

Matching is deliberately wider than a policy rule's: the path is normalised first
(``./.env`` and ``sub/../.env`` are ``.env``), case is ignored (a case-insensitive file
system, or a checkout elsewhere, makes ``.ENV`` the same file), a pattern protects what
is below a matching folder (``secrets`` protects ``secrets/key``) and ``**/x`` matches
``x`` at the top too. A pattern's ``*`` crosses ``/``, as in policy rules.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable

from agentd.errors import ToolError

__all__ = ["check", "is_protected", "normalise", "normalise_patterns"]


def normalise(path: str) -> str:
    """``path`` relative to the workspace root, lower-cased, without ``.``/``..``
    (a path climbing out is returned as it is: the workspace refuses it anyway)."""
    norm = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
    return "" if norm == "." else norm.lower()


def normalise_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for pattern in patterns:
        norm = normalise(pattern)
        if norm and norm not in out:
            out.append(norm)
            if norm.startswith("**/") and norm[3:] and norm[3:] not in out:
                out.append(norm[3:])
    return tuple(out)


def is_protected(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` (relative to the workspace) or a folder it is in matches."""
    if not patterns:
        return False
    norm = normalise(path)
    if not norm:
        return False
    pats = normalise_patterns(patterns)
    parts = norm.split("/")
    candidates = ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in pats)


def check(path: str, patterns: tuple[str, ...], what: str = "this tool") -> None:
    """Raise ``path_protected`` if ``path`` is protected."""
    if is_protected(path, patterns):
        raise ToolError(f"{path!r} is protected by this agent's policy (a deny rule "
                        f"with paths): {what} does not read or change it",
                        code="path_protected")
