"""The seam between transports (Matrix, console, tests) and command handlers.

Handlers see a `Context`: who spoke, where, what they typed, and ways to answer. Answers are not
sent at once: they are collected and written to the outbox in the same database transaction as the
command's effects, then delivered by the app. That is what makes a command's effect and its reply
happen exactly once, even if the bot is killed in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bot.formatting import Rendered, render

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.storage import Storage


@dataclass(frozen=True)
class Attachment:
    filename: str
    mimetype: str
    data: bytes


@dataclass(frozen=True)
class Outgoing:
    """One message to deliver: to a room, or privately to a person (room_id None)."""

    message: Rendered
    room_id: str | None = None
    user_id: str | None = None
    reply_to: str | None = None
    attachment: Attachment | None = None
    redacts: str | None = None  # not a message: redact the bot's own event with this id in room_id


# An Incoming whose text starts with this is not a message: the sender redacted the event whose id
# follows. Transports never pass a typed message starting with a NUL character.
REDACTION_PREFIX = "\x00redacted "


@dataclass(frozen=True)
class Incoming:
    """A command-looking message as a transport saw it."""

    event_id: str
    room_id: str
    sender: str
    text: str
    is_direct: bool
    timestamp: datetime


class Transport(Protocol):
    """What the app needs from a chat network. Only transports talk to the network."""

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        """Send one message; `txn_id` is stable across retries so a resend is not duplicated."""

    def power_level(self, room_id: str, user_id: str) -> int: ...

    def members(self, room_id: str) -> list[str]: ...

    async def create_private_room(self, name: str, invitees: list[str]) -> str: ...

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        """(room id, display name) of every room both the bot and the person have joined."""
        ...


@dataclass
class Context:
    sender: str
    room_id: str
    is_direct: bool
    text: str
    event_id: str
    now: datetime
    storage: Storage
    config: BotConfig
    transport: Transport
    outgoing: list[Outgoing] = field(default_factory=list)
    # Set when the handler changed something outside the database (created a room): its
    # transaction is committed straight after it, so a crash cannot make it run again.
    acted_outside: bool = False

    async def reply(self, template: str | Rendered, **values: object) -> None:
        self.outgoing.append(
            Outgoing(_as_rendered(template, values), room_id=self.room_id, reply_to=self.event_id)
        )

    async def send(self, room_id: str, template: str | Rendered, **values: object) -> None:
        self.outgoing.append(Outgoing(_as_rendered(template, values), room_id=room_id))

    async def dm(self, user_id: str, template: str | Rendered, **values: object) -> None:
        self.outgoing.append(Outgoing(_as_rendered(template, values), user_id=user_id))

    async def attach(self, attachment: Attachment, caption: str) -> None:
        self.outgoing.append(
            Outgoing(render(caption), room_id=self.room_id, reply_to=self.event_id, attachment=attachment)
        )

    async def create_private_room(self, name: str, invitees: list[str]) -> str:
        self.acted_outside = True
        return await self.transport.create_private_room(name, invitees)

    def power_level(self, user_id: str | None = None) -> int:
        return self.transport.power_level(self.room_id, user_id or self.sender)


def _as_rendered(template: str | Rendered, values: dict[str, object]) -> Rendered:
    return template if isinstance(template, Rendered) else render(template, **values)
