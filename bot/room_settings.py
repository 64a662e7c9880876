"""Per-room settings: a registry of known keys, each with help, a validator and a default.

Pure: values are stored by `storage.set_room_setting` / read with `storage.get_room_settings`;
this module only says which keys exist, what they mean, which values are valid and what a room
gets when it has not chosen. To add a setting, call `register(Setting(...))` at import time of the
module that uses it (or add it below); `!settings` lists and changes every registered key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bot.config import BotConfig, canonical_zone_name
from bot.formatting import shorten


class SettingError(ValueError):
    """A value a setting does not accept; the message says what it does accept."""


@dataclass(frozen=True)
class Setting:
    key: str
    help: str
    default: Callable[[BotConfig], str]  # the value a room has until it chooses
    validate: Callable[[str], str]  # returns the normalised value or raises SettingError
    example: str  # a valid value, shown in usage


SETTINGS: dict[str, Setting] = {}


def register(setting: Setting) -> Setting:
    if setting.key in SETTINGS:
        raise ValueError(f"room setting {setting.key!r} registered twice")
    SETTINGS[setting.key] = setting
    return setting


def get(key: str) -> Setting | None:
    return SETTINGS.get(key.strip().lower())


def validate(key: str, value: str) -> str:
    setting = get(key)
    if setting is None:
        raise SettingError(f"There is no setting {shorten(key, 30)!r}. Known: {', '.join(sorted(SETTINGS))}.")
    return setting.validate(value.strip())


def value(key: str, stored: dict[str, str], config: BotConfig) -> str:
    """The room's effective value: what it chose, else the configured default."""
    setting = SETTINGS[key]
    if key in stored:
        try:
            return setting.validate(stored[key])
        except SettingError:
            pass  # e.g. a time zone that no longer exists: fall back rather than fail
    return setting.default(config)


def effective(stored: dict[str, str], config: BotConfig) -> dict[str, tuple[str, bool]]:
    """Every known key -> (value, is_default)."""
    return {key: (value(key, stored, config), key not in stored) for key in sorted(SETTINGS)}


# ---- validators -------------------------------------------------------------------------------

_ZONES_LOWER: dict[str, str] = {}


def validate_timezone(text: str) -> str:
    if not _ZONES_LOWER:
        _ZONES_LOWER.update({z.lower(): z for z in available_timezones()})
    name = _ZONES_LOWER.get(text.strip().lower().replace(" ", "_"))
    if name is None or "/" not in name and name != "UTC":
        raise SettingError(f"{shorten(text, 40)!r} is not a time zone I know. Use an Area/City name like "
                           "Europe/Berlin or America/New_York.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingError(f"{shorten(text, 40)!r} is not a usable time zone.") from exc
    return canonical_zone_name(name)


_TRUE = {"on", "yes", "true", "1", "enabled", "enable"}
_FALSE = {"off", "no", "false", "0", "disabled", "disable"}


def validate_on_off(text: str) -> str:
    word = text.strip().lower()
    if word in _TRUE:
        return "on"
    if word in _FALSE:
        return "off"
    raise SettingError(f"{shorten(text, 40)!r}: use on or off.")


def is_on(text: str) -> bool:
    return text == "on"


# ---- the settings this part of the bot uses ---------------------------------------------------

TIMEZONE = register(Setting(
    key="timezone",
    help="Time zone for this room's shifts, reminders and digest (Area/City).",
    default=lambda config: config.bot.timezone,
    validate=validate_timezone,
    example="Europe/Berlin",
))

DIGEST = register(Setting(
    key="digest",
    help="Post a digest of open needs here on the configured day and time (on/off).",
    default=lambda config: "on",
    validate=validate_on_off,
    example="off",
))
