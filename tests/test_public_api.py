"""The public surface: sorted ``__all__`` everywhere, every name importable, layers respected."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import agentd

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(agentd.__path__, "agentd.")
    if not m.name.rsplit(".", 1)[-1].startswith("_") or m.name.endswith("__main__")
)


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (the order ruff's RUF022 keeps)."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", [m for m in MODULES if not m.endswith("__main__")])
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert not [n for n in vars(module) if not n.startswith("_")
                    and getattr(vars(module)[n], "__module__", None) == name], (
            f"{name} defines public names but no __all__")
        return
    assert list(exported) == sorted(exported, key=_isort_key), f"{name}.__all__ is not sorted"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names missing {item}"


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_cli_and_client_do_not_load_the_runtime() -> None:
    """The CLI and the client talk HTTP; importing them loads no server-side layer."""
    loaded = _imported_after("import agentd.cli, agentd.client")
    for layer in ("agentd.runtime", "agentd.store", "agentd.server", "agentd.llm"):
        assert layer not in loaded, f"importing the CLI loaded {layer}"


def test_a_cli_call_loads_no_tool_sandbox_or_agent_model() -> None:
    """A CLI call imports the CLI and loads the daemon's configuration (to find the
    daemon and its token): that takes none of the tools, the sandbox's backends, the
    command analyser or the agent's settings model, which cost a CLI call about 0.2 s
    of imports before their packages named their exports lazily (agentd.lazy)."""
    loaded = _imported_after("import agentd.cli.app, agentd.config; "
                             "agentd.config.Settings(_env_file=None)")
    for module in ("agentd.tools.base", "agentd.tools.mcp", "agentd.sandbox.backends",
                   "agentd.security.commands", "agentd.settings._model"):
        assert module not in loaded, f"a CLI call loaded {module}"


def test_lazy_exports_are_the_modules_own() -> None:
    """A package's lazy name is its module's object, and an unknown one is an
    AttributeError (which ``hasattr`` and ``from x import y`` rely on)."""
    import agentd.sandbox
    import agentd.tools
    from agentd.sandbox.workspace import Workspace
    from agentd.tools.builtins import BUILTINS

    assert agentd.tools.BUILTINS is BUILTINS and agentd.sandbox.Workspace is Workspace
    assert not hasattr(agentd.tools, "NOTHING")
    with pytest.raises(ImportError, match="NOTHING"):
        from agentd.sandbox import NOTHING  # type: ignore[attr-defined]  # noqa: F401


def test_importing_agentd_has_no_side_effects(tmp_path) -> None:
    """No I/O at import: importing every module creates nothing under AGENTD_HOME."""
    home = tmp_path / "home"
    code = ("import importlib, pkgutil, agentd\n"
            "for m in pkgutil.walk_packages(agentd.__path__, 'agentd.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"AGENTD_HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert not home.exists()


# -- what users import from ``agentd`` --------------------------------------------------

#: The names ``from agentd import ...`` offers; changing them is an API change.
PUBLIC = {
    "APIError", "AgentdError", "Client", "ClientError", "ConnectionFailed", "SSEEvent",
    "Settings", "Tool", "ToolContext", "WaitTimeout", "__version__", "load_settings",
    "tool",
}


def test_agentd_exports_exactly_what_users_import() -> None:
    assert set(agentd.__all__) == PUBLIC
    assert list(agentd.__all__) == sorted(agentd.__all__, key=_isort_key)
    for name in agentd.__all__:
        assert name == "__version__" or not name.startswith("_"), name
        value = getattr(agentd, name)
        assert value is not None
    from agentd.client import Client
    from agentd.config import Settings
    from agentd.tools import tool
    assert (agentd.Client, agentd.Settings, agentd.tool) == (Client, Settings, tool)
    with pytest.raises(AttributeError):
        agentd.Runtime  # noqa: B018 (the runtime is the daemon's, not a public name)


def test_importing_agentd_loads_no_layer_until_a_name_is_used() -> None:
    loaded = _imported_after("import agentd")
    for layer in ("agentd.client", "agentd.config", "agentd.tools", "agentd.runtime",
                  "agentd.server", "agentd.store", "agentd.llm"):
        assert layer not in loaded, f"import agentd loaded {layer}"
    loaded = _imported_after("from agentd import Client, WaitTimeout")
    for layer in ("agentd.runtime", "agentd.store", "agentd.server", "agentd.llm"):
        assert layer not in loaded, f"from agentd import Client loaded {layer}"


def test_the_python_client_docs_name_every_public_name() -> None:
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "python-client.md").read_text()
    missing = [name for name in agentd.__all__ if f"`{name}" not in docs]
    assert not missing, f"docs/python-client.md does not mention {missing}"
