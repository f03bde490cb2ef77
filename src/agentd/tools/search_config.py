"""The ``web_search`` area of an agent's settings, and the operator's ``[web_search]``.

The operator declares the search providers (``[web_search.providers.NAME]``: which API
it speaks, where it is, which environment variable holds its key); an agent's settings
only *name* one of them (``settings.web_search.provider``). No agent setting holds a URL
or a variable: nothing an API client writes can make the daemon send a provider's key
to a server of the client's choosing, or make the daemon search through an address the
operator did not write down.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentd.llm.settings import key_variable

__all__ = ["DEFAULT_BASE_URLS", "SearchProviderConfig", "WebSearchConfig",
           "WebSearchSettings"]

_NAME = r"^[a-z0-9][a-z0-9_\-]{0,63}$"

SearchKind = Literal["searxng", "brave", "tavily"]

#: Where each hosted API is when the operator names no ``base_url`` (SearXNG is
#: self-hosted: its ``base_url`` is required).
DEFAULT_BASE_URLS: dict[str, str] = {
    "brave": "https://api.search.brave.com",
    "tavily": "https://api.tavily.com",
}


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchProviderConfig(_Area):
    """One search provider the operator offers (``[web_search.providers.NAME]``)."""

    #: The API it speaks: ``searxng`` (its JSON API), ``brave`` (Brave Search API) or
    #: ``tavily`` (Tavily's search API).
    kind: SearchKind
    #: Where it is: required for ``searxng``; the hosted APIs default to their own.
    base_url: str | None = Field(default=None, min_length=1, max_length=2048)
    #: The variable of the daemon's environment holding its key (never an ``AGENTD_*``
    #: one); required for ``brave`` and ``tavily``, optional for ``searxng``.
    api_key_env: str | None = None
    #: One search's time limit, connection included.
    timeout_s: float = Field(default=20.0, gt=0, le=120, allow_inf_nan=False)
    #: The tenants whose agents may search through it (a paid key is not every
    #: tenant's to spend); None: every tenant.
    tenants: list[str] | None = Field(default=None, max_length=1000)

    def serves(self, tenant: str) -> bool:
        """Whether agents of ``tenant`` may use it."""
        return self.tenants is None or tenant in self.tenants

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        try:
            parts.port  # noqa: B018 (a bad port raises)
        except ValueError:
            raise ValueError("has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must have no query, fragment or user name")
        return value.strip().rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        return key_variable(value)

    @model_validator(mode="after")
    def _complete(self) -> SearchProviderConfig:
        if self.kind == "searxng" and self.base_url is None:
            raise ValueError("a searxng provider needs its base_url (your instance)")
        if self.kind != "searxng" and self.api_key_env is None:
            raise ValueError(f"a {self.kind} provider needs api_key_env (the variable "
                             "holding its key)")
        return self

    @property
    def url(self) -> str:
        """Its base URL (the hosted API's own when none is configured)."""
        return self.base_url or DEFAULT_BASE_URLS[self.kind]


class WebSearchConfig(_Area):
    """The operator's ``[web_search]``: the providers agents may search through."""

    providers: dict[str, SearchProviderConfig] = Field(default_factory=dict,
                                                       max_length=100)
    #: The provider of agents whose settings name none; None: the only one, when
    #: exactly one is configured.
    default: str | None = None

    @field_validator("providers")
    @classmethod
    def _names(cls, value: dict[str, SearchProviderConfig]
               ) -> dict[str, SearchProviderConfig]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r} is not a provider name (lower-case letters, "
                                 "digits, _ and -)")
        return value

    @model_validator(mode="after")
    def _default_known(self) -> WebSearchConfig:
        if self.default is not None and self.default not in self.providers:
            raise ValueError(f"default {self.default!r} is not one of the providers")
        return self

    def choose(self, wanted: str | None) -> str | None:
        """The provider's name for an agent that names ``wanted`` (None: the default),
        or None when there is none to use."""
        if wanted is not None:
            return wanted if wanted in self.providers else None
        if self.default is not None:
            return self.default
        return next(iter(self.providers)) if len(self.providers) == 1 else None


class WebSearchSettings(_Area):
    """An agent's ``settings.web_search``: which of the operator's providers it uses."""

    provider: str | None = Field(
        None, pattern=_NAME,
        description="The name of one of the daemon's `[web_search.providers]` (null: "
                    "its `default`, or its only one). Refused when saved if the daemon "
                    "has no provider of that name; a URL or key cannot be set here.")
