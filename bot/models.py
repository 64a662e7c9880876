"""Plain data the whole bot shares. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict


class PostKind(StrEnum):
    NEED = "need"
    OFFER = "offer"

    @property
    def opposite(self) -> PostKind:
        return PostKind.OFFER if self is PostKind.NEED else PostKind.NEED


class PostStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    DONE = "done"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Category(StrEnum):
    FOOD = "food"
    TRANSPORT = "transport"
    CHILDCARE = "childcare"
    HOUSING = "housing"
    MEDICAL = "medical"
    TOOLS = "tools"
    SKILLS = "skills"
    MONEY = "money"
    OTHER = "other"


class Urgency(IntEnum):
    """Higher is more urgent; the matcher ranks on it."""

    WHENEVER = 0
    THIS_WEEK = 1
    TODAY = 2

    @property
    def label(self) -> str:
        return {0: "whenever", 1: "this week", 2: "urgent"}[self.value]


class ParsedPost(BaseModel):
    """What `!need ...` / `!offer ...` text means, before it is stored."""

    model_config = ConfigDict(frozen=True)

    category: Category
    urgency: Urgency
    what: str  # the first word(s) as typed, for display
    text: str  # everything the person typed after the command, exactly


@dataclass(frozen=True, slots=True)
class Post:
    """A stored need or offer. A plain dataclass, not pydantic: every Post is built from the
    bot's own database row (three per match, one per listing line), where validation would only
    cost time (7 us a post with pydantic's model_construct)."""

    id: int  # database id, global
    room_id: str
    number: int  # short id shown to people, per room (#7)
    kind: PostKind
    author: str  # Matrix user id
    category: Category
    urgency: Urgency
    text: str
    status: PostStatus
    created_at: datetime
    claimed_by: str | None = None
    private: bool = False  # came through DM intake: details never shown in the pod room
    anonymous: bool = False
    details_shown: bool = False  # a private request whose author chose to show the details
    event_id: str | None = None  # the command message; redacting it cancels the post
    zone: str | None = None  # the part of the pod's area it is in, if the pod uses zones
    claimed_at: datetime | None = None  # when it was (last) claimed: the time to match ends here
    # The latest it waits to go to the pod's networks (a front-door request from an area no pod
    # covers: at once); None: the pod's delay (bot/pod_network.py).
    escalate_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """A new post paired with an older open post of the opposite kind."""

    new: Post
    other: Post
