"""Settings: built-in defaults < ``$AGENTD_HOME/agentd.toml`` < ``.env`` < ``AGENTD_*`` env.

Nothing is read at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["DEFAULT_PORT", "Settings", "default_home", "load_settings"]

DEFAULT_PORT = 8721


def default_home() -> Path:
    """``AGENTD_HOME`` or ``~/.agentd``."""
    raw = os.environ.get("AGENTD_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".agentd"


class Settings(BaseSettings):
    """Daemon configuration. Every field can be set as ``AGENTD_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTD_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    token: str | None = None
    tokens: list[str] = Field(default_factory=list)
    public_paths: list[str] = Field(default_factory=lambda: ["/health"])
    default_model: str = "scripted"
    max_steps: int = Field(default=16, ge=1, le=1000)
    max_message_bytes: int = Field(default=256 * 1024, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    tool_timeout_s: float = Field(default=60.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: This daemon's name in run leases; default: host name + a hash of ``home``
    #: (stable across restarts, so a restarted daemon takes its own runs back at once).
    node_id: str = ""
    #: How long a run's lease holds without renewal; another node takes the run over
    #: after that (renewed every third of it, and by every step's commit).
    lease_ttl_s: float = Field(default=30.0, gt=0)
    #: Automatic checkpoint of a session when a run ends and its last checkpoint is at
    #: least this old (seconds); 0: none (pause, stop and shutdown still checkpoint).
    checkpoint_interval_s: float = Field(default=300.0, ge=0)
    #: An agent with no activity for this long is put to sleep (dropped from memory;
    #: the next message or decision wakes it). 0: never.
    agent_idle_s: float = Field(default=300.0, ge=0)
    #: Sessions with no activity for this long (and no run queued or under way) are
    #: deleted, with their log. 0: never.
    session_ttl_s: float = Field(default=0.0, ge=0)
    demo_agent: bool = True
    #: Python modules whose top-level ``@tool`` functions the daemon offers to agents.
    tool_modules: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    #: FastAPI's native OpenTelemetry instrumentation (exporters via OTEL_* env).
    telemetry: bool = False

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'agentd.db'}"
        if not self.node_id:
            digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:8]
            self.node_id = f"{socket.gethostname()}:{digest}"
        if self.token and self.token not in self.tokens:
            self.tokens = [*self.tokens, self.token]
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens)

    @property
    def pid_file(self) -> Path:
        return self.home / "agentd.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "agentd.log"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_home() / "agentd.toml")
        return (init_settings, env_settings, dotenv_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, ``.env`` and ``agentd.toml``."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
