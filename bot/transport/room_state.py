"""Rooms' state kept across restarts: what a sync changed, as rows (bot/store/rooms.py), and nio's
rooms rebuilt from those rows at start, so that the first sync after a restart is incremental.

nio keeps no room state of its own across restarts, and a full state sync of 1,000 rooms costs the
homeserver several seconds. The rows are stored before the sync token that covers them: after a
crash between the two the same changes come again and are written again, which changes nothing.

Syncs lazy-load members: a homeserver answers a sync for an account in many rooms several times
faster when it need not send every member of every room (Synapse also skips a look-up per room for
such clients). A sync then names only the members behind the events it carries, so a room new to
the bot, or one whose sync skipped events, is read whole (`fill_room`) before its commands run, and
its members are complete again: the bot shares room keys with, and counts, every member.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from itertools import groupby
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    Event,
    LocalProtocolError,
    RoomGetStateResponse,
    RoomInfo,
    RoomMemberEvent,
    SyncResponse,
    Timeline,
)

from bot.storage import Storage
from bot.store.rooms import StateEvent
from bot.turns import let_others_run

log = logging.getLogger(__name__)

# The state nio's rooms are built from and the bot reads (members, power, encryption, the room's
# name); nothing else is kept, whatever else a room's members put in its state.
_KEPT_TYPES = frozenset({"m.room.create", "m.room.member", "m.room.power_levels",
                         "m.room.encryption", "m.room.name", "m.room.canonical_alias",
                         "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access"})
# What a restored event needs: nio reads these fields; `unsigned` (previous contents, relations)
# is not state and is not kept.
_KEPT_FIELDS = ("type", "state_key", "sender", "event_id", "origin_server_ts", "content")
# A member's event keeps who they are in the room and nothing else (no avatar).
_KEPT_MEMBER_CONTENT = ("membership", "displayname")
_PRESENT = ("join", "invite")
_ROOMS_PER_TURN = 20
# More rows than this for one room (a room of hundreds) are written on the database's thread.
BULK_STATE_ROWS = 500
# Reading rooms whole: at most this many at once, each bounded; one that fails waits before the
# next try (doubling, capped) while the others go on.
_FILLS_AT_ONCE = 8
_FILL_TIMEOUT_S = 20.0
_FILL_WAIT_S = 3.0  # how long a sync waits for its gaps' reads before its commands run
_FILL_MAX_BACKOFF_S = 300.0


def state_event(room_id: str, source: Any) -> StateEvent | None:
    """The row for one event from a sync, if it is a state event; a member who is no longer
    joined or invited is a row to delete (their state key carries nothing the bot needs)."""
    if not isinstance(source, dict):
        return None
    event_type, state_key = source.get("type"), source.get("state_key")
    content = source.get("content")
    if event_type not in _KEPT_TYPES or not isinstance(state_key, str) or not isinstance(
            content, dict):
        return None
    kept = {name: source[name] for name in _KEPT_FIELDS if name in source}
    if event_type == "m.room.member":
        if content.get("membership") not in _PRESENT:
            return StateEvent(room_id, event_type, state_key, None)
        kept["content"] = {name: content[name] for name in _KEPT_MEMBER_CONTENT if name in content}
    return StateEvent(room_id, event_type, state_key,
                      json.dumps(kept, separators=(",", ":"), ensure_ascii=False))


def sync_changes(response: SyncResponse) -> tuple[list[StateEvent], list[str]]:
    """The state a sync set, in order (a room's state section, then its timeline), and the rooms
    it says the bot left."""
    changes: list[StateEvent] = []
    for room_id, info in response.rooms.join.items():
        for event in [*info.state, *info.timeline.events]:
            row = state_event(room_id, getattr(event, "source", None))
            if row is not None:
                changes.append(row)
    return changes, list(response.rooms.leave)


async def restore_rooms(client: AsyncClient, rows: Iterable[StateEvent], gaps: set[str],
                        also: Callable[[str, list[Event]], None]) -> int:
    """Rebuild nio's joined rooms from stored rows (ordered by room) through nio's own handling of
    a sync's state; `gaps`: the rooms whose members may be incomplete; `also` sees each room's
    events (what the transport reads from state itself). Returns how many rooms there are."""
    count = 0
    for room_id, room_rows in groupby(rows, key=lambda row: row.room_id):
        events = [Event.parse_event(json.loads(row.event)) for row in room_rows
                  if row.event is not None]
        _apply_state(client, room_id, events, members_complete=room_id not in gaps)
        also(room_id, events)
        count += 1
        if count % _ROOMS_PER_TURN == 0:
            await let_others_run()  # a thousand rooms take a while: let the loop run between
    return count


def fill_room(client: AsyncClient, room_id: str, state: list[Any],
              also: Callable[[str, list[Event]], None]) -> list[StateEvent] | None:
    """Make a joined room's members those of its whole state (`state`: the homeserver's answer
    to /state) and return the rows to store for it (None: the bot is no longer in it). Whoever
    is in nio's room but no longer joined or invited there is taken out, and the room key is not
    shared with them again."""
    rows = [row for source in state if (row := state_event(room_id, source)) is not None]
    room = client.rooms.get(room_id)
    if room is None:
        return None  # left while its state was read
    present = {row.state_key for row in rows
               if row.event_type == "m.room.member" and row.event is not None}
    gone = [user_id for user_id in room.users if user_id not in present]
    for user_id in gone:
        room.remove_member(user_id)
    if gone and client.olm is not None:
        client.invalidate_outbound_session(room_id)
    events = [Event.parse_event(json.loads(row.event)) for row in rows if row.event is not None]
    _apply_state(client, room_id, events, members_complete=True)
    also(room_id, events)
    return rows


def _apply_state(client: AsyncClient, room_id: str, events: list[Event], *,
                 members_complete: bool) -> None:
    encrypted_rooms: set[str] = set()
    info = RoomInfo(Timeline([], False, None), events, [], [])
    client._handle_joined_state(room_id, info, encrypted_rooms)  # noqa: SLF001 - nio's path
    client.encrypted_rooms.update(encrypted_rooms)
    room = client.rooms[room_id]
    # nio reads a room's joined members itself before its first encrypted send unless told
    # they are complete; the bot keeps them complete (a room with a gap is read whole first).
    room.members_synced = members_complete
    if room.encrypted and client.olm is not None:
        client.olm.update_tracked_users(room)


class MemberGaps:
    """The rooms whose members may be incomplete, and reading them whole.

    A room is a gap when the bot first sees it (syncs name only the members behind their events)
    and after a sync that skipped some of its events (`limited`: a member may have come or gone
    unseen). The gaps are stored with the sync's state rows, so a restart reads them too.

    A sync waits for its gaps' reads only briefly: a homeserver still joining a room over
    federation answers /state only once it has the room's whole state, and the other rooms'
    commands must not wait for that. A read that finishes later is used only if no sync changed
    the room's members meanwhile (it could be older than what that sync said).
    """

    def __init__(self, storage: Storage, also: Callable[[str, list[Event]], None]) -> None:
        self.storage = storage
        self._also = also
        self._complete: set[str] = set()
        self.gaps: set[str] = set()
        self._retry: dict[str, tuple[int, float]] = {}  # failures in a row, monotonic retry time
        self._reading: dict[str, asyncio.Task[list[Any] | str]] = {}
        # Rooms being read whose members a sync changed (or may have changed) since the read
        # began: what the read says may be older.
        self._changed: set[str] = set()
        self._slots = asyncio.Semaphore(_FILLS_AT_ONCE)

    @property
    def reading(self) -> bool:
        """Reads are under way: the next sync takes in the ones that have finished."""
        return bool(self._reading)

    def restored(self, rooms: Iterable[str], gaps: set[str]) -> None:
        rooms = set(rooms)
        self.gaps = gaps & rooms
        self._complete = rooms - gaps

    def forget(self) -> None:
        """The rooms are rebuilt from a full state sync."""
        self._complete.clear()
        self.gaps.clear()
        self._retry.clear()

    def note_sync(self, response: SyncResponse) -> list[str]:
        """The rooms of a sync whose members may be incomplete (to store with its state)."""
        for room_id in response.rooms.leave:
            self._complete.discard(room_id)
            self.gaps.discard(room_id)
            self._retry.pop(room_id, None)
        for room_id in self._reading.keys() & response.rooms.join.keys():
            info = response.rooms.join[room_id]
            if info.timeline.limited or any(isinstance(e, RoomMemberEvent)
                                            for e in [*info.state, *info.timeline.events]):
                self._changed.add(room_id)
        found = [room_id for room_id, info in response.rooms.join.items()
                 if info.timeline.limited or room_id not in self._complete]
        self._complete.difference_update(found)
        self.gaps.update(found)
        return found

    async def fill(self, client: AsyncClient) -> None:
        """Read every gap room that is not being read or waiting to be tried again, wait a
        little for the reads, and take in every read that has finished (this sync's or an
        earlier one's). Run by the sync loop after `note_sync`, so a read is taken in only if
        no sync changed the room's members since it began."""
        now = time.monotonic()
        due = [room_id for room_id in self.gaps
               if room_id in client.rooms and room_id not in self._reading
               and self._retry.get(room_id, (0, 0.0))[1] <= now]
        for room_id in due:
            self._changed.discard(room_id)
            self._reading[room_id] = asyncio.create_task(self._read(client, room_id),
                                                         name=f"read {room_id}")
        if not self._reading:
            return
        started = time.monotonic()
        # A room tried before (still being joined, its server failing) is not waited for again.
        first_tries = [self._reading[room_id] for room_id in due if room_id not in self._retry]
        if first_tries:
            await asyncio.wait(first_tries, timeout=_FILL_WAIT_S)
        filled = await self._take_in(client)
        if filled or first_tries:
            log.info("read the members of %d rooms in %.2f s (%d still to read)", filled,
                     time.monotonic() - started, len(self.gaps))

    async def _read(self, client: AsyncClient, room_id: str) -> list[Any] | str:
        """The room's state events, or why they could not be read."""
        async with self._slots:
            try:
                async with asyncio.timeout(_FILL_TIMEOUT_S):
                    response = await client.room_get_state(room_id)
            except (OSError, TimeoutError, aiohttp.ClientError, LocalProtocolError) as exc:
                return type(exc).__name__
        if not isinstance(response, RoomGetStateResponse):
            return getattr(response, "status_code", None) or type(response).__name__
        return response.events

    async def _take_in(self, client: AsyncClient) -> int:
        done = [room_id for room_id, task in self._reading.items() if task.done()]
        filled: dict[str, list[StateEvent]] = {}
        for room_id in done:
            outcome = self._reading.pop(room_id).result()
            changed = room_id in self._changed
            self._changed.discard(room_id)
            if isinstance(outcome, str) or changed:
                self._failed(room_id, "its members changed while it was read" if changed
                             else outcome)
                continue
            rows = fill_room(client, room_id, outcome, self._also)
            if rows is None:
                self.gaps.discard(room_id)  # left meanwhile: the sync that says so drops its rows
            else:
                filled[room_id] = rows
        if not filled:
            return 0
        try:
            rows_in_all = sum(len(rows) for rows in filled.values())
            async with self.storage.transaction(bulk=rows_in_all > BULK_STATE_ROWS) as tx:
                for room_id, rows in filled.items():
                    await tx.rooms.fill(room_id, rows)
        except Exception as exc:  # noqa: BLE001 - they stay gaps, read again later
            for room_id in filled:
                self._failed(room_id, f"storing it: {type(exc).__name__}")
            return 0
        self.gaps.difference_update(filled)
        self._complete.update(filled)
        for room_id in filled:
            self._retry.pop(room_id, None)
        return len(filled)

    async def close(self) -> None:
        for task in self._reading.values():
            task.cancel()
        await asyncio.gather(*self._reading.values(), return_exceptions=True)
        self._reading.clear()

    def _failed(self, room_id: str, reason: str) -> None:
        failures = self._retry.get(room_id, (0, 0.0))[0] + 1
        delay = min(_FILL_MAX_BACKOFF_S, 2.0 ** failures)
        self._retry[room_id] = (failures, time.monotonic() + delay)
        # Meanwhile nio reads the room's joined members itself before sending there.
        log.warning("could not read the state of %s (%s); trying again in %.0f s", room_id,
                    reason, delay)
