"""The front door: rules for requests from people who share no pod room with the bot. Pure.

Anyone may open a direct chat with the bot (`matrix.direct_chat_inviters`). Someone in no pod
is asked for their area, from the zones the bot's pods cover; `route` says which pod gets the
request. It is the one place that decides, so that a request from an area no pod covers can
later go to a network of pods instead of the configured default pod. A per-person limit keeps one
person from flooding the pods (`limit_reply`); coordinators can `!block` a sender.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from bot.pods import PodProfile

DAY = timedelta(days=1)


class Coverage(BaseModel):
    """Where a front-door request can go: what the bot's pods cover, and the fallback."""

    areas: dict[str, list[str]] = {}  # zone -> the pod rooms that list it, in a stable order
    names: dict[str, str] = {}  # pod room -> the name the person is shown
    fallback: str | None = None  # the pod room for an area no pod covers (config)

    @property
    def zones(self) -> list[str]:
        """The areas to offer, as a numbered list: alphabetical."""
        return sorted(self.areas)


def coverage(profiles: Iterable[PodProfile], fallback: PodProfile | None) -> Coverage:
    """What the pods cover; pods are taken in room-id order so the same zone always goes to the
    same pod."""
    areas: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for profile in sorted(profiles, key=lambda p: p.room_id):
        for zone in profile.zones:
            areas.setdefault(zone, []).append(profile.room_id)
        names[profile.room_id] = profile.name or "a pod"
    if fallback is not None:
        names[fallback.room_id] = fallback.name or "a pod"
    return Coverage(areas=areas, names=names,
                    fallback=fallback.room_id if fallback is not None else None)


@dataclass(frozen=True)
class Route:
    """Where one front-door request goes."""

    room_id: str
    zone: str | None
    covered: bool  # False: no pod covers the zone; it goes to the fallback (to be escalated)


def route(zone: str | None, where: Coverage) -> Route | None:
    """The pod that gets a request from `zone`: the first that covers it, else the fallback;
    None when there is nowhere to send it."""
    covering = where.areas.get(zone or "", [])
    if covering:
        return Route(covering[0], zone, covered=True)
    if where.fallback is not None:
        return Route(where.fallback, zone, covered=False)
    return None


@dataclass(frozen=True)
class Limits:
    max_open: int
    max_per_day: int


def limit_reply(open_now: int, made: list[datetime], limits: Limits, now: datetime) -> str | None:
    """Why the person may not make another request now (a friendly sentence), or None.

    `open_now`: their requests still open or being handled; `made`: when they made each of
    their requests (any age; only the last 24 hours count)."""
    if limits.max_open == 0 or limits.max_per_day == 0:
        return ("I am not taking requests from outside the pods at the moment. If you know "
                "someone in a mutual-aid pod, they can ask for you.")
    if open_now >= limits.max_open:
        return (f"You already have {open_now} requests open, the most I can pass on for one "
                "person at a time. When one is done or withdrawn (send !cancel and its number "
                "here), you can ask again.")
    recent = sorted(at for at in made if now - at < DAY)
    if len(recent) >= limits.max_per_day:
        wait = recent[len(recent) - limits.max_per_day] + DAY - now
        hours = max(1, -(-int(wait.total_seconds()) // 3600))
        return (f"You have made {len(recent)} requests in the last day, the most I can pass on "
                f"for one person. You can ask again in about {hours} hour"
                f"{'s' if hours != 1 else ''}.")
    return None
