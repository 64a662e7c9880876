"""The network of pods: the bot-to-bot message format, who is trusted, escalation times and the
flood limit. Pure: no I/O, time passed in. See docs/network.md.

Bots talk in a network room (and, for what only one other bot may learn, in an encrypted direct
chat between the two bots) with `m.notice` messages whose body a person can read and whose
content carries `KEY`: {"v": 1, "type": ..., "id": ..., ...}. A message is read by the fields
this version knows; unknown fields are ignored, a newer `v` is read the same way, and an
unknown type is ignored. Everything else about a message that does not fit is `Malformed`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot import phone_tree, pods, room_settings
from bot.config import BotConfig
from bot.formatting import render
from bot.messages import Outgoing
from bot.models import Category, Urgency

KEY = "org.mutual_aid_bot.network"
VERSION = 1
MAX_BYTES = 4096  # a payload larger than this (as JSON) is refused unread

# Types and where they travel: in the network room (every bot may read them) or bot to bot.
POD = "pod"  # room: a pod joined, changed its name or zones, or answers a pod new to its bot
LEFT = "left"  # room: a pod left the network (`id`: its token, never used again)
NEED = "need"  # room: an escalated need (category, urgency, zone, pod name; never a person)
CLAIM = "claim"  # room: someone in another pod offers to help (a claim token, no person)
CLOSE = "close"  # room: the need was met (maybe by a claim it names), withdrawn, or its pod left
WITHDRAW = "withdraw"  # room: a claim is withdrawn (its pod left the network)
ANSWER = "answer"  # direct: the requester's yes or no, to the claiming pod's bot only
HELPER = "helper"  # direct: after a yes, the helper's id, to the inviting bot only
ALERT = "alert"  # room: a coordinator forwarded a phone-tree alert (its text; never the caller)
TYPES = (POD, NEED, CLAIM, CLOSE, WITHDRAW, ANSWER, HELPER, ALERT, LEFT)
DIRECT_TYPES = (ANSWER, HELPER)

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER_ID = re.compile(r"@[^\s:@]{1,200}:[A-Za-z0-9.\-\[\]:]{1,200}")
_LABEL = re.compile(r"[eE](\d{1,9})")

MAX_ALERT_TEXT = phone_tree.MAX_ALERT  # characters of a forwarded alert: the tree's own bound

DEFAULT_DELAY_HOURS = 24.0
DEFAULT_URGENT_DELAY_HOURS = 2.0
MIN_DELAY_HOURS = 0.0005  # about two seconds: tests use short delays


class Malformed(ValueError):
    """A network message that cannot be used; the reason names a field, never its value."""


@dataclass(frozen=True)
class NetworkMessage:
    type: str
    id: str  # the escalation (or, for POD, the pod's token)
    v: int
    pod: str | None = None  # the sending pod's token (NEED, POD, CLAIM)
    name: str | None = None  # a pod's name (NEED, POD)
    zones: tuple[str, ...] = ()  # POD
    category: Category | None = None
    urgency: Urgency | None = None
    zone: str | None = None
    claim: str | None = None  # CLAIM, WITHDRAW, ANSWER, HELPER
    yes: bool | None = None  # ANSWER
    person: str | None = None  # HELPER
    text: str | None = None  # ALERT: what the coordinator chose to share
    urgent: bool | None = None  # ALERT
    reply: bool = False  # POD: an answer to a pod new to the sender's bot (never answered)


def _token(data: dict, field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise Malformed(f"{field} is missing or not a token")
    return value


def _pod_name(data: dict) -> str:
    try:
        return pods.clean_name(data.get("name") if isinstance(data.get("name"), str) else "")
    except pods.PodRuleError:
        raise Malformed("name is missing or not a pod name") from None


def _zone(value: object) -> str | None:
    """A zone as another pod named it; anything that is not a plain area counts as none."""
    if not isinstance(value, str):
        return None
    try:
        return pods.clean_zone(value)
    except pods.PodRuleError:
        return None


def parse(payload: str) -> NetworkMessage | None:
    """The message in a payload (JSON text); None for a type this version does not know.

    Raises Malformed for anything oversized, not JSON, or missing what its type needs."""
    if len(payload.encode()) > MAX_BYTES:
        raise Malformed("oversized")
    try:
        data = json.loads(payload)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("not an object")
    version = data.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise Malformed("v is missing or not a version")
    kind = data.get("type")
    if kind not in TYPES:
        return None
    common = dict(type=kind, id=_token(data, "id"), v=version)
    if kind == POD:
        zones = data.get("zones")
        cleaned = tuple(z for z in (map(_zone, zones) if isinstance(zones, list) else ()) if z)
        return NetworkMessage(**common, name=_pod_name(data), zones=cleaned[:pods.MAX_ZONES],
                              reply=data.get("reply") is True)
    if kind == LEFT:
        return NetworkMessage(**common)
    if kind == NEED:
        category = data.get("category")
        urgency = data.get("urgency")
        if not isinstance(urgency, int) or isinstance(urgency, bool):
            raise Malformed("urgency is missing or not a number")
        return NetworkMessage(
            **common, pod=_token(data, "pod"), name=_pod_name(data),
            # A category a newer bot knows and this one does not is still a need: "other".
            category=Category(category) if category in set(Category) else Category.OTHER,
            urgency=Urgency(min(max(urgency, 0), max(Urgency))), zone=_zone(data.get("zone")))
    if kind == ALERT:
        return _alert(data, common)
    if kind == CLOSE:
        # The claim the requester accepted, if any: that offer goes on (its answer may come
        # after the close, by another room).
        claim = data.get("claim")
        return NetworkMessage(**common, claim=claim if isinstance(claim, str)
                              and _TOKEN.fullmatch(claim) else None)
    claim = _token(data, "claim")
    if kind == CLAIM:
        return NetworkMessage(**common, claim=claim, pod=_token(data, "pod"), name=_pod_name(data))
    if kind == WITHDRAW:
        return NetworkMessage(**common, claim=claim)
    if kind == ANSWER:
        if not isinstance(data.get("yes"), bool):
            raise Malformed("yes is missing or not true/false")
        return NetworkMessage(**common, claim=claim, yes=data["yes"])
    person = data.get("person")
    if not isinstance(person, str) or not _USER_ID.fullmatch(person):
        raise Malformed("person is missing or not a Matrix user id")
    return NetworkMessage(**common, claim=claim, person=person)


def _alert(data: dict, common: dict) -> NetworkMessage:
    """An alert: its pod, the pod's name, whether urgent and the text, bounded (a text with
    nothing in it, or longer than a pod may send, is refused rather than cut)."""
    text, urgent = data.get("text"), data.get("urgent")
    if not isinstance(urgent, bool):
        raise Malformed("urgent is missing or not true/false")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_ALERT_TEXT:
        raise Malformed("text is missing, empty or too long")
    return NetworkMessage(**common, pod=_token(data, "pod"), name=_pod_name(data),
                          text=text.strip(), urgent=urgent)


def _json(kind: str, id: str, fields: dict[str, object]) -> str:
    assert kind in TYPES, kind
    data = {"v": VERSION, "type": kind, "id": id}
    data |= {k: v for k, v in fields.items() if v is not None}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def fits(kind: str, id: str, **fields: object) -> bool:
    """Whether a message stays within MAX_BYTES: a person's text (an alert's) may not, since
    JSON writes a symbol such as an emoji as up to 12 bytes."""
    return len(_json(kind, id, fields).encode()) <= MAX_BYTES


def payload(kind: str, id: str, **fields: object) -> str:
    """The JSON text of a message of this version (None fields left out)."""
    text = _json(kind, id, fields)
    assert len(text.encode()) <= MAX_BYTES
    return text


def to_room(room_id: str, body: str, kind: str, id: str, **fields: object) -> Outgoing:
    """A message into a network room: `body` for people reading along, the payload for bots."""
    return Outgoing(render("{body}", body=body), room_id=room_id,
                    network=payload(kind, id, **fields))


def to_bot(bot: str, kind: str, id: str, **fields: object) -> Outgoing:
    """A message for one other bot only, in their encrypted direct chat."""
    said = {ANSWER: "The requester answered claim {claim}.",
            HELPER: "The helper for claim {claim} is {person}."}[kind]
    # The helper's id is in the body too, so that !forgetme finds the message while it waits.
    return Outgoing(render(said, claim=fields["claim"], person=fields.get("person", "")),
                    user_id=bot, network=payload(kind, id, **fields))


# ---- trust --------------------------------------------------------------------------------


def is_pod_bot(sender: str, trusted: list[str], me: str | None) -> bool:
    """Only the accounts the operator listed as pod bots are listened to (never the bot itself:
    its own messages are not news)."""
    return sender != me and sender in trusted


# ---- labels: how people in another pod name an escalated need ----------------------------


def label(number: int) -> str:
    return f"E{number}"


def parse_label(text: str) -> int | None:
    """'E14' or 'e14' -> 14; anything else None."""
    found = _LABEL.fullmatch(text.strip())
    return int(found.group(1)) if found else None


# ---- when a need goes to the network, and how many may --------------------------------------


def parse_delay(text: str) -> float:
    """'24', '2h', '0.5 h' -> hours; ValueError for anything else."""
    cleaned = text.strip().lower().removesuffix("hours").removesuffix("h").strip()
    hours = float(cleaned)
    if not MIN_DELAY_HOURS <= hours <= 24 * 30:
        raise ValueError("out of range")
    return hours


def escalation_due(created_at: datetime, urgency: Urgency, delay_hours: float,
                   urgent_delay_hours: float) -> datetime:
    """When a need still unmatched goes to the pod's networks: sooner when urgent."""
    hours = urgent_delay_hours if urgency is Urgency.TODAY else delay_hours
    return created_at + timedelta(hours=hours)


