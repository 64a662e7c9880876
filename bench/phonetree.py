"""A phone-tree alert through a real Synapse: how long until every member has it, and until every
member has confirmed.

One run starts its own Synapse (bot/devserver.py) with Synapse's default message rate limits, the
bot as a process, and N members (default 100) as E2EE matrix-nio clients, each with an existing
direct chat with the bot (opened, and answered once, before the clock starts). The bot's account
is exempted from the message rate limit through the admin API (`--not-exempt` lifts the exemption
once set up, before the alert, to see the paced path; use fewer members then: Synapse's default
is 0.2 messages/s after a burst of 10).

Members are put on the tree as rows in the bot's database (`tree_members`) rather than by 100
`!tree join` messages: a hundred new devices speaking in one encrypted room cost ten thousand
room-key shares, which measures Synapse's key handling, not the phone tree.

The clock starts when the coordinator sends `!alert` in the pod room. Each member answers `ok`
as soon as the alert decrypts in its DM. Reported: seconds until the last member received the
alert (target: 30 s for 100) and until the last received the bot's thanks, and the figures the
bot itself told the caller. Prints them and writes bench/results/phonetree.json.

    python bench/phonetree.py [--members 100] [--not-exempt] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nio import MegolmEvent, RoomMessage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_results  # noqa: E402
from bench.roundtrip import MEGOLM, Client, start_process  # noqa: E402
from bot.devserver import Synapse, synapse_python  # noqa: E402

TARGET_REACHED_S = 30.0
_PARALLEL_SETUP = 10  # members set up at once


class Member:
    """A member's client, listening in its DM with the bot: it answers the alert with `ok`."""

    def __init__(self, client: Client, bot_id: str, progress: asyncio.Event) -> None:
        self.client = client
        self.progress = progress  # set whenever a marker arrives
        self.bot_id = bot_id
        self.dm = ""
        self.seen: dict[str, float] = {}  # first words of bot messages -> when they arrived
        self.bodies: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._late: list[MegolmEvent] = []

    async def _on_message(self, room: Any, event: RoomMessage) -> None:
        if event.sender != self.bot_id or not hasattr(event, "body"):
            return
        self.bodies.append(event.body)
        for marker in ("Phone tree alert", "confirmation is recorded", "reached in",
                       "everyone confirmed", "limiting how fast"):
            if marker in event.body and marker not in self.seen:
                self.seen[marker] = time.monotonic()
                self.progress.set()
                if marker == "Phone tree alert":
                    asyncio.get_running_loop().create_task(self.client.send(room.room_id, "ok"))

    def listen(self) -> None:
        c = self.client.client
        c.add_event_callback(self._on_message, RoomMessage)
        c.add_event_callback(lambda room, event: self._late.append(event), MegolmEvent)

        async def loop() -> None:
            while True:
                try:
                    await self.client.sync(timeout_ms=30_000)
                except Exception as exc:  # noqa: BLE001 - keep listening
                    print(f"listener: {type(exc).__name__}: {exc}", file=sys.stderr)
                    await asyncio.sleep(1)
                    continue
                still = []
                for event in self._late:
                    try:
                        decrypted = c.decrypt_event(event)
                    except Exception:  # noqa: BLE001 - its key is not here yet
                        still.append(event)
                        continue
                    if isinstance(decrypted, RoomMessage):
                        await self._on_message(c.rooms.get(event.room_id), decrypted)
                self._late = still

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close()


async def _sync_until(client: Client, ready: Any, what: str, timeout: float = 120) -> None:
    """Sync until `ready()` (given the client's rooms) holds."""
    deadline = time.monotonic() + timeout
    while not ready(client.client.rooms):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.client.user_id}: no {what} after {timeout:.0f}s")
        await client.sync(1000)


async def _share_keys(client: Client, room: str) -> None:
    """Olm sessions with every device in the room, so the first send shares its room key."""
    c = client.client
    if c.should_query_keys:
        await c.keys_query()
    missing = c.get_missing_sessions(room)
    if missing:
        await c.keys_claim(missing)


