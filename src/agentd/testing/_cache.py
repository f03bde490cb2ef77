"""The stub LLM server's prompt caches: OpenAI's automatic one, Anthropic's breakpoints.

Each provider's rules as its documentation states them, so that a request that would
miss the cache in production misses here too (see the stub's module docstring for
the rules in short). Tokens are the stub's estimate, a quarter of the bytes of each
part's JSON, rounded up; one estimate serves the prefix lengths and the counts the
stub reports, so the figures add up.

A prefix is named by a running hash (BLAKE2b) over its parts: the hash at a part's
end names everything before it, so two prompts share an entry exactly when they
share the bytes up to there.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["CacheResult", "CacheStats", "PromptCache", "anthropic_cache_problem"]

#: OpenAI: prompts of at least this many tokens are cached, in steps of the next.
_OPENAI_MINIMUM = 1024
_OPENAI_STEP = 128
#: OpenAI's in-memory retention: an entry lives 5-10 minutes after its last use (the
#: short end here: a miss the stub reports may be a hit some of the time in
#: production, never the reverse), at most an hour; ``"24h"`` retention: 24 hours.
_OPENAI_IDLE_S = 300.0
_OPENAI_MAX_S = 3600.0
_OPENAI_24H_S = 86400.0

#: Anthropic: breakpoints per request, blocks looked back from each, TTLs.
_ANTHROPIC_BREAKPOINTS = 4
_ANTHROPIC_LOOKBACK = 20
_ANTHROPIC_TTL_S = {"5m": 300.0, "1h": 3600.0}
#: The minimum cacheable prefix by model (undated name prefix); 1024 for the rest
#: (Sonnet 4.5 and 4, Opus 4.1 and 4, Sonnet 3.7).
_ANTHROPIC_MINIMUM = (
    ("claude-opus-4-6", 4096), ("claude-opus-4-5", 4096), ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048), ("claude-3-haiku", 2048), ("claude-haiku-3", 2048),
)
_ANTHROPIC_DEFAULT_MINIMUM = 1024
#: Blocks that can never be a breakpoint (the automatic one walks back past them).
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})

Provider = Literal["openai", "anthropic"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheResult:
    """What the cache made of one request, in neutral counts (``input_tokens`` is the
    whole prompt, the cached and written tokens part of it)."""

    provider: Provider
    model: str
    input_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: Of ``cache_write_tokens``: written with a 1-hour TTL (Anthropic).
    cache_write_1h_tokens: int = 0
    #: OpenAI's ``prompt_cache_key``, as sent.
    prompt_cache_key: str | None = None
    #: Anthropic's breakpoints in effect (explicit and automatic).
    breakpoints: int = 0


@dataclass(frozen=True, kw_only=True)
class CacheStats:
    """Sums over the requests the cache saw (since start or ``clear()``)."""

    requests: int = 0
    #: Requests that read something from the cache.
    hits: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: ``prompt_cache_key`` values seen (OpenAI), in order of first use.
    prompt_cache_keys: list[str] = field(default_factory=list)

    @property
    def cached_share(self) -> float:
        """The cached tokens' share of all input tokens (0 with none)."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


@dataclass(slots=True)
class _Entry:
    expires: float
    #: The latest time a use may move ``expires`` to.
    limit: float
    #: An Anthropic entry's TTL (its refresh).
    ttl: float


def _tokens(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / 4))


# --- OpenAI -----------------------------------------------------------------------


