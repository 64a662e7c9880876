"""A fake transport at the seam: the real app, storage and handlers, with sends captured."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from bot.actions import tag_mark
from bot.app import App
from bot.commands.privacy import carry_out_erasures
from bot.config import BotConfig
from bot.messages import DeliveryError, Event, Incoming, Outgoing, Redaction, RoomRequest
from bot.storage import Storage

POD = "!pod:test"
ALICE = "@alice:test"
BOB = "@bob:test"
CAROL = "@carol:test"
DM = "!dm-alice:test"
SECRET = "insulin pickup at 12 Elm Street"  # a private detail that must never leak


@dataclass
class FakeTransport:
    sent: list[Outgoing] = field(default_factory=list)
    power_levels: dict[str, int] = field(default_factory=dict)
    txn_ids: list[str] = field(default_factory=list)
    # Rooms made: (name, invitees); invitations into a room an earlier attempt made.
    private_rooms: list[tuple[str, list[str]]] = field(default_factory=list)
    invites: list[tuple[str, str]] = field(default_factory=list)
    # The homeserver's side: the room each tag was made with (what a sync would show the bot).
    tags: dict[str, str] = field(default_factory=dict)
    # Faults for the next make_room calls, in order: ("before", error) fails making nothing,
    # ("after", error) makes the room and then fails (as Synapse does when an invite fails).
    room_faults: list[tuple[str, BaseException]] = field(default_factory=list)
    # People whose homeserver is down: a room inviting them is made, then the invite fails.
    unreachable: set[str] = field(default_factory=set)
    syncs: int = 0
    app: App | None = None
    # room id -> joined members (besides the bot), for rooms_with / members
    rooms: dict[str, list[str]] = field(default_factory=dict)
    # Encrypted rooms the bot can join by address (network rooms): address -> room id.
    joinable: dict[str, str] = field(default_factory=dict)

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        self.sent.append(out)
        self.txn_ids.append(txn_id)
        return f"$sent{len(self.sent)}"

    def power_level(self, room_id: str, user_id: str) -> int:
        return self.power_levels.get(user_id, 0)

    def members(self, room_id: str) -> list[str]:
        return list(self.rooms.get(room_id, []))

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        return [(room_id, f"Pod {room_id}") for room_id, people in self.rooms.items()
                if user_id in people]

    @property
    def redactions(self) -> list[tuple[str | None, str]]:
        return [(o.room_id, o.redacts) for o in self.sent if o.redacts]

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        # The point of steps: never a network call while a transaction is open.
        assert not self.app.storage._lock.locked(), "make_room called inside a transaction"
        when, error = self.room_faults.pop(0) if self.room_faults else (None, None)
        if when == "before":
            raise error
        if existing is None:
            self.private_rooms.append((request.name, list(request.invitees)))
            existing = self.tags[request.tag] = f"!private{len(self.private_rooms)}:test"
        else:
            self.invites += [(existing, user_id) for user_id in request.invitees]
        if error is not None:
            raise error
        if self.unreachable & set(request.invitees):
            raise DeliveryError("M_UNKNOWN Can't connect to their server")
        return existing

    async def join_room(self, address: str) -> str:
        """Rooms in `joinable` are encrypted; any other address is a room in clear, refused."""
        assert not self.app.storage._lock.locked(), "join_room called inside a transaction"
        if address not in self.joinable:
            raise DeliveryError("the room is not end-to-end encrypted", permanent=True)
        return self.joinable[address]

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        await self.sync()

    async def sync(self) -> None:
        """What a sync does for steps: the tagged rooms are recorded."""
        self.syncs += 1
        await self.app.receive([], marks={tag_mark(tag): room for tag, room in self.tags.items()})

    def identity_unconfirmed(self, user_id: str) -> bool:
        return False

    async def confirm_identity(self, user_id: str) -> bool:
        return False


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class Pod:
    app: App
    storage: Storage
    transport: FakeTransport
    clock: Clock
    _events: count = field(default_factory=lambda: count(1))

    async def say(self, sender: str, text: str, room: str = POD, direct: bool = False) -> list[Outgoing]:
        """Send one message as `sender`; return everything the bot sent because of it."""
        event_id = f"$ev{next(self._events)}"
        return await self.receive(Incoming(event_id, room, sender, text, direct, self.clock()))

    async def redact(self, sender: str, event_id: str, room: str = POD) -> list[Outgoing]:
        """`sender` deletes their event `event_id`; everything the bot sent because of it."""
        return await self.receive(Redaction(f"$ev{next(self._events)}", room, sender, event_id,
                                            False, self.clock()))

    async def receive(self, event: Event) -> list[Outgoing]:
        before = len(self.transport.sent)
        await self.app.receive([event])
        await self.settle()
        return self.transport.sent[before:]

    async def settle(self) -> None:
        """Handle what was received and deliver the replies; then carry out a confirmed
        !forgetme and deliver its answer, as the bot's housekeeping task does at once."""
        await self.app.run_until_idle()
        if await carry_out_erasures(self.storage, self.clock):
            await self.app.run_until_idle()

    async def reply_to(self, sender: str, text: str, **kwargs: object) -> str:
        """The body of the single reply to this message."""
        sent = await self.say(sender, text, **kwargs)
        replies = [o for o in sent if o.reply_to is not None]
        assert len(replies) == 1, [o.message.body for o in sent]
        return replies[0].message.body


@pytest.fixture
async def pod(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    transport = FakeTransport()
    clock = Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    app = App(storage, BotConfig(), transport, clock=clock)
    transport.app = app
    yield Pod(app, storage, transport, clock)
    await app.stop()
    await storage.close()


@pytest.fixture
def pod_rooms(pod):
    """The pod with alice, bob and carol as members, and alice's direct chat with the bot."""
    pod.transport.rooms[POD] = [ALICE, BOB, CAROL]
    pod.transport.rooms[DM] = [ALICE]
    return pod
