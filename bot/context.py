"""The seam between transports (Matrix, console, tests) and command handlers.

Handlers see a `Context`: who spoke, where, what they typed, and ways to answer. Answers are not
sent at once: they are collected and written to the outbox in the same database transaction as the
command's effects, then delivered by the app. That is what makes a command's effect and its reply
happen exactly once, even if the bot is killed in between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bot.actions import request_room
from bot.formatting import render
from bot.messages import Attachment, Incoming, Outgoing, Rendered, RoomRequest

if TYPE_CHECKING:
    from bot.commands import Registry
    from bot.config import BotConfig
    from bot.storage import Transaction

__all__ = ["Attachment", "Context", "Incoming", "Outgoing", "Transport"]


class Transport(Protocol):
    """What the app needs from a chat network. Only transports talk to the network."""

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        """Send one message; `txn_id` is stable across retries so a resend is not duplicated."""

    def power_level(self, room_id: str, user_id: str) -> int: ...

    def members(self, room_id: str) -> list[str]:
        """The people who have joined the room (not those only invited)."""
        ...

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        """Create a private encrypted room carrying `request.tag` in its state and inviting
        `request.invitees`; given `existing` (a room an earlier attempt made, found by its tag),
        only invite whoever is not in it yet. Raises DeliveryError; the room may exist even then.
        """
        ...

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        """Return once a sync begun after `moment` (time.monotonic()) is stored, so that a room
        made before it has been seen; DeliveryError if none is in within `timeout` seconds."""
        ...

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        """(room id, display name) of every room both the bot and the person have joined."""
        ...

    def identity_unconfirmed(self, user_id: str) -> bool:
        """Whether the person's safety number changed and they have not confirmed it yet."""
        ...

    async def confirm_identity(self, user_id: str) -> bool:
        """The person confirmed their new safety number (opens its own transaction)."""
        ...


class Runtime(Protocol):
    """What commands may know about the running bot (for !status)."""

    started_at: float  # Unix time

    def sync_age(self) -> float:
        """Seconds since the transport last caught up with its network (-1: not yet)."""
        ...


@dataclass
class Context:
    sender: str
    room_id: str
    is_direct: bool
    text: str
    event_id: str
    now: datetime
    tx: Transaction  # the transaction the command runs in
    config: BotConfig
    transport: Transport
    registry: Registry  # the commands and hooks of this running bot
    runtime: Runtime | None = None
    outgoing: list[Outgoing] = field(default_factory=list)
    # Run by the app once the command's transaction is committed: work that opens a transaction
    # of its own (a transport confirming a safety number).
    after_commit: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # Set when the handler asked for a network step (a room): the step runner looks once the
    # command's transaction is committed.
    steps_requested: bool = False
    # Set when shifts, sign-ups or schedule settings changed: the scheduler re-plans its next
    # wake-up once the transaction is committed.
    schedule_changed: bool = False

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

    async def request_room(self, *, key: str, name: str, invitees: list[str], then: str,
                           purpose: str, pod_room: str | None = None,
                           data: dict[str, object] | None = None,
                           power_levels: dict[str, int] | None = None) -> None:
        """Ask for a private room, made after this command is committed (see bot/actions.py);
        the followup registered as `then` runs when it exists, or when it cannot be made."""
        await request_room(self.tx, key=key, name=name, invitees=invitees, then=then,
                           purpose=purpose, now=self.now, pod_room=pod_room, data=data,
                           power_levels=power_levels)
        self.steps_requested = True

    def power_level(self, user_id: str | None = None) -> int:
        return self.transport.power_level(self.room_id, user_id or self.sender)


def _as_rendered(template: str | Rendered, values: dict[str, object]) -> Rendered:
    return template if isinstance(template, Rendered) else render(template, **values)
