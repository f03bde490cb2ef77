"""The ``channels`` area of an agent's settings, and the operator's ``[channels]``.

An agent's settings are written by API clients (and some fields by the agent's own
tools), so they only *name* environment variables; which names they may use is the
operator's decision (``[channels.telegram] env_prefix``), checked when the settings are
saved and again when they are used. The Bot API's address is the operator's alone:
nothing an API client writes can make the daemon send a token anywhere else.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentd.trust import OperatorOnly

__all__ = ["ChannelSettings", "ChannelsConfig", "TelegramConfig", "TelegramSettings"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Every bot's variables share the operator's prefix: naming one is choosing whose bot.
_BOT_VARIABLE = OperatorOnly(
    "tenants", "naming a bot's variable chooses which bot (another tenant's, maybe) "
               "the agent speaks through")


class TelegramSettings(_Area):
    """One agent's Telegram bot (``settings.channels.telegram``)."""

    bot_token_env: Annotated[str, _BOT_VARIABLE] = Field(
        min_length=1, max_length=128,
        description="The environment variable holding the bot's token (from BotFather); "
                    "its name must start with the daemon's `[channels.telegram] "
                    "env_prefix`.")
    secret_token_env: Annotated[str, _BOT_VARIABLE] = Field(
        min_length=1, max_length=128,
        description="The environment variable holding the webhook's secret token (the "
                    "`secret_token` given to setWebhook, sent back by Telegram in "
                    "`X-Telegram-Bot-Api-Secret-Token`); same prefix rule.")
    allowed_chats: list[int] | None = Field(
        None, max_length=10_000,
        description="Chat ids whose messages reach the agent (null: every chat that "
                    "writes to the bot). Updates from other chats are recorded as "
                    "`refused` and answered with nothing.")
    typing: bool = Field(True, description="Show \"typing...\" in the chat while a run "
                                           "of its session works.")
    max_file_mb: int = Field(20, ge=1, le=2000,
                             description="Photos and documents larger than this are not "
                                         "downloaded (the agent is told so).")
    deliver_failures: bool = Field(
        True, description="Tell the chat, with the error's code only, when a run of its "
                          "session fails.")

    @field_validator("bot_token_env", "secret_token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name (letters, digits, _)")
        return value


class ChannelSettings(_Area):
    """An agent's channels (``settings.channels``): ``{"telegram": {...}}``."""

    telegram: TelegramSettings | None = Field(
        None, description="The agent's Telegram bot (see docs/channels.md).")


class TelegramConfig(_Area):
    """The operator's ``[channels.telegram]`` in agentd.toml."""

    #: Where the Bot API is (tests point it at ``agentd.testing.StubBotAPI``). Only
    #: the operator sets it: the bot's token travels in its path.
    api_base: str = "https://api.telegram.org"
    #: The environment variables agents may name for tokens and secrets must start
    #: with this (an API client must not make the daemon send ``AGENTD_TOKEN`` or a
    #: provider key to Telegram). Empty: no agent may use the channel.
    env_prefix: str = Field("TELEGRAM_", max_length=64)
    #: Whether this node runs the channel's workers (inbox and delivery). On a shared
    #: PostgreSQL store each chat is leased to one node at a time (docs/channels.md).
    worker: bool = True
    #: One Bot API call's timeout (a slower answer counts as a failure and is retried).
    timeout_s: float = Field(10.0, gt=0, le=600, allow_inf_nan=False)
    #: Backoff between retries of a failed call (5xx, timeouts), doubling to the max.
    retry_base_s: float = Field(1.0, gt=0, le=600, allow_inf_nan=False)
    retry_max_s: float = Field(60.0, gt=0, le=3600, allow_inf_nan=False)
    #: A 429's ``retry_after`` is honoured up to this many seconds.
    max_retry_after_s: float = Field(300.0, gt=0, le=86_400, allow_inf_nan=False)
    #: How often "typing" is re-sent while a run works (Telegram shows it ~5 s).
    typing_every_s: float = Field(4.0, gt=0, le=60, allow_inf_nan=False)
    #: Done inbox rows older than this are deleted (their ``update_id`` could then be
    #: replayed; Telegram never resends an update that old). 0: kept forever.
    inbox_keep_s: float = Field(7 * 86_400.0, ge=0, allow_inf_nan=False)

    def allows_env(self, name: str) -> bool:
        """Whether an agent may name the environment variable ``name``."""
        return bool(self.env_prefix) and name.startswith(self.env_prefix)


class ChannelsConfig(_Area):
    """The operator's ``[channels]``."""

    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
