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
    to /state) and return the rows to store for it (None: the bot is no longer in it). Whoever is in nio's room but is no longer
    joined or invited there is taken out, and the room key is not shared with them again."""
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
    """

    def __init__(self, storage: Storage, also: Callable[[str, list[Event]], None]) -> None:
        self.storage = storage
        self._also = also
        self._complete: set[str] = set()
        self.gaps: set[str] = set()
        self._retry: dict[str, tuple[int, float]] = {}  # failures in a row, monotonic retry time

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
        found = [room_id for room_id, info in response.rooms.join.items()
                 if info.timeline.limited or room_id not in self._complete]
        self._complete.difference_update(found)
        self.gaps.update(found)
        return found

    async def fill(self, client: AsyncClient) -> None:
        """Read every gap room whole that is not waiting to be tried again."""
        now = time.monotonic()
        due = [room_id for room_id in self.gaps
               if room_id in client.rooms and self._retry.get(room_id, (0, 0.0))[1] <= now]
        if not due:
            return
        slots = asyncio.Semaphore(_FILLS_AT_ONCE)

        async def one(room_id: str) -> None:
            async with slots:
                await self._fill_one(client, room_id)

        started = time.monotonic()
        await asyncio.gather(*(one(room_id) for room_id in due))
        log.info("read the members of %d rooms in %.2f s (%d still to read)",
                 len(due) - len(self.gaps & set(due)), time.monotonic() - started, len(self.gaps))

    async def _fill_one(self, client: AsyncClient, room_id: str) -> None:
        try:
            async with asyncio.timeout(_FILL_TIMEOUT_S):
                response: object = await client.room_get_state(room_id)
        except (OSError, TimeoutError, aiohttp.ClientError, LocalProtocolError) as exc:
            response = exc
        if not isinstance(response, RoomGetStateResponse):
            failures = self._retry.get(room_id, (0, 0.0))[0] + 1
            delay = min(_FILL_MAX_BACKOFF_S, 2.0 ** failures)
            self._retry[room_id] = (failures, time.monotonic() + delay)
            # Meanwhile nio reads the room's joined members itself before sending there.
            log.warning("could not read the state of %s (%s); trying again in %.0f s", room_id,
                        getattr(response, "status_code", None) or type(response).__name__, delay)
            return
        rows = fill_room(client, room_id, response.events, self._also)
        if rows is not None:
            async with self.storage.transaction(bulk=len(rows) > BULK_STATE_ROWS) as tx:
                await tx.rooms.fill(room_id, rows)
            self._complete.add(room_id)
        self.gaps.discard(room_id)
        self._retry.pop(room_id, None)
