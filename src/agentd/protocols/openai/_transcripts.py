"""Which session a stateless client's conversation continues.

A client that names no session (no ``X-Agentd-Session``, ``user`` or
``previous_response_id``) sends the whole conversation every turn, as Chat Completions
clients and frameworks do. Without more, each request would start one more session and
send it the whole conversation as a transcript: a turn would store and hand the model
everything said so far, more with every turn, and a conversation past
``max_message_bytes`` could not go on at all. So the door remembers each conversation
it answered for such a client, by a digest of the conversation as the client will send
it back (its turns so far, the request's new turns, the reply), with the session that
holds it: the client's next request, whose earlier turns are exactly that, continues
that session with only its new turns.

- **Only that caller's, only that agent's.** The digest covers the agent and the
  caller (the token's name), so no other token's conversation is ever taken for it.
- **Once.** A digest continues one request: taken when it is used, kept again (the
  next one) when that run ends. Two requests sending the same conversation at once
  get the session and a new one; a conversation resent from an earlier point (a
  regenerated answer, an edited message) is no longer the session's: a new one.
- **Never another person's hidden turns.** Two sessions that ended with the same
  visible conversation (two people behind one token who both said "hi" and got the
  same answer) make the digest ambiguous: neither is continued from it, since each
  session also holds what its runs did (tool calls and results) that the other's
  client never saw.
- **Only while the session is as it was answered**: a session deleted, or that went
  on meanwhile (a message through its header), is not continued.

The digests live in this process only and only save work: after a restart, or on
another node, the client's next request starts a new session with the transcript, as
before.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import orjson

__all__ = ["Chain", "Continued", "Transcripts"]


class Chain:
    """A request's conversation as a digest: of its earlier turns (:attr:`digest`, what
    a session it continues ended with) and, once answered, of the whole of it
    (:meth:`answered`, what the client's next request will send as its earlier turns).

    The digest is of the turns' roles and of their texts, each list as compact JSON
    (``["user","assistant",...]``, ``["...","..."]``), after the scope (agent and
    caller): the earlier turns are hashed once, and the answered conversation goes on
    from there with only the new turns and the reply."""

    __slots__ = ("_earlier", "_new", "_roles", "_texts")

    def __init__(self, scope: tuple[str, ...], roles: list[str], texts: list[str],
                 split: int) -> None:
        """``roles`` and ``texts``: the request's turns, the first ``split`` earlier."""
        self._roles = hashlib.sha256(orjson.dumps(scope) + b"\n")
        self._texts = hashlib.sha256()
        # "[t1,t2" (each array left open): the answered conversation goes on after it.
        self._roles.update(memoryview(orjson.dumps(roles[:split]))[:-1])
        self._texts.update(memoryview(orjson.dumps(texts[:split]))[:-1])
        self._earlier = split > 0
        self._new = (roles[split:], texts[split:])

    @property
    def digest(self) -> bytes:
        return self._closed([], [])

    def answered(self, reply: str) -> bytes:
        """The digest of the conversation once ``reply`` answered it."""
        roles, texts = self._new
        return self._closed([*roles, "assistant"], [*texts, reply])

    def _closed(self, roles: list[str], texts: list[str]) -> bytes:
        both = hashlib.sha256()
        for state, more in ((self._roles, roles), (self._texts, texts)):
            whole = state.copy()
            rest = orjson.dumps(more)
            whole.update(rest[1:] if not self._earlier or not more else b"," + rest[1:])
            both.update(whole.digest())
        return both.digest()


@dataclass(frozen=True, slots=True)
class Continued:
    """A session that ended with a conversation: where the next request goes."""

    session_id: str
    key: str
    #: The seq of the answering run's end: the session is as answered while nothing
    #: that changes its conversation follows it.
    seq: int


#: A digest two sessions ended with: neither is continued from it.
_AMBIGUOUS = Continued(session_id="", key="", seq=-1)


class Transcripts:
    """The digests of the conversations answered lately, bounded (least recently kept
    forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._kept: OrderedDict[bytes, Continued] = OrderedDict()

    def take(self, digest: bytes) -> Continued | None:
        """The session a conversation continues, forgotten as it is taken; None when
        none (or more than one) ended with it."""
        found = self._kept.get(digest)
        if found is None or found is _AMBIGUOUS:
            return None
        del self._kept[digest]
        return found

    def keep(self, digest: bytes, at: Continued) -> None:
        """Remember that session ``at`` ended with the conversation ``digest``."""
        held = self._kept.pop(digest, None)
        self._kept[digest] = at if held is None or (
            held is not _AMBIGUOUS and held.session_id == at.session_id) else _AMBIGUOUS
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