async def _open_dm(member: Member, synapse: Synapse) -> None:
    """An existing DM: the member opens it and the bot answers once (its room key is shared)."""
    c = member.client.client
    created = await c.room_create(is_direct=True, invite=[member.bot_id], initial_state=[MEGOLM])
    member.dm = created.room_id
    await _sync_until(member.client, lambda rooms: member.dm in rooms and member.bot_id in rooms[member.dm].users,
                      "bot join")
    for _ in range(3):  # a !help whose key went missing gets no answer: ask again
        await _share_keys(member.client, member.dm)
        await member.client.send(member.dm, "!help")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("!need" in b for b in member.bodies):
            await member.client.sync(1000)
        if any("!need" in b for b in member.bodies):
            return
    raise TimeoutError(f"{c.user_id}: the bot never answered in the DM")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mab-phonetree-"))
    synapse = Synapse(work / "synapse", synapse_python(), rate_limited=True)
    await synapse.start()
    proc = None
    members: list[Member] = []
    coordinator: Member | None = None
    try:
        proc, bot_id = await start_process("mab", synapse, work / "bot")
        await synapse.exempt_from_rate_limits(bot_id)  # setting up is not what is measured
        slots = asyncio.Semaphore(_PARALLEL_SETUP)
        progress = asyncio.Event()

        async def member(name: str) -> Member:
            async with slots:
                m = Member(await Client.login(synapse, name, work / "people" / name), bot_id,
                           progress)
                m.client.client.add_event_callback(m._on_message, RoomMessage)
                await _open_dm(m, synapse)
                return m

        setup_started = time.monotonic()
        coordinator = await member("coordinator")
        members = list(await asyncio.gather(*(member(f"m{i}") for i in range(args.members))))
        cc = coordinator.client.client
        room = (await cc.room_create(name="Phone tree bench", initial_state=[MEGOLM],
                                     invite=[bot_id])).room_id
        await _sync_until(coordinator.client, lambda rooms: room in rooms and bot_id in rooms[room].users,
                          "bot join")
        await _share_keys(coordinator.client, room)
        await coordinator.client.send(room, "hello")  # the room key, shared before the clock
        stamp = datetime.now(UTC).isoformat()
        with sqlite3.connect(work / "bot" / "mutual-aid-bot.db", timeout=30) as db:
            db.executemany("INSERT INTO tree_members (room_id, person, joined_at) VALUES (?, ?, ?)",
                           [(room, m.client.client.user_id, stamp) for m in members])
        print(f"set up {args.members} members in {time.monotonic() - setup_started:.0f} s")
        for m in (coordinator, *members):
            m.client.client.event_callbacks.clear()
            m.listen()

        if args.not_exempt:
            await synapse.exempt_from_rate_limits(bot_id, exempt=False)
        started = time.monotonic()
        await coordinator.client.send(room, "!alert Bench: eviction defence at 7am, 14 Elm St")
        deadline = started + args.timeout
        while not (all("confirmation is recorded" in m.seen for m in members)
                   and "everyone confirmed" in coordinator.seen):
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        reached = [m.seen.get("Phone tree alert") for m in members]
        thanked = [m.seen.get("confirmation is recorded") for m in members]
        told = {re.sub(r"\*\*", "", b) for b in coordinator.bodies if "Phone tree:" in b}
        report: dict[str, Any] = {
            "members": args.members,
            "bot_exempt_from_rate_limits": not args.not_exempt,
            "reached": sum(t is not None for t in reached),
            "confirmed": sum(t is not None for t in thanked),
            "seconds_until_all_reached": _last(reached, started),
            "seconds_until_all_confirmed": _last(thanked, started),
            "caller_told": sorted(told),
            "target_reached_s": TARGET_REACHED_S,
            "machine": machine(),
        }
        report["target_met"] = (report["reached"] == args.members
                                and report["seconds_until_all_reached"] <= TARGET_REACHED_S)
        return report
    finally:
        for m in ([coordinator] if coordinator else []) + members:
            await m.stop()
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await synapse.stop()
        shutil.rmtree(work, ignore_errors=True)


def _last(times: list[float | None], started: float) -> float | None:
    if not times or any(t is None for t in times):
        return None
    return round(max(times) - started, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--not-exempt", action="store_true",
                        help="leave the bot under Synapse's default message rate limit")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    for key in ("members", "bot_exempt_from_rate_limits", "reached", "confirmed",
                "seconds_until_all_reached", "seconds_until_all_confirmed", "target_met"):
        print(f"{key:32} {report[key]}")
    for line in report["caller_told"]:
        print(f"caller was told: {line}")
    write_results("phonetree" if not args.not_exempt else "phonetree_rate_limited", report)
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
