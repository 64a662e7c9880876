"""The current state of the Matrix rooms the bot is in (members, power levels, encryption, name).

The Matrix transport writes what each sync changed, before the sync token that covers it, so a
restart rebuilds its rooms from here and asks the homeserver only for what happened since: a full
state sync of 1,000 rooms takes the homeserver several seconds. A key whose state is gone (someone
who left) is deleted, not kept, and so are all the rows of a room the bot left.

The bot's syncs lazy-load members, so a room's member rows can lack people: a room new to the bot,
or one whose sync skipped events (a gap), is marked until the transport has read its whole state
and put it here (`fill`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.store.base import Area

# Set with a full state: without it (a first start, or a database from before this table) the
# rows are not the whole state and the next start asks for the full state again.
COMPLETE_MARK = "room_state"
# A meta row per room whose members may be incomplete, until `fill` replaces its rows.
_GAP = "members_gap:"


@dataclass(frozen=True, slots=True)
class StateEvent:
    room_id: str
    event_type: str
    state_key: str
    event: str | None  # the event as JSON; None: nothing is at this key any more


class RoomStateArea(Area):
    async def complete(self) -> bool:
        row = await self._tx.fetchone("SELECT 1 FROM meta WHERE key = ?", (COMPLETE_MARK,))
        return row is not None

    async def replace(self, events: list[StateEvent], gaps: list[str]) -> None:
        """The state of every room from a full state sync; `gaps`: the rooms whose members it
        may not have given in full (all of them, with members lazy-loaded)."""
        await self._tx.execute("DELETE FROM room_state")
        await self._tx.execute("DELETE FROM meta WHERE substr(key, 1, ?) = ?", (len(_GAP), _GAP))
        await self._upsert([e for e in events if e.event is not None])
        await self._mark_gaps(gaps)
        await self._tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, 'complete') ON CONFLICT (key) DO NOTHING",
            (COMPLETE_MARK,))

    async def update(self, events: list[StateEvent], left_rooms: list[str],
                     gaps: list[str]) -> None:
        """What an incremental sync changed, in the order it happened; `gaps`: rooms whose
        members it may not have given in full (new to the bot, or a sync that skipped events)."""
        # The last one wins: a key set and then removed in one sync ends removed, and the reverse.
        latest: dict[tuple[str, str, str], StateEvent] = {}
        for event in events:
            latest[(event.room_id, event.event_type, event.state_key)] = event
        await self._upsert([e for e in latest.values() if e.event is not None])
        gone = [key for key, e in latest.items() if e.event is None]
        if gone:
            await self._tx.executemany(
                "DELETE FROM room_state WHERE room_id = ? AND event_type = ? AND state_key = ?",
                gone)
        await self._mark_gaps(gaps)
        if left_rooms:
            await self._tx.executemany("DELETE FROM room_state WHERE room_id = ?",
                                       [(room_id,) for room_id in left_rooms])
            await self._tx.executemany("DELETE FROM meta WHERE key = ?",
                                       [(_GAP + room_id,) for room_id in left_rooms])

    async def fill(self, room_id: str, events: list[StateEvent]) -> None:
        """A room's whole state, read from the homeserver: it replaces the room's rows, and its
        members are complete again."""
        await self._tx.execute("DELETE FROM room_state WHERE room_id = ?", (room_id,))
        await self._upsert([e for e in events if e.event is not None])
        await self._tx.execute("DELETE FROM meta WHERE key = ?", (_GAP + room_id,))

    async def gaps(self) -> set[str]:
        """The rooms whose members may be incomplete."""
        rows = await self._tx.fetchall("SELECT key FROM meta WHERE substr(key, 1, ?) = ?",
                                       (len(_GAP), _GAP))
        return {row["key"][len(_GAP):] for row in rows}

    async def mark_incomplete(self) -> None:
        """The rows may no longer be the whole state (an erasure is taking a person out of
        them): the next start reads the rooms' state from the homeserver again."""
        await self._tx.execute("DELETE FROM meta WHERE key = ?", (COMPLETE_MARK,))

    async def load(self) -> list[StateEvent]:
        rows = await self._tx.fetchall(
            "SELECT room_id, event_type, state_key, event FROM room_state ORDER BY room_id")
        return [StateEvent(r["room_id"], r["event_type"], r["state_key"], r["event"]) for r in rows]

    async def _mark_gaps(self, room_ids: list[str]) -> None:
        if room_ids:
            await self._tx.executemany(
                "INSERT INTO meta (key, value) VALUES (?, 'incomplete') "
                "ON CONFLICT (key) DO NOTHING", [(_GAP + room_id,) for room_id in room_ids])

    async def _upsert(self, events: list[StateEvent]) -> None:
        if events:
            await self._tx.executemany(
                "INSERT INTO room_state (room_id, event_type, state_key, event) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event = excluded.event",
                [(e.room_id, e.event_type, e.state_key, e.event) for e in events])
