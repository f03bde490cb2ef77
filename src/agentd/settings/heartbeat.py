"""The ``heartbeat`` area of an agent's settings: a periodic autonomous turn
(:mod:`agentd.autonomy.heartbeat` runs it)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["MIN_EVERY_S", "ActiveHours", "HeartbeatSettings"]

#: The shortest period: a heartbeat is a model call; faster is a loop, not a heartbeat.
MIN_EVERY_S = 60
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
#: An IANA name (``Europe/Berlin``, ``UTC``); ZoneInfo would also take a file path.
_ZONE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"
#: A relative path of the workspace with no ``.``/``..`` segment (the read is confined
#: again, symlinks included, when it happens: see ``Workspace.read_bytes``).
_FILE = r"^[^\x00-\x1f\x7f\\]{1,512}$"
_KEY = r"^[^\x00-\x1f\x7f]{1,256}$"


class ActiveHours(BaseModel):
    """When beats may happen: ``start``..``end`` (``HH:MM``, end excluded) in
    ``timezone``; a window whose end is before its start wraps midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field("09:00", pattern=_HHMM, description="`HH:MM`, inclusive.")
    end: str = Field("18:00", pattern=_HHMM,
                     description="`HH:MM`, exclusive; before `start`: the window wraps "
                                 "midnight.")
    timezone: str = Field("UTC", max_length=64, pattern=_ZONE,
                          description="An IANA time zone (`Europe/Berlin`).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ActiveHours:
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be empty "
                             "(leave active_hours out for all day)")
        return self


class HeartbeatSettings(BaseModel):
    """The ``heartbeat`` area of an agent's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Beat (default: off).")
    every_s: int = Field(1800, ge=MIN_EVERY_S, le=7 * 86_400,
                         description="Seconds between beats (slots aligned to the epoch).")
    document: str | None = Field(None, min_length=1, max_length=65_536,
                                 description="The heartbeat's text; when given, `file` "
                                             "is not read.")
    file: str = Field("HEARTBEAT.md", pattern=_FILE,
                      description="A file of the agent's workspace read at each beat "
                                  "(when `document` is not given).")
    session: str = Field("heartbeat", pattern=_KEY,
                         description="The session key beats go to.")
    active_hours: ActiveHours | None = Field(None, description="When beats may happen "
                                                               "(default: all day).")
    ok_token: str = Field("HEARTBEAT_OK", min_length=1, max_length=64,
                          pattern=r"^\S(.*\S)?$",
                          description="A reply that is exactly this is logged, not "
                                      "delivered.")
    max_document_bytes: int = Field(16_384, ge=1, le=1_048_576,
                                    description="A longer `file` is skipped, not cut.")

    @field_validator("file")
    @classmethod
    def _inside(cls, value: str) -> str:
        if value.startswith("/") or any(p in (".", "..") for p in value.split("/")):
            raise ValueError("must be a path relative to the workspace, with no '.' or "
                             "'..' segment")
        return value

    @field_validator("session")
    @classmethod
    def _reachable_key(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("a session key has no '.' or '..' segment")
        return value
