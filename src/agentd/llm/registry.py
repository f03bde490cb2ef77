"""``provider:model`` strings resolved to :class:`Model` objects, with lazy imports.

A provider module is imported only when an agent uses it, so the daemon starts
without loading any SDK it does not need.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentd.errors import InvalidModel
from agentd.llm.settings import key_variable

# (Model only in annotations: the daemon's configuration, which every CLI call loads,
# imports this module's table of providers, and needs none of the message models.)
if TYPE_CHECKING:
    from agentd.llm.model import Model

__all__ = ["PROVIDERS", "PUBLIC_PROVIDERS", "ModelEndpoint", "ProviderInfo",
           "endpoint_providers", "parse_model_spec", "resolve_model"]


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
    #: A named endpoint of the operator's (``[models.NAME]``): its base URL and key
    #: variable are its own, whatever an agent's settings say.
    fixed: bool = False
    #: A named endpoint whose key is a named secret of the agent using it
    #: (``api_key_secret``), and that key once resolved for a run (``key``).
    key_secret: str | None = None
    key: str | None = field(default=None, repr=False)


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


#: Providers whose servers are public services: a member token may name them (their
#: keys are the operator's variables, sent to the provider's own address). The rest
#: talk to a server on the daemon's host or one the operator chooses.
PUBLIC_PROVIDERS = ("scripted", "openai", "anthropic", "gemini", "deepseek", "glm",
                    "openrouter")
_ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")


class ModelEndpoint(BaseModel):
    """A named model endpoint (``[models.NAME]`` in agentd.toml): a server the operator
    provides, which agents name as a provider (``NAME:MODEL``) without ever naming its
    URL or key variable, so that tokens below ``operator`` can use it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The wire format it speaks: ``openai-compatible`` (Chat Completions) or any
    #: provider of the registry (``anthropic``, ``openai``...).
    provider: str = "openai-compatible"
    base_url: str | None = Field(default=None, min_length=1, max_length=2048)
    #: The variable holding its key (never an ``AGENTD_*`` one); none: no key.
    api_key_env: str | None = None
    #: Or: the name of a secret (``agentd secret set``) each agent using it holds, its
    #: own or its tenant's, resolved as its runs start: one endpoint, a key per tenant.
    api_key_secret: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    description: str = Field(default="", max_length=500)

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in PROVIDERS or value == "scripted":
            raise ValueError(f"unknown provider {value!r}; one of "
                             + ", ".join(sorted(set(PROVIDERS) - {"scripted"})))
        return value

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None:
            scheme, sep, rest = value.strip().partition("://")
            if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> ModelEndpoint:
        if self.api_key_env is not None and self.api_key_secret is not None:
            raise ValueError("give api_key_env or api_key_secret, not both")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        return key_variable(value)


def endpoint_providers(endpoints: Mapping[str, ModelEndpoint]) -> dict[str, ProviderInfo]:
    """The operator's named endpoints as providers (checked: a name that is a built-in
    provider's, or badly formed, is a ValueError)."""
    found: dict[str, ProviderInfo] = {}
    for name, endpoint in endpoints.items():
        if not _ENDPOINT_NAME.match(name):
            raise ValueError(f"models.{name}: a named endpoint's name is 1-32 lower-case "
                             "letters, digits, '-' or '_', starting with a letter")
        if name in PROVIDERS or name == "adapter":
            raise ValueError(f"models.{name}: {name!r} is a built-in provider's name")
        base = PROVIDERS[endpoint.provider]
        if endpoint.base_url is None and base.base_url is None and (
                endpoint.provider == "openai-compatible"):
            raise ValueError(f"models.{name}: an openai-compatible endpoint needs base_url")
        found[name] = ProviderInfo(
            name=name, target=base.target, base_url=endpoint.base_url or base.base_url,
            api_key_env=endpoint.api_key_env,
            needs_key=endpoint.api_key_env is not None or endpoint.api_key_secret is not None,
            fixed=True, key_secret=endpoint.api_key_secret)
    return found


def parse_model_spec(spec: str, endpoints: Mapping[str, ProviderInfo] | None = None
                     ) -> tuple[ProviderInfo, str]:
    """Split ``provider:model`` and look the provider up (a built-in one, or one of the
    operator's named ``endpoints``); raise InvalidModel if unknown."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidModel("model must be a non-empty 'provider:model' string")
    provider_name, sep, model = spec.strip().partition(":")
    info = PROVIDERS.get(provider_name) or (endpoints or {}).get(provider_name)
    if info is None:
        known = ", ".join(sorted([*PROVIDERS, *(endpoints or {})]))
        raise InvalidModel(
            f"unknown model provider {provider_name!r} in {spec!r}; known providers "
            f"(and the daemon's named endpoints): {known}"
        )
    if info.needs_model and not (sep and model.strip()):
        raise InvalidModel(f"model string {spec!r} names no model; use '{provider_name}:MODEL'")
    return info, model.strip()


def resolve_model(spec: str, *, settings: dict[str, Any] | None = None, agent: str = "",
                  endpoints: Mapping[str, ProviderInfo] | None = None) -> Model:
    """Build the model for ``spec``; raise :class:`InvalidModel` with a clear reason.
    ``endpoints``: the operator's named endpoints (:func:`endpoint_providers`)."""
    info, model = parse_model_spec(spec, endpoints)
    if info.fixed:
        # A named endpoint's URL and key are the operator's: an agent's own are ignored.
        settings = {k: v for k, v in (settings or {}).items()
                    if k not in ("base_url", "api_key_env")}
    module_name, _, attr = info.target.partition(":")
    factory: _Factory = getattr(importlib.import_module(module_name), attr)
    instance = factory(provider=info, model=model, settings=dict(settings or {}), agent=agent)
    instance.spec = spec.strip()
    instance.provider = info.name
    return instance
