"""Plain message types shared by transports, the app, handlers and storage.

They live here, below everything that uses them, so that storage never imports the command or
context layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: plain body, HTML, and who it deliberately mentions."""

    body: str
    html: str
    mentions: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Attachment:
    filename: str
    mimetype: str
    data: bytes
    # An image's size in pixels: given, it is sent as an image (clients show it inline).
    width: int | None = None
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.width is not None and self.height is not None


@dataclass(frozen=True)
class Outgoing:
    """One message to deliver: to a room, or privately to a person (room_id None)."""

    message: Rendered
    room_id: str | None = None
    user_id: str | None = None
    reply_to: str | None = None
    attachment: Attachment | None = None
    redacts: str | None = None  # not a message: redact the bot's own event with this id in room_id
    # A message to other pods' bots: its payload (JSON text, bot/pod_network.py) travels in the
    # content beside the readable body.
    network: str | None = None

    @property
    def destination(self) -> str:
        """What delivery keeps in order and backs off as one: the room, or the person."""
        return self.room_id if self.room_id is not None else f"person:{self.user_id}"


@dataclass(frozen=True)
class Incoming:
    """A command-looking message as a transport saw it."""

    event_id: str
    room_id: str
    sender: str
    text: str
    is_direct: bool
    timestamp: datetime


@dataclass(frozen=True)
class Redaction:
    """The sender deleted their event `redacts` (Matrix redaction, Signal remote delete)."""

    event_id: str
    room_id: str
    sender: str
    redacts: str
    is_direct: bool
    timestamp: datetime


@dataclass(frozen=True)
class Reaction:
    """The sender reacted to `relates_to` with `key` (an emoji)."""

    event_id: str
    room_id: str
    sender: str
    relates_to: str
    key: str
    is_direct: bool
    timestamp: datetime


@dataclass(frozen=True)
class Edit:
    """The sender replaced the text of their event `replaces` with `text`."""

    event_id: str
    room_id: str
    sender: str
    replaces: str
    text: str
    is_direct: bool
    timestamp: datetime


@dataclass(frozen=True)
class Membership:
    """The sender joined or left the room (the pod's size may have crossed its split size); or,
    from a transport that cannot tell who joined while the bot was stopped (Signal), the bot
    itself at start, so that each room's size is looked at once."""

    event_id: str
    room_id: str
    sender: str
    is_direct: bool
    timestamp: datetime


@dataclass(frozen=True)
class NetworkEvent:
    """A message carrying a network payload (bot/pod_network.py), as received: who sent it is
    checked by the handler, what it says is parsed there."""

    event_id: str
    room_id: str
    sender: str
    payload: str
    is_direct: bool
    timestamp: datetime


# What a transport hands the app, and the inbox keeps until it is handled, exactly once.
Event = Incoming | Redaction | Reaction | Edit | Membership | NetworkEvent


class DeliveryError(Exception):
    """A message could not be delivered.

    `permanent`: it never will be (the bot is not in the room, the room or person is gone, it is
    forbidden); it becomes a dead letter at once. Otherwise delivery to that destination backs
    off, for `retry_after` seconds when the network said how long, and tries again.
    """

    def __init__(self, reason: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after


class FatalTransportError(RuntimeError):
    """A transport cannot go on (bad credentials, a mismatched store, a daemon without the
    account); the message says why, and the bot stops."""


@dataclass(frozen=True)
class RoomRequest:
    """A private, encrypted room the bot is to create (an introduction, a direct chat).

    `tag` is unique to the request and is written into the room's state when it is created, so
    that a room whose creation was not recorded (a crash, a timeout that succeeded anyway, an
    invite that failed after the room was made) is found again instead of made twice.
    """

    tag: str
    name: str | None
    invitees: tuple[str, ...]
    is_direct: bool = False
    # (person, power level) granted when the room is made: a split pod's coordinators.
    power_levels: tuple[tuple[str, int], ...] = ()
