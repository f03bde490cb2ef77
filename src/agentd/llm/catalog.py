"""The model catalog: context windows, output limits and prices per ``provider:model``.

The figures are data (``catalog.toml`` beside this module), not code: a deployment
corrects or extends them with ``$AGENTD_HOME/models.toml`` of the same shape, whose
entries replace the packaged ones. The runtime uses the catalog to refuse settings and
requests that cannot fit a model (``max_tokens`` above its output limit, a prompt
above its context window) and to price each run's usage (``usage.cost_usd``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from agentd.errors import InvalidInput
from agentd.llm.messages import ModelRequest, Usage

__all__ = ["Catalog", "ModelInfo", "estimate_parts", "estimate_sum", "estimate_tokens"]

_FIELDS = ("context_window", "max_output_tokens", "input", "output", "cached_input",
           "cache_write", "structured_output", "vision")
#: Prices a model may leave out: priced at ``input`` then.
_OPTIONAL_PRICES = ("cached_input", "cache_write")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model's limits and list prices (USD per million tokens)."""

    spec: str
    context_window: int
    max_output_tokens: int
    input: float
    output: float
    #: Input tokens read from the provider's prompt cache (None: the input price).
    cached_input: float | None = None
    #: Input tokens written to the provider's prompt cache, where it charges for that
    #: (Anthropic: 1.25 times input for a 5-minute entry); None: the input price.
    cache_write: float | None = None
    #: It takes a JSON Schema for its answer natively (:mod:`agentd.llm.output`).
    structured_output: bool = False
    #: It takes images and PDFs (True), or not (False: a message carrying one is
    #: refused); None: the catalog does not say (they are sent, and the provider
    #: decides).
    vision: bool | None = None

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs at list price, in USD. ``usage.input_tokens`` includes
        the cached and the cache-written ones, which are priced at ``cached_input``
        and ``cache_write``."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        cached_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        return ((usage.input_tokens - cached - written) * self.input + cached * cached_price
                + written * write_price + usage.output_tokens * self.output) / 1_000_000


class Catalog:
    """Models by ``provider:model``; a dated name (``...-20250929``) finds its base."""

    def __init__(self, models: dict[str, ModelInfo], as_of: str | None = None) -> None:
        self.models = models
        self.as_of = as_of

    @classmethod
    def load(cls, override: Path | None = None) -> Catalog:
        """The packaged catalog, with ``override`` (if it exists) laid over it."""
        text = resources.files("agentd.llm").joinpath("catalog.toml").read_text("utf-8")
        data = tomllib.loads(text)
        models = _models(data, "the packaged catalog")
        as_of = data.get("as_of")
        if override is not None and override.is_file():
            try:
                extra = tomllib.loads(override.read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidInput(f"{override}: not a readable TOML file: {exc}") from None
            models.update(_models(extra, str(override)))
            as_of = extra.get("as_of", as_of)
        return cls(models, str(as_of) if as_of is not None else None)

    def get(self, spec: str) -> ModelInfo | None:
        info = self.models.get(spec)
        if info is None:
            base = _undated(spec)
            info = self.models.get(base) if base != spec else None
        return info


def _models(data: dict[str, Any], source: str) -> dict[str, ModelInfo]:
    table = data.get("models", {})
    if not isinstance(table, dict):
        raise InvalidInput(f"{source}: 'models' must be a table of models")
    models: dict[str, ModelInfo] = {}
    for spec, entry in table.items():
        where = f"{source}: models.{spec!r}"
        if ":" not in spec or not isinstance(entry, dict):
            raise InvalidInput(f"{where}: use [models.\"provider:model\"] tables")
        unknown = set(entry) - set(_FIELDS)
        if unknown:
            raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}; "
                               f"known: {', '.join(_FIELDS)}")
        for field in ("context_window", "max_output_tokens"):
            value = entry.get(field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(f"{where}.{field} must be a whole number >= 1")
        for field in ("input", "output", *_OPTIONAL_PRICES):
            value = entry.get(field)
            if value is None and field in _OPTIONAL_PRICES:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"{where}.{field} must be a price >= 0 (USD per "
                                   "million tokens)")
        native = entry.get("structured_output", False)
        if not isinstance(native, bool):
            raise InvalidInput(f"{where}.structured_output must be true or false")
        vision = entry.get("vision")
        if vision is not None and not isinstance(vision, bool):
            raise InvalidInput(f"{where}.vision must be true or false")
        models[spec] = ModelInfo(
            spec=spec, context_window=entry["context_window"],
            max_output_tokens=entry["max_output_tokens"], input=float(entry["input"]),
            output=float(entry["output"]),
            cached_input=_price(entry, "cached_input"),
            cache_write=_price(entry, "cache_write"), structured_output=native,
            vision=vision)
    return models


