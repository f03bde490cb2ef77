"""The agent settings model (agentd.settings): every bad value refused naming its field,
valid ones read with the documented defaults, and the docs' table kept equal to it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from agentd.config import PRIORITIES, SandboxLimits
from agentd.errors import InvalidInput, InvalidModel, InvalidSettings
from agentd.settings import (
    AgentSettings,
    KernelSettings,
    ModelSettings,
    check_settings,
    settings_problems,
    stored_settings,
)
from agentd.settings._docs import markdown_table

CAPS = SandboxLimits()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _fields(raw: Any, caps: SandboxLimits | None = CAPS) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        check_settings(raw, caps=caps)
    return [e["field"] for e in info.value.details["errors"]]


# Each example of issue 12 (all accepted before), and their kin.
@pytest.mark.parametrize(("raw", "field", "says"), [
    ({"max_step": 3}, "max_step", "did you mean 'max_steps'"),
    ({"loop_gaurd": {"repeats": 3}}, "loop_gaurd", "did you mean 'loop_guard'"),
    ({"on_unknown_outcome": "pray"}, "on_unknown_outcome", "'ask' or 'interrupt'"),
    ({"temperature": "hot"}, "temperature", "number"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"timeout_s": -1}, "timeout_s", "greater than 0"),
    ({"max_steps": 2**64}, "max_steps", "64 bits"),
    ({"budget": {"run": {"tokens": -(2**70)}}}, "budget.run.tokens", "64 bits"),
    ({"weight": json.loads("1e309")}, "weight", "finite"),
    ({"outage_timeout_s": float("nan")}, "outage_timeout_s", "finite"),
    ({"budget": {"day": {"cost_usd": json.loads("1e309")}}}, "budget.day.cost_usd", "finite"),
    ({"sandbox": {"limits": {"wall_s": 3600}}}, "sandbox.limits.wall_s",
     "above the daemon's limit of 60"),
    # No coercion: a boolean is not an integer, a string not a number.
    ({"max_steps": True}, "max_steps", "integer"),
    ({"max_steps": "8"}, "max_steps", "integer"),
    ({"max_tokens": 1.5}, "max_tokens", "integer"),
    ({"sandbox": {"persistent_shell": 1}}, "sandbox.persistent_shell", "boolean"),
    ({"mcp": [{"name": "x", "url": "http://h", "timeout_s": "5"}]}, "mcp[0].timeout_s",
     "number"),
    ({"budget": {"warn_at": ["0.5"]}}, "budget.warn_at[0]", "number"),
    # Ranges on numbers, Literals for choices.
    ({"max_steps": 1001}, "max_steps", "1000"),
    ({"max_retries": 21}, "max_retries", "20"),
    ({"temperature": 2.5}, "temperature", "2"),
    ({"weight": 0}, "weight", "greater than 0"),
    ({"priority": "urgent"}, "priority", "'interactive', 'background' or 'batch'"),
    ({"on_outage": "retry"}, "on_outage", "'wait' or 'fail'"),
    ({"loop_guard": {"repeats": 1}}, "loop_guard.repeats", "2"),
    ({"loop_guard": {"action": "halt"}}, "loop_guard.action", "'warn' or 'stop'"),
    ({"thinking": 10}, "thinking", "token budget"),
    ({"tenant": ""}, "tenant", "at least 1"),
    # Unknown keys, nested too, with a hint where one is close.
    ({"budget": {"dya": {"tokens": 5}}}, "budget.dya", "did you mean 'day'"),
    ({"policy": {"rules": [{"tool": "x", "action": "maybe"}]}}, "policy.rules[0].action",
     "'allow', 'ask' or 'deny'"),
    ({"policy": {"network": 5}}, "policy.network", "boolean"),
    ({"fallbacks": [{"model": "scripted", "settings": {"temprature": 1}}]},
     "fallbacks[0].settings.temprature", "did you mean 'temperature'"),
    ({"fallbacks": [5]}, "fallbacks[0]", "object"),
    ({"fallbacks": ["scripted"] * 9}, "fallbacks", "at most 8"),
    ({"base_url": "ftp://files"}, "base_url", "http"),
    ({"base_url": "http://"}, "base_url", "host"),
    ({"api_key_env": "MY KEY"}, "api_key_env", "environment variable"),
    ({"script": []}, "script", "non-empty list"),
    ({"script": [{"txt": "typo"}]}, "script[0]", "unknown keys"),
    ({"mcp": [{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://i"}]}, "mcp",
     "twice"),
])
def test_a_bad_setting_is_refused_naming_its_field(raw: dict[str, Any], field: str,
                                                   says: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_settings(raw, caps=CAPS)
    [error] = info.value.details["errors"]
    assert error["field"] == f"body.settings.{field}"
    assert says in error["message"]
    assert f"settings.{field}" in info.value.message
    assert info.value.status == 422


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "token", "openai_api_key",
                                 "password", "client_secret", "auth-token", "apikey"])
def test_a_secret_is_refused_pointing_to_api_key_env(key: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_settings({key: "sk-live-123"})
    [error] = info.value.details["errors"]
    assert error["field"] == f"body.settings.{key}"
    assert "api_key_env" in error["message"]
    assert "sk-live-123" not in info.value.message
    # In a fallback's own settings as well.
    assert _fields({"fallbacks": [{"model": "scripted", "settings": {key: "x"}}]}) == [
        f"body.settings.fallbacks[0].settings.{key}"]


def test_keys_that_only_look_like_secrets_are_settings() -> None:
    # max_tokens holds "token" but is a setting; mcp headers may carry a server's key.
    check_settings({"max_tokens": 5, "api_key_env": "MY_KEY", "mcp": [
        {"name": "s", "url": "https://mcp.example", "headers": {"Authorization": "x"}}]})


def test_every_problem_is_reported_at_once() -> None:
    raw = {"max_step": 3, "temperature": "hot", "weight": json.loads("1e309"),
           "api_key": "sk", "sandbox": {"limits": {"memory_mb": 10**6}},
           "loop_guard": {"repeats": 3, "action": "halt"}}
    fields = _fields(raw)
    assert sorted(fields) == sorted(f"body.settings.{f}" for f in (
        "max_step", "temperature", "weight", "api_key", "loop_guard.action"))
    # The cap is checked once the rest is valid (it needs a valid sandbox).
    assert _fields({"sandbox": {"limits": {"memory_mb": 10**6}}}) == [
        "body.settings.sandbox.limits.memory_mb"]


def test_a_cap_is_checked_only_when_given() -> None:
    raw = {"sandbox": {"limits": {"wall_s": 3600}}}
    assert check_settings(raw).sandbox.limits == {"wall_s": 3600}
    assert check_settings(raw, caps=SandboxLimits(wall_s=7200)).sandbox.limits == {
        "wall_s": 3600}
    assert _fields(raw, caps=SandboxLimits(wall_s=60)) == [
        "body.settings.sandbox.limits.wall_s"]


@pytest.mark.parametrize("raw", [[], "x", 5, None])
def test_settings_must_be_an_object(raw: Any) -> None:
    assert _fields(raw) == ["body.settings"]


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"a": deep}
    raw = {"script": [{"tool_calls": [{"name": "t", "arguments": deep}]}]}
    [field] = _fields(raw)
    assert field.startswith("body.settings.script[0].tool_calls[0].arguments")


def test_valid_settings_are_read_with_the_documented_defaults() -> None:
    empty = check_settings({})
    assert (empty.priority, empty.tenant, empty.weight) == ("background", "default", 1.0)
    assert (empty.on_outage, empty.outage_timeout_s, empty.max_continuations) == (
        "wait", 0.0, 2)
    assert (empty.max_steps, empty.max_retries, empty.max_tokens) == (None, None, None)
    assert (empty.loop_guard.repeats, empty.loop_guard.action) == (5, "warn")
    assert empty.on_unknown_outcome == "ask"
    assert empty.budget.empty and empty.mcp == [] and empty.fallbacks == []

    full = check_settings({
        "base_url": "http://127.0.0.1:8000/v1", "api_key_env": "LOCAL_KEY",
        "temperature": 0, "max_tokens": 512, "timeout_s": 30, "max_retries": 0,
        "thinking": "adaptive", "script": [{"text": "hi"}],
        "fallbacks": ["openai:gpt-4.1-mini",
                      {"model": "ollama:llama3", "settings": {"temperature": 0.1}},
                      {"model": "vllm:x"}],
        "priority": "batch", "tenant": "acme", "weight": 2.5, "on_outage": "fail",
        "outage_timeout_s": 60, "max_continuations": 0,
        "max_steps": 8, "loop_guard": {"repeats": 3, "action": "stop"},
        "on_unknown_outcome": "interrupt",
        "budget": {"run": {"tokens": 1000, "steps": 5}, "day": {"cost_usd": 2},
                   "warn_at": [0.5, 0.9]},
        "policy": {"rules": [{"tool": "shell", "action": "ask"}], "network": ["*.x.com"]},
        "sandbox": {"backend": "process", "limits": {"wall_s": 5}, "workspace_max_mb": 10},
        "mcp": [{"name": "fs", "command": ["mcp-fs"]}],
    }, caps=CAPS)
    assert full.temperature == 0.0 and full.timeout_s == 30.0  # an integer is a number
    assert full.loop_guard.action == "stop" and full.budget.run.steps == 5
    assert full.policy.network == ("*.x.com",) and full.sandbox.limits == {"wall_s": 5}
    # A string fallback shares the agent's settings; an object one has its own ({}).
    shared, own, bare = full.fallbacks
    assert shared.shares_settings and shared.model == "openai:gpt-4.1-mini"
    assert not own.shares_settings and own.settings is not None
    assert own.settings.temperature == 0.1
    assert not bare.shares_settings and bare.settings == ModelSettings()


def test_stored_settings_name_every_field_with_invalid_settings() -> None:
    raw = {"max_step": 3, "on_unknown_outcome": "pray"}
    with pytest.raises(InvalidSettings) as info:
        stored_settings(raw)
    assert info.value.code == "invalid_settings"
    assert isinstance(info.value, InvalidModel)  # a run without valid settings fails
    assert sorted(e["field"] for e in info.value.details["errors"]) == [
        "settings.max_step", "settings.on_unknown_outcome"]
    assert "PATCH" in info.value.message
    assert [p.to_api() for p in settings_problems(raw)] == info.value.details["errors"]
    assert settings_problems({"max_steps": 3}) == []
    assert raw == {"max_step": 3, "on_unknown_outcome": "pray"}  # left as it was


def test_model_call_problems_keep_their_code() -> None:
    with pytest.raises(InvalidModel):
        check_settings({"temperature": "hot"})
    with pytest.raises(InvalidInput) as info:
        check_settings({"max_steps": 0})
    assert info.value.code == "invalid_input"


def test_the_provider_slice_reads_only_model_keys() -> None:
    picked = ModelSettings.pick({"temperature": 0.3, "max_steps": 3, "budget": {}})
    assert picked.temperature == 0.3
    with pytest.raises(InvalidModel) as info:
        ModelSettings.pick({"max_tokens": True})
    assert info.value.details["errors"][0]["field"] == "body.settings.max_tokens"


def test_the_kernel_priorities_are_the_configs() -> None:
    literal = KernelSettings.model_fields["priority"].annotation
    assert get_args(literal) == PRIORITIES


def test_the_docs_table_is_the_models() -> None:
    """docs/configuration.md's agent settings table is generated from the model: one
    row per key with its type, range and default (regenerate it with
    ``python -m agentd.settings._docs``)."""
    text = DOCS.read_text()
    table = text.split("<!-- agent-settings-table: generated, do not edit by hand -->\n",
                       1)[1].split("<!-- /agent-settings-table -->", 1)[0]
    assert table == markdown_table(), "regenerate: python -m agentd.settings._docs"
    rows = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
    assert rows == list(AgentSettings.model_fields)
    assert "| `max_steps` | integer (≥ 1, ≤ 1000) | unset |" in table


def test_the_json_schema_documents_every_setting() -> None:
    schema = AgentSettings.model_json_schema()
    assert set(schema["properties"]) == set(AgentSettings.model_fields)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["max_steps"]["anyOf"][0]["maximum"] == 1000


_KEYS = st.sampled_from([*AgentSettings.model_fields, "api_key", "max_step", "repeats",
                         "action", "tokens", "limits", "wall_s", "rules", "tool", "model",
                         "settings", "run", "day", "name", "url", "x"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=30)


@hyp_settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_any_json_gets_a_model_or_named_problems(raw: dict[str, Any]) -> None:
    """Whatever a client sends: valid settings, or problems each naming a field; never
    an exception of another kind (a 500)."""
    problems = settings_problems(raw, caps=CAPS)
    if not problems:
        assert isinstance(check_settings(raw, caps=CAPS), AgentSettings)
        return
    for problem in problems:
        assert problem.message
        assert problem.path == "" or problem.path.split(".")[0].split("[")[0] in raw
    with pytest.raises(InvalidInput):
        check_settings(raw, caps=CAPS)
