"""What a session's model calls compute from its messages, kept from one call to the next.

A session's next model call carries the messages of its last one plus a few new ones:
the conversation only grows at its end (compaction and trimming, which change its
start, are rare). Whatever is derived from each message (its wire encoding for a
provider, its token estimate) is computed once and reused while the messages it was
computed from are still the request's first ones, so a call costs the same at the
10th turn as at the 3,000th (docs/design-notes.md, "A turn's cost does not grow with
the conversation").

The runtime keeps one :class:`PrefixMemo` per session (with the session's history,
:mod:`agentd.runtime.history`) and hands it over in :attr:`ModelRequest.memo
<agentd.llm.messages.ModelRequest.memo>`; providers and the catalog's estimate ask it
for a :class:`PerMessage` of their own by name. Without a memo (a one-off request:
a summary, a test) everything is computed afresh, with the same result.

Knowing which messages a call shares with the last one must not cost a pass over the
conversation either (at 3,000 turns, comparing and copying the message lists was a
sixth of a turn's instructions). The request says where its messages come from
(:attr:`ModelRequest.provenance <agentd.llm.messages.ModelRequest.provenance>`):
their first ``count`` are the history's own messages from position ``base`` on, in a
list it only ever appends to until its ``generation`` changes (a compaction rewrites
it, :meth:`PrefixMemo.rewritten`). Two calls of the same generation then share, by
construction, every message both took from the history at the same positions: no
comparison is needed. A request without that provenance, or of another generation,
is compared message by message as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Joined", "PerMessage", "PrefixMemo", "Provenance", "shared_prefix", "trimmed"]

T = TypeVar("T")

#: How far into the last call's messages a request's first message is looked for
#: (by identity): a window trimmed of its oldest turns starts a little later.
_TRIM_LOOKAHEAD = 256
#: How many parts after the joined ones :class:`Joined` lets gather before it joins
#: them too (each time, one copy of the whole: a long session's is a megabyte).
_FOLD = 64


def shared_prefix(old: Sequence[Any], new: Sequence[Any]) -> int:
    """How many first items ``new`` shares with ``old`` (each the same object or equal).

    The common case, ``new`` extending ``old``, is one list comparison, which runs in
    C and takes the identity shortcut for every item."""
    n = min(len(old), len(new))
    if n == 0:
        return 0
    if old[:n] == new[:n]:
        return n
    for i in range(n):
        if old[i] is not new[i] and old[i] != new[i]:
            return i
    return n  # (unreachable: the lists differed)


#: Where a request's messages come from: (generation, base, count): its first
#: ``count`` messages are the history's own from position ``base`` on.
Provenance = tuple[int, int, int]


class PerMessage(Generic[T]):
    """A value per message, computed once while the messages stay the conversation's.

    :meth:`values` answers the values of a request's messages, computing only those of
    messages the last call did not have; the answer is this object's own list, valid
    until the next call (join or sum it at once). :attr:`total` is their sum when the
    values are numbers (kept as they change, not summed again)."""

    __slots__ = ("_fn", "_from", "_keys", "_owner", "_values", "dropped", "kept", "total")

    def __init__(self, fn: Callable[[Any], T], owner: PrefixMemo | None = None) -> None:
        self._fn = fn
        self._owner = owner
        self._keys: Sequence[Any] = ()
        self._values: list[T] = []
        #: The provenance of the last call's messages (None: unknown).
        self._from: Provenance | None = None
        #: Of the last call's messages: how many the last :meth:`values` found left
        #: out at the start, and how many it reused after them.
        self.dropped = 0
        self.kept = 0
        #: The sum of :meth:`values` (numbers only; 0 for other values).
        self.total: Any = 0

    def values(self, messages: Sequence[Any], provenance: Provenance | None = None
               ) -> list[T]:
        """The values of ``messages``; ``provenance``: where they come from (the
        request's), if known."""
        values = self._values
        owner = self._owner
        now = (provenance if provenance is not None and owner is not None
               and provenance[0] == owner.generation else None)
        start, shared = self._shared(messages, now)
        self.dropped, self.kept = start, shared
        summed = bool(values) and isinstance(values[0], (int, float))
        if summed:
            self.total -= _sum(values[:start]) + _sum(values[start + shared:])
        del values[start + shared:]
        del values[:start]
        fn = self._fn
        new = [fn(m) for m in messages[shared:]]
        if new and isinstance(new[0], (int, float)):
            self.total = (self.total if summed else 0) + _sum(new)
        elif not values:
            self.total = 0
        values.extend(new)
        # The request's own messages: nobody changes them after the call is made
        # (the history hands each request a snapshot, a list or a Prefix of its own).
        self._keys = messages
        self._from = now
        return values

    def _shared(self, messages: Sequence[Any], now: Provenance | None) -> tuple[int, int]:
        """(how many of the last call's messages were left out at the start, how many
        of the rest the request begins with)."""
        before = self._from
        if now is not None and before is not None and now[0] == before[0]:
            # The same generation of the same history: what both took from it at the
            # same positions is the same (its list is only ever appended to).
            _, base, count = now
            _, last_base, last_count = before
            if base >= last_base and base - last_base <= last_count:
                start = base - last_base
                return start, min(last_count - start, count)
        keys = self._keys
        start = 0
        if messages and keys and messages[0] is not keys[0]:
            # Trimmed at the start (the oldest turns left out of the window)?
            start = _position(keys, messages[0])
            if start:
                keys = keys[start:]
        return start, shared_prefix(keys, messages)


def _sum(values: Sequence[Any]) -> Any:
    return sum(values)


def _position(keys: Sequence[Any], first: Any) -> int:
    for i, key in enumerate(keys[:_TRIM_LOOKAHEAD]):
        if key is first:
            return i
    return 0


class PrefixMemo:
    """One session's memos, by name (one per provider wire format, one for the
    token estimate). Owned by the session's history: dropped with it, and made anew
    when the history is rebuilt from the log."""

    __slots__ = ("_memos", "generation")

    def __init__(self) -> None:
        self._memos: dict[str, Any] = {}
        #: Bumped by the history whenever it changes its messages other than by
        #: appending to them (a compaction): requests of an older generation are
        #: compared message by message.
        self.generation = 0

    def rewritten(self) -> None:
        """The history changed its messages other than by appending to them."""
        self.generation += 1

    def per_message(self, name: str, fn: Callable[[Any], T]) -> PerMessage[T]:
        """The :class:`PerMessage` named ``name``, made with ``fn`` on first use (the
        same name must always come with the same function)."""
        memo = self._memos.get(name)
        if memo is None:
            memo = self._memos[name] = PerMessage(fn, self)
        return memo

    def get(self, name: str) -> Any:
        """A value a provider keeps between calls of this session (None at first)."""
        return self._memos.get(name)

    def put(self, name: str, value: Any) -> None:
        self._memos[name] = value


def trimmed(provenance: Provenance | None, start: int) -> Provenance | None:
    """The provenance of a request's messages once its first ``start`` are left out."""
    if provenance is None:
        return None
    generation, base, count = provenance
    return generation, base + start, max(count - start, 0)


class Joined:
    """The join of a list of byte strings that only grows at its end (each but the
    first after its comma: a JSON array's items), kept between calls.

    A body is one copy of its parts whatever happens, but joining thousands of parts
    costs as much again in per-part work, and a long session's conversation is most of
    its body. Here the parts that stayed the same are one string (``blob``), so a call
    joins it and the few parts after it: one copy, and per-part work only for what is
    new. It is rebuilt when a part it holds changed; the parts after it are folded in
    every :data:`_FOLD` parts (a copy of the whole, that often)."""

    __slots__ = ("_blob", "_count")

    def __init__(self) -> None:
        #: ``parts[:count]`` joined, the first without its comma.
        self._blob = b""
        self._count = 0

    def chunks(self, parts: Sequence[bytes], unchanged: int, limit: int, *,
               lead: bool) -> list[bytes]:
        """What to join for ``parts[:limit]``, whose first ``unchanged`` are those of
        the last call; ``lead``: with the first part's comma (something comes before)."""
        if self._count > min(unchanged, limit):
            self._blob, self._count = b"", 0
        count = self._count
        if limit - count > _FOLD:
            fresh = list(parts[count:limit])
            if not count:
                fresh[0] = fresh[0][1:]
            self._blob = b"".join([self._blob, *fresh])
            self._count = count = limit
        out: list[bytes] = ([b",", self._blob] if lead else [self._blob]) if count else []
        rest = list(parts[count:limit])
        if rest and not count and not lead:
            rest[0] = rest[0][1:]
        out.extend(rest)
        return out