def _price(entry: dict[str, Any], field: str) -> float | None:
    value = entry.get(field)
    return None if value is None else float(value)


def _undated(spec: str) -> str:
    """``anthropic:claude-sonnet-4-5-20250929`` -> ``anthropic:claude-sonnet-4-5``;
    ``openai:gpt-4.1-2025-04-14`` -> ``openai:gpt-4.1``."""
    parts = spec.split("-")
    if len(parts) > 1 and len(parts[-1]) == 8 and parts[-1].isdigit():
        return "-".join(parts[:-1])
    if (len(parts) > 3 and len(parts[-3]) == 4 and parts[-3].isdigit()
            and all(len(p) == 2 and p.isdigit() for p in parts[-2:])):
        return "-".join(parts[:-3])
    return spec


def estimate_tokens(request: ModelRequest) -> int:
    """A rough estimate of a request's prompt tokens (about 4 characters a token in
    English; JSON and code tokenise denser, so this leans low for them)."""
    fixed, _, total = estimate_sum(request)
    return fixed + total


#: Tokens the chat format adds per message (role and delimiters) and per request (the
#: reply's priming): 3 and 3 in OpenAI's published counting for its chat models; a
#: little more per message here, for the other providers' formats.
_PER_MESSAGE = 4
_PER_REQUEST = 3


def estimate_parts(request: ModelRequest) -> tuple[int, list[int]]:
    """The estimate split into what every call carries (system prompt, tools) and each
    message's share, so that dropping messages needs no new estimate."""
    fixed, sizes, _ = estimate_sum(request)
    return fixed, sizes


def estimate_sum(request: ModelRequest) -> tuple[int, list[int], int]:
    """:func:`estimate_parts` and the sum of the messages' shares (with the session's
    memo, kept as they change rather than summed again: a long conversation's call
    does not pay a pass over it)."""
    fixed = len(request.system or "") + sum(
        len(orjson.dumps(spec, default=str)) for spec in request.tools)
    if request.output is not None:
        # The output schema goes with the call, natively or in the system prompt.
        fixed += len(orjson.dumps(request.output.schema))
    fixed_tokens = fixed // 4 + _PER_REQUEST + (_PER_MESSAGE if request.system else 0)
    if request.memo is None:
        sizes = [_message_tokens(m) for m in request.messages]
        return fixed_tokens, sizes, sum(sizes)
    # The session's memo: only the messages the last call did not have are measured.
    # (Its own list: read it, do not keep or change it.)
    memo = request.memo.per_message("tokens", _message_tokens)
    sizes = memo.values(request.messages, request.provenance)
    return fixed_tokens, sizes, int(memo.total)


#: An image's share of a prompt when its size is not known, the most one counts for (the
#: providers scale a large image down: Anthropic's about width x height / 750 tokens up
#: to about 1,600; OpenAI's 85 + 170 per 512-pixel tile of the scaled image), and a
#: PDF page's (its text and its picture).
_IMAGE_TOKENS, _MAX_IMAGE_TOKENS, _PAGE_TOKENS = 1_000, 1_600, 1_500


def _message_tokens(message: object) -> int:
    parts = getattr(message, "parts", None)
    if parts:
        return _parts_tokens(message, parts)
    return len(orjson.dumps(message, default=str)) // 4 + _PER_MESSAGE


def _parts_tokens(message: object, parts: list[Any]) -> int:
    """A message with images or files: its text as any message's, each image or PDF
    by its pixels or pages, a text file by its size."""
    text = getattr(message, "content", "") or ""
    tokens = len(text) // 4 + _PER_MESSAGE
    for part in parts:
        if getattr(part, "kind", "text") == "text":
            continue  # (in ``content`` already)
        if part.kind == "image":
            pixels = (part.width or 0) * (part.height or 0)
            tokens += min(pixels // 750, _MAX_IMAGE_TOKENS) if pixels else _IMAGE_TOKENS
        elif part.media_type == "application/pdf":
            tokens += (part.pages or 1) * _PAGE_TOKENS
        else:
            tokens += part.size // 4
    return tokens
