"""Configuration: TOML validated by pydantic. Unknown keys are errors, so a typo is never ignored."""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.networks import SIGNAL_GROUP_PREFIX
from bot.transport.signal_rpc import parse_address

# Names the tz database gives UTC; shown everywhere as plain "UTC" (the demo's /etc/localtime says
# "Etc/UTC" while the config default says "UTC": one zone, one name).
_UTC_ALIASES = {"etc/utc", "etc/uct", "etc/universal", "etc/zulu", "uct", "universal", "zulu", "utc"}


def canonical_zone_name(name: str) -> str:
    return "UTC" if name.strip().lower() in _UTC_ALIASES else name


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


ANYONE = "*"


class MatrixConfig(Section):
    homeserver: str = Field(description="base URL of the homeserver")
    user_id: str
    password: SecretSource
    device_name: str = "mutual-aid-bot"
    store_dir: Path = Path("data/store")
    store_passphrase: SecretSource
    allowed_inviters: list[str] = Field(default_factory=list)
    # Whose invites to a direct chat are accepted as well: user ids, servers (":server") or "*"
    # for anyone on any homeserver (the front door). Group-room invites need allowed_inviters.
    direct_chat_inviters: list[str] = Field(default_factory=lambda: [ANYONE])
    # Kept only to explain itself: a config that still says `true` is refused with the reason.
    allow_unencrypted_rooms: bool = False
    max_command_age_hours: float = 24.0
    command_prefix: str = "!"
    # How long to wait for the keys of a message the bot cannot decrypt before telling the sender.
    undecryptable_patience_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("allow_unencrypted_rooms")
    @classmethod
    def _never_unencrypted(cls, value: bool) -> bool:
        if value:
            raise ValueError("is no longer supported: the bot never sends into a room that is "
                             "not end-to-end encrypted. Remove this line (or set it to false)")
        return value

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

    @field_validator("allowed_inviters", "direct_chat_inviters")
    @classmethod
    def _inviters(cls, values: list[str], info: ValidationInfo) -> list[str]:
        anyone = info.field_name == "direct_chat_inviters"
        for value in values:
            if anyone and value == ANYONE:
                continue
            if not (value.startswith("@") and ":" in value) and not value.startswith(":"):
                also = ' or "*" (anyone)' if anyone else ""
                raise ValueError(f"{value!r}: use a user id (@name:server) or a server "
                                 f"(:server){also}")
        return values

    @property
    def server_name(self) -> str:
        return self.user_id.split(":", 1)[1]

    def inviter_allowed(self, user_id: str, *, direct: bool = False) -> bool:
        """Whether to join a room `user_id` invites the bot to; `direct`: a direct chat (the
        invite says is_direct), which `direct_chat_inviters` may also allow."""
        allowed = self.allowed_inviters or [":" + self.server_name]
        if direct:
            allowed = [*allowed, *self.direct_chat_inviters]
        server = ":" + user_id.split(":", 1)[-1]
        return ANYONE in allowed or user_id in allowed or server in allowed


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


