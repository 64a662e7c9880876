"""What a pod is called and which coarse zones it covers. Pure: no I/O.

A pod is its room (and, with `[[pods]]` in the config, its rooms on other networks). Coordinators
name it (`!pod name Elm Street`) and list its zones (`!pod zones north, riverside`). Zones are
areas a neighbour would recognise, never addresses: a zone with a house number, a postcode or an
@ is refused, so nothing more precise than "north" can be stored or passed to other pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.config import BotConfig

MAX_POD_NAME = 60
MAX_ZONE = 40
MAX_ZONES = 12
NONE = "none"

# A word with a digit in it ("12", "E14", "4th", "10115") is how addresses and postcodes look.
_ADDRESS_LIKE = re.compile(r"\d")
_SEPARATORS = re.compile(r"[,;\n]")
_WORD = re.compile(r"[^\W_]+")


class PodRuleError(ValueError):
    """A name or zone list the pod cannot use; the message says what it can."""


@dataclass(frozen=True)
class PodProfile:
    room_id: str
    name: str | None
    zones: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.name or "this pod"


def clean_name(text: str) -> str:
    name = " ".join(text.split())
    if not name:
        raise PodRuleError("Give the pod a name, like Elm Street.")
    if len(name) > MAX_POD_NAME or "@" in name:
        raise PodRuleError(f"A pod's name is up to {MAX_POD_NAME} characters, with no @.")
    return name


def clean_zone(text: str) -> str:
    zone = " ".join(text.split()).lower()
    if not zone:
        raise PodRuleError("A zone needs a name, like north or riverside.")
    if len(zone) > MAX_ZONE or "@" in zone or _ADDRESS_LIKE.search(zone):
        raise PodRuleError(
            f"{zone[:MAX_ZONE]!r} looks like an address. A zone is a coarse area a neighbour "
            f"would recognise, like north or riverside: no numbers, up to {MAX_ZONE} characters.")
    return zone


def parse_zones(text: str) -> tuple[str, ...]:
    """'North, Riverside' -> ('north', 'riverside'); 'none' -> (). Order kept, repeats dropped."""
    if " ".join(text.split()).lower() == NONE:
        return ()
    parts = [part for part in _SEPARATORS.split(text) if part.strip()]
    if not parts:
        raise PodRuleError("List the zones separated by commas, like: north, riverside.")
    if len(parts) > MAX_ZONES:
        raise PodRuleError(f"A pod can have up to {MAX_ZONES} zones; more means it is time to split.")
    return tuple(dict.fromkeys(clean_zone(part) for part in parts))


def zones_text(zones: tuple[str, ...]) -> str:
    return ", ".join(zones) if zones else NONE


def stored_zones(stored: str | None) -> tuple[str, ...]:
    """Zones as kept in the room's settings; a value a newer rule refuses counts as none."""
    if not stored:
        return ()
    try:
        return parse_zones(stored)
    except PodRuleError:
        return ()


def configured_name(room_id: str, config: BotConfig) -> str | None:
    return next((pod.name for pod in config.pods if room_id in pod.rooms), None)


def profile(room_id: str, stored: dict[str, str], config: BotConfig) -> PodProfile:
    """The pod of `room_id` from its stored settings, the config's `[[pods]]` name as a fallback."""
    name = stored.get("pod_name")
    if not name or name == NONE:
        name = configured_name(room_id, config)
    return PodProfile(room_id, name, stored_zones(stored.get("zones")))


def _as_words(text: str) -> str:
    """' groceries for riverside ': lower-case words between single spaces, padded."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def zone_in_text(text: str, zones: tuple[str, ...]) -> str | None:
    """The pod zone a post names as words ("groceries for riverside" -> riverside), if exactly one.

    Longest zones are tried first so "north east" wins over "north"; linear in the text for the
    pod's handful of zones.
    """
    words = _as_words(text)
    named = [zone for zone in sorted(zones, key=len, reverse=True) if _as_words(zone) in words]
    if not named:
        return None
    longest = named[0]
    others = [zone for zone in named[1:] if zone not in longest]
    return None if others else longest


def zone_for_post(text: str, zones: tuple[str, ...]) -> str | None:
    """The zone a post from the pod room is counted in: the pod's only zone, or the one it names."""
    if len(zones) == 1:
        return zones[0]
    return zone_in_text(text, zones)
