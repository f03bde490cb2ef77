"""The loader: ``adapter:MODULE:OBJECT`` names parsed, matched against the operator's
patterns, imported, and made into adapters (classes per agent, instances shared,
functions wrapped)."""

from __future__ import annotations

import pytest

from agentd.adapters import (
    FunctionAdapter,
    is_allowed,
    load_object,
    make_adapter,
    parse_target,
)
from agentd.errors import InvalidModel

MOD = "tests.adapters.sample_adapters"


@pytest.mark.parametrize(("spec", "parsed"), [
    ("adapter:pkg.mod:Obj", ("pkg.mod", "Obj")),
    ("  adapter:pkg:obj  ", ("pkg", "obj")),
    ("pkg.mod:Outer.inner", ("pkg.mod", "Outer.inner")),
])
def test_good_names(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_target(spec) == parsed


@pytest.mark.parametrize("spec", [
    "adapter:", "adapter:pkg", "adapter:pkg:", "adapter::obj", "adapter:pkg:obj:more",
    "adapter:1pkg:obj", "adapter:pkg..mod:obj", "adapter:pkg/mod:obj", "adapter:pkg:ob j",
    "adapter:pkg:__import__('os')", "adapter:../etc:passwd",
])
def test_bad_names(spec: str) -> None:
    with pytest.raises(InvalidModel) as raised:
        parse_target(spec)
    assert [e["field"] for e in raised.value.details["errors"]] == ["body.model"]
    assert "invalid adapter name" in raised.value.message


@pytest.mark.parametrize(("pattern", "target", "allowed"), [
    ("pkg.mod:Obj", ("pkg.mod", "Obj"), True),
    ("pkg.mod:Obj", ("pkg.mod", "Other"), False),
    ("pkg.mod:*", ("pkg.mod", "Anything"), True),
    ("pkg.mod:*", ("pkg.mod2", "Anything"), False),
    ("pkg.*", ("pkg.sub.mod", "X"), True),
    ("pkg.*", ("pkgevil", "X"), False),
])
def test_patterns(pattern: str, target: tuple[str, str], allowed: bool) -> None:
    assert is_allowed(*target, [pattern]) is allowed
    assert is_allowed(*target, []) is False  # nothing unless the operator says so


def test_load_refuses_what_is_not_allowed_before_importing_it() -> None:
    import sys

    with pytest.raises(InvalidModel, match="not allowed"):
        load_object("adapter:tests.adapters.never_imported:x", allow=[f"{MOD}:*"])
    assert "tests.adapters.never_imported" not in sys.modules


def test_make_adapter() -> None:
    from tests.adapters import sample_adapters as sample

    cls = load_object(f"adapter:{MOD}:ToolUser", [f"{MOD}:*"])
    one, two = make_adapter(cls), make_adapter(cls)
    assert isinstance(one, sample.ToolUser) and one is not two  # one per agent
    instance = load_object(f"adapter:{MOD}:idempotent_slow", [f"{MOD}:*"])
    assert make_adapter(instance) is instance  # shared
    wrapped = make_adapter(load_object(f"adapter:{MOD}:echo", [f"{MOD}:*"]))
    assert isinstance(wrapped, FunctionAdapter) and wrapped.reply is sample.echo
    with pytest.raises(InvalidModel, match="not an adapter"):
        load_object(f"adapter:{MOD}:NOT_AN_ADAPTER", [f"{MOD}:*"])


async def test_function_adapter_outside_agentd() -> None:
    from tests.adapters import sample_adapters as sample

    adapter = FunctionAdapter(sample.words)
    assert await adapter.send_message("a b", "k") == "you said a b "
    # Without agentd's session, it keeps this process's turns itself.
    assert await adapter.get_history("k") == [
        {"role": "user", "content": "a b"}, {"role": "assistant", "content": "you said a b "}]
    echo = FunctionAdapter(sample.echo)
    await echo.send_message("1", "s")
    assert await echo.send_message("2", "s") == "echo 2 after 2 turns"
