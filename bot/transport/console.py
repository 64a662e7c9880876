"""A terminal chat with the same handlers and a local database: try the bot without a homeserver.

Lines are typed as a named person in one pod room. `/as bob` switches person, `/dm` and `/pod`
switch between a direct chat with the bot and the pod room, `/coord` makes the current person a
coordinator, `/quit` leaves.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.commands.privacy import carry_out_erasures
from bot.config import BotConfig
from bot.messages import DeliveryError, Incoming, Outgoing, RoomRequest
from bot.networks import MATRIX
from bot.runtime import Runtime

POD_ROOM = "!pod:console"
SERVER = "console"

HELP = """Type commands as the current person, e.g. !need groceries for 2, !help.
  /as NAME   speak as someone else (alice, bob, ...)
  /dm        talk to the bot privately      /pod   back to the pod room
  /coord     make the current person a coordinator (power level 50)
  /quit      leave"""


def user_id(name: str) -> str:
    return name if name.startswith("@") else f"@{name}:{SERVER}"


@dataclass
class ConsoleTransport:
    """Stands in for Matrix (its ids are Matrix-shaped) in a terminal."""

    write: Callable[[str], None]
    power_levels: dict[str, int] = field(default_factory=dict)
    people: set[str] = field(default_factory=set)
    network: str = MATRIX
    app: object = None
    secrets: set[str] = field(default_factory=set)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        self.caught_up.set()  # nothing to catch up on in a terminal

    async def run(self) -> None:
        await asyncio.Event().wait()  # lines come from run_console; nothing to listen to

    async def close(self) -> None:
        pass

    def identity_unconfirmed(self, user_id: str) -> bool:
        return False

    async def confirm_identity(self, user_id: str) -> bool:
        return False

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        if out.redacts is not None:
            self.write(f"[bot deleted its message {out.redacts}]")
            return None
        where = f"DM to {out.user_id}" if out.user_id else (
            "pod" if out.room_id == POD_ROOM else f"DM {out.room_id}")
        text = out.message.body
        if out.attachment is not None:
            kind = (f"image {out.attachment.width}x{out.attachment.height}"
                    if out.attachment.is_image else "attachment")
            text += f"\n[{kind} {out.attachment.filename}, {len(out.attachment.data)} bytes]"
        self.write(f"[{where}] bot: " + text.replace("\n", "\n    "))
        return unique_id("$console-out")

    def power_level(self, room_id: str, user_id: str) -> int:
        return self.power_levels.get(user_id, 0)

    def members(self, room_id: str) -> list[str]:
        return sorted(self.people)

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        return [(POD_ROOM, "the pod")] if user_id in self.people else []

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        if existing is not None:
            return existing
        room_id = f"{unique_id('!private')}:{SERVER}"
        self.write(f"[created private room {request.name!r} for {', '.join(request.invitees)}]")
        return room_id

    async def join_room(self, address: str) -> str:
        raise DeliveryError("the console joins no network rooms; use Matrix", permanent=True)

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        return  # nothing to catch up with: rooms are made here, at once


def unique_id(prefix: str) -> str:
    """Ids unique across runs: the database remembers every event it handled, so an id that
    came back on the next run would be taken for an old command and ignored."""
    return f"{prefix}-{uuid.uuid4().hex}"


def dm_room(user: str) -> str:
    return "!dm-" + user.strip("@").replace(":", "-") + ":" + SERVER


async def run_console(config: BotConfig, lines: asyncio.Queue[str | None] | None = None,
                      write: Callable[[str], None] = print) -> int:
    """Read lines (from stdin unless a queue is given) until /quit or end of input."""
    runtime = await Runtime.open(config, background_delivery=False)
    transport = runtime.attach(ConsoleTransport(write))
    app = runtime.app
    await runtime.start()
    person, direct = user_id("alice"), False
    transport.people.add(person)
    write(HELP)
    try:
        while True:
            line = await _next_line(lines, f"{person.split(':')[0][1:]}{' (dm)' if direct else ''}> ")
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line == "/quit":
                break
            if line.startswith("/as "):
                person = user_id(line[4:].strip() or "alice")
                transport.people.add(person)
                write(f"[now speaking as {person}]")
                continue
            if line in ("/dm", "/pod"):
                direct = line == "/dm"
                continue
            if line == "/coord":
                transport.power_levels[person] = config.bot.coordinator_power_level
                write(f"[{person} is now a coordinator]")
                continue
            room = dm_room(person) if direct else POD_ROOM
            await app.receive([Incoming(unique_id("$console-in"), room, person, line, direct,
                                        app.clock())])
            await app.run_until_idle()
            # A confirmed !forgetme is carried out here, as the bot's housekeeping task would.
            if await carry_out_erasures(runtime.storage, app.clock):
                await app.run_until_idle()
            await runtime.reports.idle()
    finally:
        await runtime.close()
    return 0


async def _next_line(lines: asyncio.Queue[str | None] | None, prompt: str) -> str | None:
    if lines is not None:
        return await lines.get()
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = await asyncio.to_thread(sys.stdin.readline)
    return line if line else None
