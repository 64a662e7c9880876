"""Rooms' state kept across restarts: what a sync changed, as rows (bot/store/rooms.py), and nio's
rooms rebuilt from those rows at start, so that the first sync after a restart is incremental.

nio keeps no room state of its own across restarts, and a full state sync of 1,000 rooms costs the
homeserver several seconds. The rows are stored before the sync token that covers them: after a
crash between the two the same changes come again and are written again, which changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from itertools import groupby
from typing import Any

from nio import AsyncClient, Event, RoomInfo, SyncResponse, Timeline

from bot.store.rooms import StateEvent
from bot.turns import let_others_run

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


async def restore_rooms(client: AsyncClient, rows: Iterable[StateEvent],
                        also: Callable[[str, list[Event]], None]) -> int:
    """Rebuild nio's joined rooms from stored rows (ordered by room) through nio's own handling of
    a sync's state; `also` sees each room's events (what the transport reads from state itself).
    Returns how many rooms there are."""
    count = 0
    encrypted_rooms: set[str] = set()
    for room_id, room_rows in groupby(rows, key=lambda row: row.room_id):
        events = [Event.parse_event(json.loads(row.event)) for row in room_rows
                  if row.event is not None]
        info = RoomInfo(Timeline([], False, None), events, [], [])
        client._handle_joined_state(room_id, info, encrypted_rooms)  # noqa: SLF001 - nio's path
        room = client.rooms[room_id]
        if room.encrypted and client.olm is not None:
            client.olm.update_tracked_users(room)
        also(room_id, events)
        count += 1
        if count % _ROOMS_PER_TURN == 0:
            await let_others_run()  # a thousand rooms take a while: let the loop run between
    client.encrypted_rooms.update(encrypted_rooms)
    return count
