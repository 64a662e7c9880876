"""Configuration: TOML validated by pydantic. Unknown keys are errors, so a typo is never ignored."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.transport.signal_rpc import parse_address


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretSource(Section):
    """A secret comes from an environment variable or a file, never inline in the config."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if bool(self.env) == bool(self.file):
            raise ValueError("give exactly one of `env` (a variable name) or `file` (a path)")
        return self

    def read(self) -> str:
        if self.env:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError([(f"environment variable {self.env}", "is not set or empty",
                                    f"export {self.env}=... before starting the bot")])
            return value
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([(str(self.file), f"cannot be read ({exc.strerror})",
                                "create it with the secret on one line, mode 0600")]) from exc
        if not value:
            raise ConfigError([(str(self.file), "is empty", "put the secret on one line")])
        return value


class MatrixConfig(Section):
    homeserver: str = Field(description="base URL of the homeserver")
    user_id: str
    password: SecretSource
    device_name: str = "mutual-aid-bot"
    store_dir: Path = Path("data/store")
    store_passphrase: SecretSource
    allowed_inviters: list[str] = Field(default_factory=list)
    allow_unencrypted_rooms: bool = False
    max_command_age_hours: float = 24.0
    command_prefix: str = "!"
    # How long to wait for the keys of a message the bot cannot decrypt before telling the sender.
    undecryptable_patience_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not (value.startswith("@") and ":" in value):
            raise ValueError("must look like @name:server.org")
        return value

    @field_validator("homeserver")
    @classmethod
    def _homeserver(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("allowed_inviters")
    @classmethod
    def _inviters(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (value.startswith("@") and ":" in value) and not value.startswith(":"):
                raise ValueError(f"{value!r}: use a user id (@name:server) or a server (:server)")
        return values

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    def inviter_allowed(self, user_id: str) -> bool:
        allowed = self.allowed_inviters or [":" + self.server_name]
        server = ":" + user_id.split(":", 1)[-1]
        return user_id in allowed or server in allowed


class SignalConfig(Section):
    """The Signal transport: a signal-cli daemon that the bot talks JSON-RPC to."""

    daemon: str = "tcp:127.0.0.1:7583"
    # The bot's account in a multi-account daemon (phone number or ACI); empty for a daemon
    # started with `-a ACCOUNT`. Never logged.
    account: str = ""
    # "manual" for a daemon started with --receive-mode=manual: the bot subscribes on connect.
    receive_mode: Literal["manual", "on-start"] = "manual"
    device_name: str = "mutual-aid-bot"
    max_command_age_hours: float = Field(default=24.0, gt=0)
    group_cache_seconds: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("daemon")
    @classmethod
    def _daemon(cls, value: str) -> str:
        parse_address(value)
        return value


class StorageConfig(Section):
    database: Path = Path("data/mutual-aid-bot.db")


class BotSettings(Section):
    timezone: str = "UTC"
    coordinator_power_level: int = 50
    max_matches: int = Field(default=3, ge=0, le=10)
    log_level: str = "INFO"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone; use an Area/City name like Europe/Berlin") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return value.upper()


class MetricsConfig(Section):
    """Optional Prometheus endpoint (`/metrics`) and health check (`/healthz`)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=1, le=65535)
    healthy_sync_age_seconds: float = Field(default=120.0, gt=0)


class PrivacyConfig(Section):
    """Private intake by DM, introductions and how long personal data is kept."""

    intake_timeout_minutes: float = Field(default=30.0, gt=0)
    retention_days: float = Field(default=30.0, ge=0)
    intro_with_coordinator: bool = False


class ShiftsConfig(Section):
    """Shift reminders, post expiry and the needs digest. Hours may be fractional."""

    reminder_offsets_hours: list[float] = Field(default_factory=lambda: [24.0, 2.0])
    understaffed_alert_hours: float = Field(default=48.0, ge=0)
    late_grace_minutes: float = Field(default=60.0, ge=0)
    post_expiry_days: float = Field(default=14.0, gt=0)
    expiry_warning_days: float = Field(default=2.0, ge=0)
    digest_day: str = "monday"
    digest_time: str = "09:00"

    @field_validator("reminder_offsets_hours")
    @classmethod
    def _offsets(cls, values: list[float]) -> list[float]:
        if any(v < 0 for v in values):
            raise ValueError("offsets are hours before the shift; none may be negative")
        return values

    @field_validator("digest_day")
    @classmethod
    def _day(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in _DIGEST_DAYS:
            raise ValueError("use a weekday name (monday ... sunday) or daily")
        return value

    @field_validator("digest_time")
    @classmethod
    def _time(cls, value: str) -> str:
        hour, sep, minute = value.strip().partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60
                and len(minute) == 2):
            raise ValueError('use 24-hour HH:MM, like "09:00"')
        return f"{int(hour):02d}:{minute}"


_DIGEST_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
                "daily")


class BotConfig(Section):
    # Optional so that the console can run from storage and bot settings alone.
    matrix: MatrixConfig | None = None
    signal: SignalConfig | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    bot: BotSettings = Field(default_factory=BotSettings)
    shifts: ShiftsConfig = Field(default_factory=ShiftsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @property
    def command_prefix(self) -> str:
        return self.matrix.command_prefix if self.matrix else "!"


@dataclass
class ConfigError(Exception):
    """Problems as (key path, what is wrong, hint)."""

    problems: list[tuple[str, str, str]]

    def __str__(self) -> str:
        return "\n".join(f"{where}: {what}" + (f" (hint: {hint})" if hint else "")
                         for where, what, hint in self.problems)


_HINTS = {
    "extra_forbidden": "unknown key; check the spelling against config.example.toml",
    "missing": "required; see config.example.toml",
}


def load_config(path: str | Path) -> BotConfig:
    """Read and validate; relative paths in the file are taken relative to the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot be read ({exc.strerror})", "")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"is not valid TOML: {exc}", "")]) from exc
    try:
        config = BotConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            problems.append((where, error["msg"], _HINTS.get(error["type"], "")))
        raise ConfigError(problems) from None
    base = path.parent
    config.storage.database = base / config.storage.database
    if config.matrix is not None:
        config.matrix.store_dir = base / config.matrix.store_dir
        for secret in (config.matrix.password, config.matrix.store_passphrase):
            if secret.file is not None:
                secret.file = base / secret.file
    return config


def check_for_matrix(config: BotConfig) -> MatrixConfig:
    """What `run` and `check-config` need on top of validation: a matrix section and its secrets."""
    if config.matrix is None:
        raise ConfigError([("matrix", "section is missing", "copy it from config.example.toml")])
    check_secrets(config.matrix)
    return config.matrix


def check_secrets(matrix: MatrixConfig) -> None:
    problems = []
    for name, secret in (("matrix.password", matrix.password),
                         ("matrix.store_passphrase", matrix.store_passphrase)):
        try:
            secret.read()
        except ConfigError as exc:
            problems += [(f"{name} ({where})", what, hint) for where, what, hint in exc.problems]
    if problems:
        raise ConfigError(problems)