class PodConfig(Section):
    """One pod: its rooms and groups on every network. A need in one matches an offer in any."""

    name: str = Field(min_length=1)
    matrix_rooms: list[str] = Field(default_factory=list)  # room ids, like "!abc:example.org"
    signal_groups: list[str] = Field(default_factory=list)  # group ids, as signal-cli shows them

    @field_validator("matrix_rooms")
    @classmethod
    def _matrix_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.startswith("!"):
                raise ValueError(f"{value!r} is not a Matrix room id (they start with !); "
                                 "Element shows it under Room settings > Advanced")
        return values

    @property
    def rooms(self) -> tuple[str, ...]:
        """Every room of the pod as the bot names rooms (Signal groups as `signal:group:<id>`)."""
        return (*self.matrix_rooms, *(SIGNAL_GROUP_PREFIX + g for g in self.signal_groups))


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
        return canonical_zone_name(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return value.upper()


class DeliveryConfig(Section):
    """How long a destination that keeps failing is retried before its messages are given up."""

    give_up_after_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    max_backoff_seconds: float = Field(default=300.0, ge=1, le=3600)


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


class FrontDoorConfig(Section):
    """Private requests by DM from people who share no pod room with the bot (docs/organisers.md)."""

    # The pod room (its Matrix room id) that gets a request from an area no pod's zones cover;
    # empty: the person is told that no pod covers their area yet.
    default_pod: str = ""
    # Per person: requests open at once, and requests made in any 24 hours. 0 closes the door.
    max_open_requests: int = Field(default=2, ge=0, le=100)
    max_requests_per_day: int = Field(default=3, ge=0, le=100)
    # A block (`!block`) lapses this many days after it was made, unless lifted before.
    block_days: float = Field(default=180.0, gt=0, le=3650)

    @field_validator("default_pod")
    @classmethod
    def _room_id(cls, value: str) -> str:
        if value and not value.startswith("!"):
            raise ValueError(f"{value!r} is not a Matrix room id (they start with !); Element "
                             "shows it under Room settings > Advanced")
        return value


class ShiftsConfig(Section):
    """Shift reminders, post expiry and the needs digest. Hours may be fractional."""

    reminder_offsets_hours: list[float] = Field(default_factory=lambda: [24.0, 2.0])
    understaffed_alert_hours: float = Field(default=48.0, ge=0)
    late_grace_minutes: float = Field(default=60.0, ge=0)
    post_expiry_days: float = Field(default=14.0, gt=0)
    expiry_warning_days: float = Field(default=2.0, ge=0)
    digest_day: str = "monday"
    digest_time: str = "09:00"
    member_open_shifts_per_room: int = Field(default=5, ge=0)

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


class NetworkConfig(Section):
    """The network of pods (docs/network.md): which accounts are pod bots, and how much one pod
    may escalate."""

    # The only accounts whose network messages are read, and whose invites to a direct chat
    # between bots are accepted. Listing a bot is trusting its operator.
    bots: list[str] = Field(default_factory=list)
    escalations_per_hour: int = Field(default=6, ge=1, le=100)
    # Phone-tree alerts one pod may forward to its networks an hour (and this bot passes on
    # from any one other pod): an alert calls people, so the bound is lower than for needs.
    alerts_per_hour: int = Field(default=3, ge=1, le=100)

    @field_validator("bots")
    @classmethod
    def _bots(cls, values: list[str]) -> list[str]:
        for value in values:
            if not (value.startswith("@") and ":" in value):
                raise ValueError(f"{value!r}: use the bot's user id, like @bot:other.example")
        return values


class BotConfig(Section):
    # Optional so that the console can run from storage and bot settings alone.
    matrix: MatrixConfig | None = None
    signal: SignalConfig | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    bot: BotSettings = Field(default_factory=BotSettings)
    shifts: ShiftsConfig = Field(default_factory=ShiftsConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    front_door: FrontDoorConfig = Field(default_factory=FrontDoorConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    pods: list[PodConfig] = Field(default_factory=list)

    @property
    def command_prefix(self) -> str:
        return self.matrix.command_prefix if self.matrix else "!"

    @model_validator(mode="after")
    def _one_pod_per_room(self) -> BotConfig:
        seen: dict[str, str] = {}
        names: set[str] = set()
        for pod in self.pods:
            if pod.name in names:
                raise ValueError(f"two pods are named {pod.name!r}; give each its own name")
            names.add(pod.name)
            for room in pod.rooms:
                if room in seen:
                    raise ValueError(f"{room} is in pods {seen[room]!r} and {pod.name!r}; a room "
                                     "belongs to one pod")
                seen[room] = pod.name
        return self

    def pod_rooms(self, room_id: str) -> tuple[str, ...]:
        """The rooms of the pod `room_id` is in, itself first; just itself outside any pod."""
        for pod in self.pods:
            if room_id in pod.rooms:
                return (room_id, *(r for r in pod.rooms if r != room_id))
        return (room_id,)


@dataclass
class ConfigError(Exception):
    """Problems as (key path, what is wrong, hint)."""

    problems: list[tuple[str, str, str]]

    def __str__(self) -> str:
        return "\n".join(f"{where}: {what}" + (f" (hint: {hint})" if hint else "")
                         for where, what, hint in self.problems)


_HINTS = {
    "missing": "required; see config.example.toml",
    "bool_type": "use true or false (no quotes)",
    "bool_parsing": "use true or false (no quotes)",
    "int_type": "use a whole number (no quotes)",
    "int_parsing": "use a whole number (no quotes)",
    "float_type": "use a number (no quotes)",
    "float_parsing": "use a number (no quotes)",
    "string_type": 'put it in quotes, like "text"',
    "list_type": 'use a list in square brackets, like ["a", "b"]',
}
_SECRET_KEYS = ("password", "store_passphrase")
_SECRET_FIX = ('write where the secret comes from, never the secret itself: '
               '{ file = "path/to/file" } (a file holding just the secret, mode 0600) '
               'or { env = "VARIABLE_NAME" }')


def _section_model(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that holds the key at `loc` (BotConfig for a top-level key)."""
    model: type[BaseModel] = BotConfig
    for name in loc[:-1]:
        field = model.model_fields.get(str(name))
        if field is None:
            return None
        inner = [a for a in getattr(field.annotation, "__args__", (field.annotation,))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return None
        model = inner[0]
    return model


def _problem(error: dict) -> tuple[str, str, str]:
    """One pydantic error in plain words, with its fix."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        model = _section_model(loc)
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [],
                                          n=1)
        hint = (f"did you mean `{close[0]}`?" if close
                else "check the spelling against config.example.toml")
        return where, "is not a setting the bot knows", hint
    if len(loc) >= 2 and loc[0] == "matrix" and loc[1] in _SECRET_KEYS:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return where, "must say where the secret is kept", _SECRET_FIX
        return where, message, _SECRET_FIX
    return where, message, _HINTS.get(kind, "")


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot be read ({exc.strerror})", "")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"is not valid TOML: {exc}",
                            "see config.example.toml for the layout")]) from exc


