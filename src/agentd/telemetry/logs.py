"""The daemon's log lines: JSON or text, never with a secret in them.

- :class:`JsonFormatter` (``[telemetry] log_format = "json"``): one JSON object per
  line, ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``exception``
  (the formatted traceback, when there is one) and, on every line logged for a run,
  the ids :mod:`agentd.logcontext` holds: ``agent``, ``agent_id``, ``session``,
  ``session_id``, ``run_id``, ``trace_id``.
- :class:`TextFormatter`: the classic ``time level logger: message`` lines.
- :class:`Redactor`: both formatters pass the message and the traceback through it.
  It replaces the values the daemon knows are secret (its tokens, the provider keys
  and other secrets in its environment: :func:`known_secrets`) and whatever has the
  shape of one: ``Bearer ...``, named tokens (``agd_...``), provider keys
  (``sk-...``), webhook secrets (``whsec_...``), Telegram bot tokens and URL
  passwords. One compiled regular expression, one pass per field.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from agentd.logcontext import CURRENT, LogContext

if TYPE_CHECKING:
    from agentd.config import Settings

__all__ = ["REDACTED", "JsonFormatter", "Redactor", "TextFormatter", "known_secrets",
           "level_of", "reconfigure"]

#: What a secret is replaced with.
REDACTED = "<redacted>"

#: A known value shorter than this is not treated as a secret (it would blank out
#: ordinary words, and is no secret worth the name).
_MIN_SECRET = 8

#: Shapes of secrets, whether or not the daemon knows their values. ``keep``: what
#: stays of the match (the scheme of an Authorization header, a URL's user).
_SHAPES = (
    r"(?P<keep>\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+)[A-Za-z0-9._~+/=-]{8,}",
    r"\bagd_[A-Za-z0-9_-]{8,}",                       # named tokens (security.identity)
    r"\bagentd\.token\.[A-Za-z0-9._~+/=-]+",          # a WebSocket's token subprotocol
    r"\bsk-[A-Za-z0-9_-]{16,}",                       # OpenAI, Anthropic, OpenRouter keys
    r"\bwhsec_[A-Za-z0-9+/=_-]{16,}",                 # webhook signing secrets
    r"(?<![0-9])[0-9]{6,12}:[A-Za-z0-9_-]{30,}",       # Telegram bot tokens
    r"(?P<user>://[^/\s:@\"']+:)[^/\s@\"']+(?=@)",    # a URL's password
)

#: Text without any of these (and without :data:`_BOT_TOKEN_HINT`) holds none of the
#: shapes: most lines are passed by a few substring checks, without the expression.
_HINTS = ("agd_", "agentd.token.", "sk-", "whsec_", "earer", "EARER", "asic", "ASIC", "://")
_BOT_TOKEN_HINT = re.compile(r"[0-9]:[A-Za-z0-9_-]{30}")

#: Environment variables whose names say they hold a secret.
_SECRET_NAME = re.compile(r"(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|_KEY)\Z", re.I)


def _replace(match: re.Match[str]) -> str:
    kept = match.group("keep") or match.group("user")
    return kept + REDACTED if kept else REDACTED


class Redactor:
    """Replaces secrets in text: the values given (:meth:`add`) and the shapes of
    tokens and keys (:data:`_SHAPES`), whichever the daemon knows of."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern = re.compile("|".join(_SHAPES))
        self._hints: tuple[str, ...] = _HINTS
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Redact these values too (shorter than 8 characters: ignored)."""
        new = {s for s in secrets if s and len(s) >= _MIN_SECRET} - self._secrets
        if not new:
            return
        self._secrets |= new
        # Longest first: a secret that contains another is replaced whole.
        known = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join([*map(re.escape, known), *_SHAPES]))
        self._hints = (*_HINTS, *known)

    def __call__(self, text: str) -> str:
        # (The expression's alternatives share no prefix: scanning a line with it costs
        # several times the substring checks that rule most lines out.)
        if any(map(text.__contains__, self._hints)) or _BOT_TOKEN_HINT.search(text):
            return self._pattern.sub(_replace, text)
        return text


def known_secrets(settings: Settings, environ: Mapping[str, str]) -> set[str]:
    """The secret values the daemon holds: its tokens, the termo token, and the
    values of the environment variables that hold keys and tokens (the providers',
    the named model endpoints', A2A's remote tokens, the search providers', those
    agents may name for Telegram, and any whose name ends in ``API_KEY``, ``TOKEN``, ``SECRET``,
    ``PASSWORD`` or ``_KEY``)."""
    from agentd.llm.registry import PROVIDERS

    found = {*settings.tokens, settings.token or "", settings.termo.token or ""}
    names = {p.api_key_env for p in PROVIDERS.values() if p.api_key_env}
    names |= {m.api_key_env for m in settings.models.values() if m.api_key_env}
    names |= set(settings.a2a.remote_tokens.values())
    names |= {p.api_key_env for p in settings.web_search.providers.values() if p.api_key_env}
    prefix = settings.channels.telegram.env_prefix
    for name, value in environ.items():
        if name in names or _SECRET_NAME.search(name) or (prefix and name.startswith(prefix)):
            found.add(value)
    found.discard("")
    return found


class TextFormatter(logging.Formatter):
    """``time level logger: message``, with secrets redacted (message and
    traceback alike)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the message and the traceback redacted (not
        # the whole line: the time, level and logger name hold no secret), and the
        # traceback not cached on the record for another handler.
        record.message = self.redactor(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += "\n" + self.redactor(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + self.redactor(record.exc_text)
        if record.stack_info:
            line += "\n" + self.redactor(self.formatStack(record.stack_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring for its fields)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._second = -1
        self._stamp = ""
        self._context: LogContext | None = None
        self._ids: dict[str, str] = {}

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # (one strftime per second, not per line)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redactor(record.getMessage()),
        }
        if record.exc_info:
            # Not cached on the record (as Formatter.format does): another handler
            # must not be handed the unredacted text.
            line["exception"] = self.redactor(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self.redactor(record.exc_text)
        if record.stack_info:
            line["stack"] = self.redactor(self.formatStack(record.stack_info))
        context = CURRENT.get()
        if context is not None:
            if context is not self._context:  # (a run logs many lines in a row)
                self._context, self._ids = context, {
                    "agent": context.agent, "agent_id": context.agent_id,
                    "session": self.redactor(context.session),
                    "session_id": context.session_id, "run_id": context.run_id,
                    "trace_id": context.trace_id}
            line.update(self._ids)
        return orjson.dumps(line).decode()


#: uvicorn's loggers, whose level the daemon sets with the root's (``log_level``).
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def level_of(name: str) -> int:
    """The logging level ``log_level`` names (any case); ValueError for no level."""
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"{name!r} is no log level; use DEBUG, INFO, WARNING, ERROR or "
                         "CRITICAL")
    return level


def reconfigure(level: str | None = None, log_format: str | None = None,
                secrets: Iterable[str] = ()) -> int:
    """Apply a changed ``log_level`` and ``[telemetry] log_format`` to the running
    process (a configuration reload; None: unchanged): the root logger's level and
    uvicorn's, and the format of the daemon's handlers (those with a
    :class:`TextFormatter` or :class:`JsonFormatter`), each keeping its redactor,
    which learns ``secrets`` (the tokens and keys the new configuration names).
    Other handlers are left alone. Returns how many handlers are the daemon's."""
    if level is not None:
        number = level_of(level)
        logging.getLogger().setLevel(number)
        for name in _SERVER_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level != logging.NOTSET:
                logger.setLevel(number)
    wanted = None if log_format is None else (
        JsonFormatter if log_format == "json" else TextFormatter)
    found = 0
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if not isinstance(formatter, TextFormatter | JsonFormatter):
            continue
        found += 1
        formatter.redactor.add(*secrets)
        if wanted is not None and type(formatter) is not wanted:
            handler.setFormatter(wanted(formatter.redactor))
    return found
