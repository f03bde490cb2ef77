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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["PerMessage", "PrefixMemo", "shared_prefix"]

T = TypeVar("T")

#: How far into the last call's messages a request's first message is looked for
#: (by identity): a window trimmed of its oldest turns starts a little later.
_TRIM_LOOKAHEAD = 256


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


class PerMessage(Generic[T]):
    """A value per message, computed once while the messages stay the conversation's.

    :meth:`values` answers the values of a request's messages, computing only those of
    messages the last call did not have; the answer is this object's own list, valid
    until the next call (join or sum it at once)."""

    __slots__ = ("_fn", "_keys", "_values", "dropped", "kept")

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self._fn = fn
        self._keys: Sequence[Any] = ()
        self._values: list[T] = []
        #: Of the last call's messages: how many the last :meth:`values` found left
        #: out at the start, and how many it reused after them.
        self.dropped = 0
        self.kept = 0

    def values(self, messages: Sequence[Any]) -> list[T]:
        keys, values = self._keys, self._values
        start = 0
        if messages and keys and messages[0] is not keys[0]:
            # Trimmed at the start (the oldest turns left out of the window)?
            start = _position(keys, messages[0])
            if start:
                keys = keys[start:]
                del values[:start]
        shared = shared_prefix(keys, messages)
        self.dropped, self.kept = start, shared
        del values[shared:]
        fn = self._fn
        values.extend([fn(m) for m in messages[shared:]])
        # The request's own list: nobody changes it after the call is made (the
        # history hands out a copy of its messages for each request).
        self._keys = messages
        return values


def _position(keys: Sequence[Any], first: Any) -> int:
    for i, key in enumerate(keys[:_TRIM_LOOKAHEAD]):
        if key is first:
            return i
    return 0


class PrefixMemo:
    """One session's memos, by name (one per provider wire format, one for the
    token estimate). Owned by the session's history: dropped with it, and made anew
    when the history is rebuilt from the log."""

    __slots__ = ("_memos",)

    def __init__(self) -> None:
        self._memos: dict[str, Any] = {}

    def per_message(self, name: str, fn: Callable[[Any], T]) -> PerMessage[T]:
        """The :class:`PerMessage` named ``name``, made with ``fn`` on first use (the
        same name must always come with the same function)."""
        memo = self._memos.get(name)
        if memo is None:
            memo = self._memos[name] = PerMessage(fn)
        return memo

    def get(self, name: str) -> Any:
        """A value a provider keeps between calls of this session (None at first)."""
        return self._memos.get(name)

    def put(self, name: str, value: Any) -> None:
        self._memos[name] = value
