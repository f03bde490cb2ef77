"""``provider:model`` strings resolved to :class:`Model` objects, with lazy imports.

A provider module is imported only when an agent uses it, so the daemon starts
without loading any SDK it does not need.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from agentd.errors import InvalidModel
from agentd.llm.model import Model

__all__ = ["PROVIDERS", "ProviderInfo", "parse_model_spec", "resolve_model"]


class _Factory(Protocol):
    def __call__(
        self, *, provider: ProviderInfo, model: str, settings: dict[str, Any], agent: str
    ) -> Model: ...


@dataclass(frozen=True, kw_only=True)
class ProviderInfo:
    name: str
    target: str  # "module:factory"
    base_url: str | None = None
    api_key_env: str | None = None
    needs_key: bool = True
    needs_model: bool = True


def _openai_like(name: str, base_url: str | None, key_env: str | None, needs_key: bool = True
                 ) -> ProviderInfo:
    return ProviderInfo(
        name=name,
        target="agentd.llm.providers.openai:create",
        base_url=base_url,
        api_key_env=key_env,
        needs_key=needs_key,
    )


PROVIDERS: dict[str, ProviderInfo] = {
    "scripted": ProviderInfo(
        name="scripted",
        target="agentd.llm.scripted:create",
        needs_key=False,
        needs_model=False,
    ),
    "openai": _openai_like("openai", None, "OPENAI_API_KEY"),
    # The native Messages API through the ``anthropic`` SDK (thinking blocks kept).
    "anthropic": ProviderInfo(
        name="anthropic",
        target="agentd.llm.providers.anthropic:create",
        api_key_env="ANTHROPIC_API_KEY",
    ),
    # Google's OpenAI-compatible endpoint for Gemini models.
    "gemini": _openai_like(
        "gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"
    ),
    # Any server speaking Chat Completions; base_url comes from settings.base_url
    # or AGENTD_OPENAI_COMPATIBLE_BASE_URL.
    "openai-compatible": _openai_like("openai-compatible", None, None, needs_key=False),
    "vllm": _openai_like("vllm", "http://127.0.0.1:8000/v1", None, needs_key=False),
    "ollama": _openai_like("ollama", "http://127.0.0.1:11434/v1", None, needs_key=False),
    "llamacpp": _openai_like("llamacpp", "http://127.0.0.1:8080/v1", None, needs_key=False),
    "deepseek": _openai_like("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "glm": _openai_like("glm", "https://open.bigmodel.cn/api/paas/v4", "ZHIPUAI_API_KEY"),
    "openrouter": _openai_like(
        "openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"
    ),
}


def parse_model_spec(spec: str) -> tuple[ProviderInfo, str]:
    """Split ``provider:model`` and look the provider up; raise InvalidModel if unknown."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidModel("model must be a non-empty 'provider:model' string")
    provider_name, sep, model = spec.strip().partition(":")
    info = PROVIDERS.get(provider_name)
    if info is None:
        known = ", ".join(sorted(PROVIDERS))
        raise InvalidModel(
            f"unknown model provider {provider_name!r} in {spec!r}; known providers: {known}"
        )
    if info.needs_model and not (sep and model.strip()):
        raise InvalidModel(f"model string {spec!r} names no model; use '{provider_name}:MODEL'")
    return info, model.strip()


def resolve_model(spec: str, *, settings: dict[str, Any] | None = None, agent: str = "") -> Model:
    """Build the model for ``spec``; raise :class:`InvalidModel` with a clear reason."""
    info, model = parse_model_spec(spec)
    module_name, _, attr = info.target.partition(":")
    factory: _Factory = getattr(importlib.import_module(module_name), attr)
    instance = factory(provider=info, model=model, settings=dict(settings or {}), agent=agent)
    instance.spec = spec.strip()
    instance.provider = info.name
    return instance