def _resolve_paths(config: BotConfig, base: Path) -> None:
    config.storage.database = base / config.storage.database
    if config.matrix is not None:
        config.matrix.store_dir = base / config.matrix.store_dir
        for secret in (config.matrix.password, config.matrix.store_passphrase):
            if secret.file is not None:
                secret.file = base / secret.file


def load_config(path: str | Path) -> BotConfig:
    """Read and validate; relative paths in the file are taken relative to the file."""
    path = Path(path)
    try:
        config = BotConfig.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise ConfigError([_problem(e) for e in exc.errors()]) from None
    _resolve_paths(config, path.parent)
    return config


def load_for_run(path: str | Path) -> BotConfig:
    """What `run` and `check-config` need: a valid file with a network (a matrix section with
    readable secrets, or a signal section).
    Every problem is reported at once, the secrets' included, even when other keys are wrong."""
    path = Path(path)
    raw = _read_toml(path)
    try:
        config = BotConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
        matrix = raw.get("matrix") if isinstance(raw.get("matrix"), dict) else {}
        for key in _SECRET_KEYS:
            try:
                secret = SecretSource.model_validate(matrix.get(key))
            except ValidationError:
                continue  # already reported above
            if secret.file is not None:
                secret.file = path.parent / secret.file
            problems += _secret_problems(f"matrix.{key}", secret)
        raise ConfigError(problems) from None
    _resolve_paths(config, path.parent)
    check_for_run(config)
    return config


def check_for_run(config: BotConfig) -> None:
    """What `run` and `check-config` need on top of validation: a network (a matrix section with
    its secrets, or a signal section)."""
    if config.matrix is None and config.signal is None:
        raise ConfigError([("matrix", "section is missing (and there is no [signal] either)",
                            "copy [matrix] or [signal] from config.example.toml")])
    if config.matrix is not None:
        check_secrets(config.matrix)


def _secret_problems(name: str, secret: SecretSource) -> list[tuple[str, str, str]]:
    try:
        secret.read()
    except ConfigError as exc:
        return [(f"{name} ({where})", what, hint) for where, what, hint in exc.problems]
    return []


def check_secrets(matrix: MatrixConfig) -> None:
    problems = (_secret_problems("matrix.password", matrix.password)
                + _secret_problems("matrix.store_passphrase", matrix.store_passphrase))
    if problems:
        raise ConfigError(problems)
