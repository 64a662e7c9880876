"""Which network an id belongs to. Pure: ids say it themselves.

Signal rooms start with `signal:` (`signal:group:<id>`, `signal:dm:<uuid>`) and Signal people with
`@signal:`; everything else is Matrix-shaped (the console speaks in Matrix ids too).
"""

from __future__ import annotations

from bot.signal_text import PERSON_PREFIX as SIGNAL_PERSON_PREFIX

MATRIX = "matrix"
SIGNAL = "signal"
SIGNAL_ROOM_PREFIX = "signal:"
SIGNAL_GROUP_PREFIX = SIGNAL_ROOM_PREFIX + "group:"


def network_of_room(room_id: str) -> str:
    return SIGNAL if room_id.startswith(SIGNAL_ROOM_PREFIX) else MATRIX


def network_of_person(user_id: str) -> str:
    return SIGNAL if user_id.startswith(SIGNAL_PERSON_PREFIX) else MATRIX


def same_network(*people: str) -> bool:
    return len({network_of_person(p) for p in people}) <= 1
