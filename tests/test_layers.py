"""The rules of docs/architecture.md that import-linter's layers contract does not
cover, checked over the source's syntax trees:

- a module named ``_x.py`` is private to its package: no other package imports it;
- a door (``server``, ``protocols``, ``doors``, ``web``) reaches agents through the
  ``Runtime`` facade: its methods and the public services it names, never the store,
  a transaction, or a core service (``runtime.agents``, ``.runs``, ``.supervisor``...).

(The layers themselves: ``lint-imports``, run by scripts/test.sh.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "agentd"
DOORS = ("server", "protocols", "doors", "web")
#: The core's services and the machinery behind the facade: a door that used one
#: would skip what the facade keeps (scope checks, leases, locks, transactions).
CORE = frozenset({
    "store", "agents", "runs", "sessions", "supervisor", "bus", "kernel", "lifecycle",
    "leases", "executors", "histories", "runlog", "follower", "housekeeper", "lease",
    "workers", "mcp", "guard", "memory", "entries", "compactor", "consolidator",
    "sandboxes", "workspaces", "subtasks", "adapters", "proactive", "browsers", "catalog",
})
#: The store's handles (its record types and constants are data, and may be read).
STORE_HANDLES = frozenset({"Store", "Tx", "Engine", "Accepted", "open_store"})


def _modules() -> Iterator[tuple[str, str, ast.Module]]:
    """(module name, its package, its tree) of every module of agentd."""
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = parts[1] if len(parts) > 2 else ""
        yield name, package, ast.parse(path.read_text(), str(path))


def _imported(node: ast.AST) -> list[str]:
    """The agentd modules (or package.names) an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("agentd.")]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
            and node.module.startswith("agentd."):
        return [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return []


def test_private_modules_stay_in_their_package() -> None:
    found = []
    for name, package, tree in _modules():
        for node in ast.walk(tree):
            for target in _imported(node):
                parts = target.split(".")
                private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
                if private and len(parts) > 2 and parts[1] != package:
                    found.append(f"{name} imports {target}")
    assert not found, ("a module another package uses is public (no leading "
                       "underscore):\n" + "\n".join(sorted(set(found))))


def _is_runtime(node: ast.expr) -> bool:
    """``runtime``, ``rt``, ``runtime_of(...)`` or ``<x>.runtime``."""
    return ((isinstance(node, ast.Name) and node.id in ("runtime", "rt"))
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "runtime_of")
            or (isinstance(node, ast.Attribute) and node.attr == "runtime"))


def test_doors_reach_agents_through_the_facade() -> None:
    found = []
    for name, package, tree in _modules():
        if package not in DOORS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in CORE \
                    and _is_runtime(node.value):
                found.append(f"{name}:{node.lineno} uses runtime.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module \
                    and node.module.startswith("agentd.store"):
                handles = {a.name for a in node.names} & STORE_HANDLES
                if handles:
                    found.append(f"{name}:{node.lineno} imports {sorted(handles)} "
                                 "of the store")
    assert not found, "\n".join(found)


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """Both checks above can fail: each recognises the forms it forbids."""
    tree = ast.parse("from agentd.store._sqlite import x\nruntime.store.get_agent('a')\n"
                     "runtime_of(request).agents.get('a')\nfrom agentd.store import Tx\n")
    imports = [t for node in ast.walk(tree) for t in _imported(node)]
    assert "agentd.store._sqlite" in imports
    uses = [n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr in CORE and _is_runtime(n.value)]
    assert uses == ["store", "agents"] or sorted(uses) == ["agents", "store"]
