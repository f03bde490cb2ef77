"""Channels: doors through which people reach agents from other messaging systems.

A channel is a service above the runtime: it reaches agents only through the Runtime
facade (``runtime.send``, ``runtime.read_events``, ...) and keeps its own small
durable state in tables of its own (``agentd.store.telegram``). Telegram is the first
(:mod:`agentd.channels.telegram`).

A channel's chats are sessions with a key of its own prefix (``telegram:<chat_id>``),
and what is said in them leaves the daemon. :func:`channel_of` tells which sessions
those are, from the key alone, for the policy's taint rule: a tainted session that
posts into one, or schedules runs there, is sending out (docs/security.md, layer 7).
"""

from agentd.settings.channels import ChannelSettings

__all__ = ["CHANNEL_SESSIONS", "TELEGRAM_SESSIONS", "ChannelSettings", "channel_of"]

#: The prefix of a Telegram chat's session (``telegram:<chat_id>``).
TELEGRAM_SESSIONS = "telegram:"
#: Session key prefix -> what the channel delivers that session's messages to. Every
#: channel registers its prefix here: a key with it is outside the daemon whether or
#: not a chat is bound to it yet (a binding made later delivers what follows).
CHANNEL_SESSIONS: dict[str, str] = {TELEGRAM_SESSIONS: "Telegram chat"}


def channel_of(session_key: object) -> str | None:
    """Where a channel delivers what is said in the session ``session_key`` (``"Telegram
    chat 42"``), or None for a session no channel delivers from. Anything but a string
    is None (a hostile tool argument: the tool's own validation refuses it)."""
    if not isinstance(session_key, str):
        return None
    for prefix, what in CHANNEL_SESSIONS.items():
        if session_key.startswith(prefix):
            # (repr: the rest is attacker text, shown to a person in an approval.)
            return f"{what} {session_key[len(prefix):]!r}"
    return None
