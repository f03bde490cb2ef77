"""Channels: doors through which people reach agents from other messaging systems.

A channel is a service above the runtime: it reaches agents only through the Runtime
facade (``runtime.send``, ``runtime.read_events``, ...) and keeps its own small
durable state in tables of its own (``agentd.store._telegram``). Telegram is the first
(:mod:`agentd.channels.telegram`).
"""

from agentd.channels.settings import ChannelSettings

__all__ = ["ChannelSettings"]