def _delay_setting(text: str) -> str:
    try:
        return f"{parse_delay(text):g}"
    except ValueError:
        raise room_settings.SettingError(
            "Give the hours, like 24 or 0.5 (up to 720).") from None


ESCALATE_AFTER = room_settings.register(room_settings.Setting(
    key="escalate_after",
    help="Hours an unmatched need waits before it goes to the pod's networks.",
    default=lambda config: f"{DEFAULT_DELAY_HOURS:g}", validate=_delay_setting, example="24"))
ESCALATE_URGENT_AFTER = room_settings.register(room_settings.Setting(
    key="escalate_urgent_after",
    help="Hours an unmatched urgent need waits before it goes to the pod's networks.",
    default=lambda config: f"{DEFAULT_URGENT_DELAY_HOURS:g}", validate=_delay_setting,
    example="2"))


def room_delays(stored: dict[str, str], config: BotConfig) -> tuple[float, float]:
    """(hours, hours when urgent) a room's unmatched needs wait before escalating."""
    return (float(room_settings.value(ESCALATE_AFTER.key, stored, config)),
            float(room_settings.value(ESCALATE_URGENT_AFTER.key, stored, config)))


HOUR = timedelta(hours=1)


def room_left(recent: list[datetime], now: datetime, per_hour: int) -> int:
    """How many more escalations a pod may send (or have shown) in the hour before `now`."""
    return max(0, per_hour - sum(1 for at in recent if now - at < HOUR))


def next_room(recent: list[datetime], now: datetime, per_hour: int) -> datetime | None:
    """When a pod that is at its limit may escalate again (None: it is not at its limit)."""
    inside = sorted(at for at in recent if now - at < HOUR)
    if len(inside) < per_hour:
        return None
    return inside[len(inside) - per_hour] + HOUR


def alert_text(name: str, text: str, urgent: bool) -> str:
    """'Alert from the Elm Street pod (urgent): …': how a forwarded alert reads elsewhere."""
    return f"Alert from the {name} pod{' (urgent)' if urgent else ''}: {text}"


def need_text(name: str, category: Category, urgency: Urgency, zone: str | None) -> str:
    """'Elm Street pod needs food (urgent, north)': all any pod learns of a need."""
    details = ", ".join(part for part in (urgency.label, zone) if part)
    return f"{name} pod needs {category.value} ({details})"