def _openai_prompt(body: dict[str, Any]) -> bytes:
    """The prompt as the prefix is matched: tools, a structured-output schema, then the
    messages in order. A message's keys are taken in a fixed order (and unset ones
    dropped): the chat format renders its fields in fixed places, so only their values
    count."""
    parts: list[bytes] = []
    if body.get("tools"):
        parts.append(orjson.dumps(body["tools"]))
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        parts.append(orjson.dumps(fmt))
    for message in body.get("messages") or []:
        if isinstance(message, dict) and None in message.values():
            message = {k: v for k, v in message.items() if v is not None}
        parts.append(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
    return b"".join(parts)


def _openai_prefixes(prompt: bytes) -> list[bytes]:
    """The names of the prompt's cacheable prefixes: 1024 tokens, then every 128 more
    that the prompt holds whole."""
    hasher = hashlib.blake2b(digest_size=16)
    names: list[bytes] = []
    start, end = 0, 4 * _OPENAI_MINIMUM
    while end <= len(prompt):
        hasher.update(prompt[start:end])
        names.append(hasher.digest())
        start, end = end, end + 4 * _OPENAI_STEP
    return names


# --- Anthropic --------------------------------------------------------------------


class _Refused(Exception):
    """A request the real API answers with a 400."""


@dataclass(slots=True)
class _Block:
    #: Tokens of the prompt up to and including this block.
    upto: int
    #: The name of that prefix.
    name: bytes
    cacheable: bool
    control: dict[str, Any] | None
    where: str


@dataclass(slots=True)
class _Layout:
    blocks: list[_Block]
    #: Indexes of the breakpoints, in prompt order, with their TTL in seconds.
    breakpoints: list[tuple[int, float]]

    @property
    def tokens(self) -> int:
        return self.blocks[-1].upto if self.blocks else 0


def _control(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise _Refused(f"{where}.cache_control.type: Input should be 'ephemeral'")
    if value.get("ttl", "5m") not in _ANTHROPIC_TTL_S:
        raise _Refused(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return value


def _ttl(control: dict[str, Any]) -> str:
    return str(control.get("ttl", "5m"))


# complexity: one walk over the prompt in the API's order (tools, system, messages),
# each kind of part with its own rule for what it renders and whether it can be cached.
def _anthropic_layout(body: dict[str, Any], *, names: bool = True) -> _Layout:
    """The request's blocks in cache order, each with its prefix's name and length
    (``names=False``: neither, for checking the breakpoints alone), and its
    breakpoints; raises _Refused for what the API refuses."""
    hasher = hashlib.blake2b(digest_size=16)
    blocks: list[_Block] = []
    total = 0

    def add(part: Any, *, cacheable: bool, control: Any, where: str) -> None:
        nonlocal total
        name = b""
        if names:
            raw = orjson.dumps(part)
            hasher.update(len(raw).to_bytes(8, "big"))
            hasher.update(raw)
            total += -(-len(raw) // 4) or 1
            name = hasher.digest()
        blocks.append(_Block(upto=total, name=name, cacheable=cacheable,
                             control=_control(control, where), where=where))

    def bare(block: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in block.items() if k != "cache_control"}

    for i, tool in enumerate(body.get("tools") or []):
        if isinstance(tool, dict):
            add(["tool", bare(tool)], cacheable=True, control=tool.get("cache_control"),
                where=f"tools.{i}")
    system = body.get("system")
    if isinstance(system, str) and system:
        add(["system", {"type": "text", "text": system}], cacheable=True, control=None,
            where="system")
    elif isinstance(system, list):
        for j, block in enumerate(system):
            if isinstance(block, dict):
                add(["system", bare(block)], cacheable=bool(block.get("text")),
                    control=block.get("cache_control"), where=f"system.{j}")
    # What the messages are read under: a change of tool_choice or of the thinking
    # settings invalidates the messages' entries, not the tools' or the system's.
    hasher.update(orjson.dumps({"tool_choice": body.get("tool_choice"),
                                "thinking": body.get("thinking")}))
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if isinstance(content, str):
            add([role, {"type": "text", "text": content}], cacheable=bool(content),
                control=None, where=f"messages.{i}.content")
            continue
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict):
                continue
            where = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind in _UNCACHEABLE and block.get("cache_control") is not None:
                raise _Refused(f"{where}.{kind}.cache_control: Extra inputs are not permitted")
            cacheable = kind not in _UNCACHEABLE and not (kind == "text" and not block.get("text"))
            add([role, bare(block)], cacheable=cacheable, control=block.get("cache_control"),
                where=where)
    return _Layout(blocks=blocks, breakpoints=_breakpoints(blocks, body))


def _breakpoints(blocks: list[_Block], body: dict[str, Any]) -> list[tuple[int, float]]:
    marked = {i: b.control for i, b in enumerate(blocks) if b.control is not None}
    explicit = len(marked)
    automatic = _control(body.get("cache_control"), "cache_control")
    if automatic is not None:
        # The automatic breakpoint goes on the last block that can hold one; none: no
        # caching. It takes one of the four slots unless that block is marked already.
        target = next((i for i in range(len(blocks) - 1, -1, -1) if blocks[i].cacheable),
                      None)
        if target is not None and target in marked:
            if _ttl(marked[target]) != _ttl(automatic):
                raise _Refused(
                    f"cache_control: the automatic cache breakpoint's ttl "
                    f"'{_ttl(automatic)}' differs from the ttl '{_ttl(marked[target])}' "
                    f"of the explicit one on the same block ({blocks[target].where})")
        elif target is not None:
            marked[target] = automatic
        if explicit >= _ANTHROPIC_BREAKPOINTS:
            raise _Refused(f"A maximum of {_ANTHROPIC_BREAKPOINTS} blocks with cache_control"
                           f" may be provided. Found {explicit + 1}.")
    if len(marked) > _ANTHROPIC_BREAKPOINTS:
        raise _Refused(f"A maximum of {_ANTHROPIC_BREAKPOINTS} blocks with cache_control may "
                       f"be provided. Found {len(marked)}.")
    out: list[tuple[int, float]] = []
    seen_short = False
    for i in sorted(marked):
        ttl = _ttl(marked[i])
        if ttl == "1h" and seen_short:
            raise _Refused(f"{blocks[i].where}.cache_control.ttl: a ttl='1h' cache_control "
                           "block must not come after a ttl='5m' cache_control block. Note "
                           "that blocks are processed in the following order: `tools`, "
                           "`system`, `messages`.")
        seen_short = seen_short or ttl == "5m"
        out.append((i, _ANTHROPIC_TTL_S[ttl]))
    return out


def anthropic_cache_problem(body: dict[str, Any]) -> str | None:
    """Why the Messages API would refuse the request's ``cache_control`` (a 400), or None."""
    try:
        _anthropic_layout(body, names=False)
    except _Refused as exc:
        return str(exc)
    return None


def _anthropic_minimum(model: str) -> int:
    for prefix, tokens in _ANTHROPIC_MINIMUM:
        if model.startswith(prefix):
            return tokens
    return _ANTHROPIC_DEFAULT_MINIMUM


# --- the caches -------------------------------------------------------------------


class PromptCache:
    """Both providers' caches, one organisation's, on a clock the owner gives.

    Args:
        clock: Seconds, monotonic (``time.monotonic`` by default); a test moves its own
            to expire entries without sleeping.
        enabled: False: nothing is cached or read, only the prompts are counted.
    """

    def __init__(self, clock: Callable[[], float], *, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self._lock = threading.Lock()
        #: (model, prompt_cache_key) -> prefix name -> entry: OpenAI routes a request by
        #: its prefix and key, so a different key lands where the prefix is not cached.
        self._openai: dict[tuple[str, str | None], dict[bytes, _Entry]] = {}
        self._anthropic: dict[str, dict[bytes, _Entry]] = {}
        self._results: list[CacheResult] = []

    def clear(self) -> None:
        """Forget every entry and every result."""
        with self._lock:
            self._openai.clear()
            self._anthropic.clear()
            self._results.clear()

    @property
    def results(self) -> list[CacheResult]:
        with self._lock:
            return list(self._results)

    def stats(self) -> CacheStats:
        with self._lock:
            results = list(self._results)
        keys = dict.fromkeys(r.prompt_cache_key for r in results
                             if r.prompt_cache_key is not None)
        return CacheStats(
            requests=len(results), hits=sum(1 for r in results if r.cached_tokens),
            input_tokens=sum(r.input_tokens for r in results),
            cached_tokens=sum(r.cached_tokens for r in results),
            cache_write_tokens=sum(r.cache_write_tokens for r in results),
            prompt_cache_keys=list(keys))

    def measure(self, provider: Provider, body: dict[str, Any]) -> CacheResult:
        """The prompt counted, the cache neither read nor written (a faulted call)."""
        model = str(body.get("model", ""))
        if provider == "openai":
            return CacheResult(provider=provider, model=model,
                               input_tokens=_tokens(len(_openai_prompt(body))))
        try:
            tokens = _anthropic_layout(body).tokens
        except _Refused:
            tokens = 0
        return CacheResult(provider=provider, model=model, input_tokens=max(1, tokens))

    def answer(self, provider: Provider, body: dict[str, Any]) -> CacheResult:
        """Read and write the cache as the provider would for an answered ``body``,
        and record the result."""
        result = (self._openai_answer(body) if provider == "openai"
                  else self._anthropic_answer(body))
        with self._lock:
            self._results.append(result)
        return result

    def _openai_answer(self, body: dict[str, Any]) -> CacheResult:
        model = str(body.get("model", ""))
        key = body.get("prompt_cache_key")
        key = key if isinstance(key, str) else None
        prompt = _openai_prompt(body)
        result = CacheResult(provider="openai", model=model, prompt_cache_key=key,
                             input_tokens=_tokens(len(prompt)))
        if not self.enabled:
            return result
        names = _openai_prefixes(prompt)
        long_lived = body.get("prompt_cache_retention") == "24h"
        idle, most = (_OPENAI_24H_S, _OPENAI_24H_S) if long_lived else (_OPENAI_IDLE_S,
                                                                        _OPENAI_MAX_S)
        now = self.clock()
        with self._lock:
            entries = self._openai.setdefault((model, key), {})
            held = 0
            for name in names:
                entry = entries.get(name)
                if entry is None or entry.expires <= now:
                    break
                held += 1
            for name in names:  # this prompt's whole blocks are cached now, or refreshed
                entry = entries.get(name)
                if entry is None or entry.expires <= now:
                    entries[name] = _Entry(expires=now + idle, limit=now + most, ttl=idle)
                else:
                    entry.expires = max(entry.expires, min(now + idle, entry.limit))
        cached = _OPENAI_MINIMUM + _OPENAI_STEP * (held - 1) if held else 0
        return CacheResult(provider="openai", model=model, prompt_cache_key=key,
                           input_tokens=result.input_tokens, cached_tokens=cached)

    def _anthropic_answer(self, body: dict[str, Any]) -> CacheResult:
        model = str(body.get("model", ""))
        layout = _anthropic_layout(body)  # validated already: the wire refused a bad one
        blocks = layout.blocks
        result = CacheResult(provider="anthropic", model=model,
                             input_tokens=max(1, layout.tokens),
                             breakpoints=len(layout.breakpoints))
        if not self.enabled or not layout.breakpoints:
            return result
        minimum = _anthropic_minimum(_undated(model))
        now = self.clock()
        with self._lock:
            entries = self._anthropic.setdefault(model, {})
            hit = -1
            for point, _ in layout.breakpoints:
                # Back from each breakpoint, up to 20 blocks (itself included), for
                # the longest prefix an earlier request wrote.
                for i in range(point, max(-1, point - _ANTHROPIC_LOOKBACK), -1):
                    entry = entries.get(blocks[i].name)
                    if entry is not None and entry.expires > now:
                        hit = max(hit, i)
                        break
            read = blocks[hit].upto if hit >= 0 else 0
            if hit >= 0:
                entry = entries[blocks[hit].name]
                entry.expires = max(entry.expires, now + entry.ttl)
            # Written: each breakpoint's prefix that is long enough to be cached.
            written = [(i, ttl) for i, ttl in layout.breakpoints
                       if blocks[i].upto >= minimum and i > hit]
            for i, ttl in written:
                entry = entries.get(blocks[i].name)
                if entry is None or entry.expires <= now or entry.ttl < ttl:
                    entries[blocks[i].name] = _Entry(expires=now + ttl, limit=math.inf,
                                                     ttl=ttl)
                else:
                    entry.expires = max(entry.expires, now + ttl)
        # Billing positions as documented: A the hit, B the last 1-hour breakpoint
        # after it, C the last breakpoint; reads A, 1-hour writes B - A, 5-minute C - B.
        end = max((blocks[i].upto for i, _ in written), default=read)
        long_end = max((blocks[i].upto for i, ttl in written if ttl > 300.0), default=read)
        return CacheResult(provider="anthropic", model=model, input_tokens=result.input_tokens,
                           cached_tokens=read, cache_write_tokens=max(0, end - read),
                           cache_write_1h_tokens=max(0, long_end - read),
                           breakpoints=result.breakpoints)


def _undated(model: str) -> str:
    """``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``."""
    head, _, tail = model.rpartition("-")
    return head if len(tail) == 8 and tail.isdigit() else model
