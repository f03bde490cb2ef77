"""``provider:model`` strings resolved to models, with providers imported lazily."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentd.errors import InvalidModel
from agentd.llm.registry import PROVIDERS, parse_model_spec, resolve_model
from agentd.llm.scripted import ScriptedModel


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(InvalidModel) as info:
        resolve_model("antrhopic:claude")
    message = info.value.message
    assert "'antrhopic'" in message
    for name in PROVIDERS:
        assert name in message
    assert (info.value.code, info.value.status) == ("invalid_model", 422)


@pytest.mark.parametrize("spec", ["openai", "openai:", "openai:   ", "vllm"])
def test_missing_model_name_is_invalid(spec: str) -> None:
    with pytest.raises(InvalidModel, match="names no model"):
        resolve_model(spec)


@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_spec_is_invalid(spec: str) -> None:
    with pytest.raises(InvalidModel, match="non-empty"):
        resolve_model(spec)


@pytest.mark.parametrize("spec", ["scripted", "scripted:", "scripted:anything", "  scripted  "])
def test_scripted_needs_no_model_name(spec: str) -> None:
    model = resolve_model(spec)
    assert isinstance(model, ScriptedModel)
    assert model.spec == spec.strip()


def test_parse_splits_on_the_first_colon_only() -> None:
    info, model = parse_model_spec("ollama:llama3.2:3b")
    assert (info.name, model) == ("ollama", "llama3.2:3b")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_resolving_scripted_does_not_import_openai() -> None:
    result = _run(
        """
        import sys
        from agentd.llm.registry import resolve_model
        resolve_model("scripted")
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("openai", "anthropic"))
        print(loaded, "agentd.llm.providers.openai" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False"


def test_resolving_anthropic_imports_its_sdk_and_not_openais() -> None:
    result = _run(
        """
        import os, sys
        from agentd.llm.registry import resolve_model
        os.environ["ANTHROPIC_API_KEY"] = "k"
        resolve_model("anthropic:claude-test-model")
        print("anthropic" in sys.modules, "openai" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True False"


def test_resolving_an_openai_provider_imports_it_then() -> None:
    # The counterpart of the check above, so that check is known to be able to fail.
    result = _run(
        """
        import sys
        from agentd.llm.registry import resolve_model
        assert "openai" not in sys.modules
        resolve_model("vllm:some-model")
        print("openai" in sys.modules, "agentd.llm.providers.openai" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True"
