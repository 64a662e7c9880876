"""The front door: rules for requests from people who share no pod room with the bot. Pure.

Anyone may open a direct chat with the bot (`matrix.direct_chat_inviters`). Someone in no pod
is asked for their area, from the zones the bot's pods cover and those the other pods in the
fallback pod's networks announced; `route` says which pod gets the request. A request from an
area none of the bot's pods covers is recorded in the fallback pod (config `[front_door]
default_pod`) and, when that pod is in a network, goes to the network at once rather than after
the pod's delay (`escalates_at_once`), so that the pods nearby hear of it. A per-person limit
keeps one person from flooding the pods (`limit_reply`); coordinators can `!block` a sender.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from bot.pods import PodProfile

DAY = timedelta(days=1)
MAX_AREAS = 40  # the most areas offered as a list: other pods' zones are cut first


class Coverage(BaseModel):
    """Where a front-door request can go: what the bot's pods cover, and the fallback."""

    areas: dict[str, list[str]] = {}  # zone -> the pod rooms that list it, in a stable order
    names: dict[str, str] = {}  # pod room -> the name the person is shown
    fallback: str | None = None  # the pod room for an area no pod covers (config)
    # The fallback pod is in a network: an uncovered request goes there at once. `nearby`: the
    # zones other pods in those networks announced (offered too; routed like any uncovered one).
    networked: bool = False
    nearby: list[str] = []

    @property
    def zones(self) -> list[str]:
        """The areas to offer, as a numbered list: alphabetical."""
        return sorted(set(self.areas) | set(self.nearby))


def coverage(profiles: Iterable[PodProfile], fallback: PodProfile | None,
             nearby: Iterable[str] = (), networked: bool = False) -> Coverage:
    """What the pods cover; pods are taken in room-id order so the same zone always goes to the
    same pod. `nearby` and `networked`: the fallback pod's networks (none without a fallback)."""
    areas: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for profile in sorted(profiles, key=lambda p: p.room_id):
        for zone in profile.zones:
            areas.setdefault(zone, []).append(profile.room_id)
        names[profile.room_id] = profile.name or "a pod"
    if fallback is None:
        return Coverage(areas=areas, names=names)
    names[fallback.room_id] = fallback.name or "a pod"
    # A long list helps nobody: the bot's own pods' zones first, then as many others as fit.
    others = sorted(set(nearby) - set(areas))[:max(0, MAX_AREAS - len(areas))]
    return Coverage(areas=areas, names=names, fallback=fallback.room_id,
                    networked=networked, nearby=others)


@dataclass(frozen=True)
class Route:
    """Where one front-door request goes."""

    room_id: str
    zone: str | None
    covered: bool  # False: none of the bot's pods covers the zone; it goes to the fallback
    networked: bool = False  # uncovered, and the fallback is in a network: it goes there at once

    @property
    def escalates_at_once(self) -> bool:
        """Whether the request goes to the fallback pod's networks at once, not after the
        pod's delay: nobody at home covers the area, so waiting would only keep the pods that
        might be near from hearing of it."""
        return not self.covered and self.networked


def route(zone: str | None, where: Coverage) -> Route | None:
    """The pod that gets a request from `zone`: the first that covers it, else the fallback;
    None when there is nowhere to send it."""
    covering = where.areas.get(zone or "", [])
    if covering:
        return Route(covering[0], zone, covered=True)
    if where.fallback is not None:
        return Route(where.fallback, zone, covered=False, networked=where.networked)
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
