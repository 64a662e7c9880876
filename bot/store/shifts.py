"""Shifts, sign-ups, stand-ins, no-shows, and the record of scheduled sends."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from bot.schedule_rules import ShiftWhen
from bot.shift_models import ALL_DATES, Shift, Signup, StandinRequest
from bot.store.base import Area, converted, now_text, parse_time, placeholders

# A one-off shift's start as local wall-clock text ("2026-11-28T10:00:00"), and whether a shift
# is recurring: both indexed (`shifts_one_off`, `shifts_recurring`), so the scheduler reads only
# the shifts that can have a date near now.
_ONE_OFF_START = ("json_extract(when_json, '$.first_date') || 'T' || "
                  "json_extract(when_json, '$.start_local')")
_ONE_OFF = "json_extract(when_json, '$.rrule') IS NULL"
_RECURRING = "json_extract(when_json, '$.rrule') IS NOT NULL"
_SHIFTS_PER_TURN = 50  # a shift becomes a model in 10-20 us (its `when` parsed once)
# Local time is at most 14 hours from UTC; a day either side covers every zone and DST.
_ZONE_SLACK = timedelta(days=1)


def _naive_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _signup(row: sqlite3.Row) -> Signup:
    return Signup(shift_id=row["shift_id"], occurrence=row["occurrence"], person=row["person"],
                  present=bool(row["present"]))


@functools.lru_cache(maxsize=4096)
def _when(text: str) -> ShiftWhen:
    """Parsed once per distinct text (ShiftWhen is frozen): the scheduler reads the same
    shifts at every wake-up."""
    return ShiftWhen.model_validate_json(text)


def shift_from_row(row: sqlite3.Row) -> Shift:
    return Shift(
        id=row["id"], room_id=row["room_id"], number=row["number"], title=row["title"],
        place=row["place"], needed=row["needed"],
        when=_when(row["when_json"]), active=bool(row["active"]),
        created_by=row["created_by"], created_at=parse_time(row["created_at"]),
    )


def standin_from_row(row: sqlite3.Row) -> StandinRequest:
    return StandinRequest(
        id=row["id"], room_id=row["room_id"], number=row["number"], shift_id=row["shift_id"],
        occurrence=row["occurrence"], requester=row["requester"], status=row["status"],
        covered_by=row["covered_by"],
    )


class CancelledDate(NamedTuple):
    """One date of a shift that was called off."""

    shift_id: int
    occurrence: str


@dataclass(frozen=True, slots=True)
class ScheduledSend:
    """One send the scheduler made (or skipped): recorded once, so it never happens twice."""

    kind: str
    ref: str
    occurrence: str
    offset_key: str
    person: str
    outcome: str
    at: datetime


class ShiftsArea(Area):
    async def create(
        self, room_id: str, title: str, place: str | None, needed: int, when: ShiftWhen,
        created_by: str, now: datetime,
    ) -> Shift:
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "INSERT INTO shifts (room_id, number, title, place, needed, when_json, active, "
            "created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?) RETURNING *",
            (room_id, await self._tx.next_number("shifts", room_id), title, place, needed,
             when.model_dump_json(), created_by, stamp, stamp),
        )
        return shift_from_row(row)

    async def move(self, shift: Shift, room_id: str, now: datetime) -> Shift:
        """The shift, with its sign-ups, in another room (a split pod's) under its next number."""
        row = await self._tx.fetchone(
            "UPDATE shifts SET room_id = ?, number = ?, updated_at = ? WHERE id = ? RETURNING *",
            (room_id, await self._tx.next_number("shifts", room_id), now_text(now), shift.id))
        return shift_from_row(row)

    async def by_id(self, shift_id: int) -> Shift:
        shift = await self._tx.fetch_by("shifts", shift_from_row, id=shift_id)
        if shift is None:
            raise KeyError(shift_id)
        return shift

    async def by_number(self, room_id: str, number: int) -> Shift | None:
        return await self._tx.fetch_by("shifts", shift_from_row, room_id=room_id, number=number)

    async def list(self, room_id: str | None = None, *, active_only: bool = True) -> list[Shift]:
        clauses, params = [], []
        if room_id is not None:
            clauses.append("room_id = ?")
            params.append(room_id)
        if active_only:
            clauses.append("active = 1")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._tx.fetchall(
            f"SELECT * FROM shifts {where} ORDER BY room_id, number", params  # noqa: S608
        )
        return [shift_from_row(r) for r in rows]

    async def update(
        self, shift: Shift, now: datetime, *, title: str | None = None, place: str | None = None,
        needed: int | None = None, when: ShiftWhen | None = None, active: bool | None = None,
    ) -> Shift:
        row = await self._tx.fetchone(
            "UPDATE shifts SET title = COALESCE(?, title), place = COALESCE(?, place), "
            "needed = COALESCE(?, needed), when_json = COALESCE(?, when_json), "
            "active = COALESCE(?, active), updated_at = ? WHERE id = ? RETURNING *",
            (title, place, needed, when.model_dump_json() if when else None,
             None if active is None else int(active), now_text(now), shift.id),
        )
        return shift_from_row(row)

    async def cancel_occurrence(self, shift_id: int, occurrence: str, now: datetime) -> bool:
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO shift_cancelled (shift_id, occurrence, at) VALUES (?, ?, ?)",
            (shift_id, occurrence, now_text(now)),
        )
        return cursor.rowcount == 1

    async def cancelled_occurrences(self, shift_ids: list[int]) -> set[CancelledDate]:
        if not shift_ids:
            return set()
        rows = await self._tx.fetchall(
            "SELECT shift_id, occurrence FROM shift_cancelled "  # noqa: S608 - placeholders only
            f"WHERE shift_id IN ({placeholders(shift_ids)})",
            shift_ids,
        )
        return {CancelledDate(r["shift_id"], r["occurrence"]) for r in rows}

    async def signups(self, shift_ids: list[int]) -> list[Signup]:
        if not shift_ids:
            return []
        rows = await self._tx.fetchall(
            "SELECT * FROM shift_signups "  # noqa: S608 - placeholders only
            f"WHERE shift_id IN ({placeholders(shift_ids)}) ORDER BY at, person",
            shift_ids,
        )
        return [_signup(r) for r in rows]

    # ---- what the scheduler reads: bounded by the time window, not by the history ----------

    async def active_near(self, start: datetime, end: datetime) -> list[Shift]:
        """Every active recurring shift, and the active one-off shifts starting between `start`
        and `end` (give or take a day: the caller works out the exact dates)."""
        rows = await self._tx.fetchall(
            f"SELECT * FROM shifts WHERE active = 1 AND {_ONE_OFF} "  # noqa: S608 - fixed text
            f"AND {_ONE_OFF_START} BETWEEN ? AND ? "
            f"UNION ALL SELECT * FROM shifts WHERE active = 1 AND {_RECURRING} "
            "ORDER BY room_id, number",
            (_naive_text(start - _ZONE_SLACK), _naive_text(end + _ZONE_SLACK)),
        )
        # The scheduler reads these at every wake-up: ~150 near now at 10,000 shift dates.
        return await converted(rows, shift_from_row, _SHIFTS_PER_TURN)

    async def signups_between(self, shift_ids: list[int], first: str, last: str) -> list[Signup]:
        """Sign-ups of these shifts for every date or for an occurrence key in [first, last]."""
        marks = placeholders(shift_ids)
        rows = await self._tx.fetchall(
            f"SELECT * FROM shift_signups WHERE shift_id IN ({marks}) "  # noqa: S608
            f"AND occurrence = ? UNION ALL SELECT * FROM shift_signups WHERE shift_id IN ({marks}) "
            "AND occurrence BETWEEN ? AND ? ORDER BY at, person",
            (*shift_ids, ALL_DATES, *shift_ids, first, last),
        )
        return [_signup(r) for r in rows]

    async def cancelled_between(self, shift_ids: list[int], first: str, last: str,
                                ) -> set[tuple[int, str]]:
        rows = await self._tx.fetchall(
            "SELECT shift_id, occurrence FROM shift_cancelled "  # noqa: S608 - placeholders only
            f"WHERE shift_id IN ({placeholders(shift_ids)}) AND occurrence BETWEEN ? AND ?",
            (*shift_ids, first, last),
        )
        return {(r["shift_id"], r["occurrence"]) for r in rows}

    async def set_signup(self, shift_id: int, occurrence: str, person: str, present: bool,
                         now: datetime) -> None:
        await self._tx.execute(
            "INSERT INTO shift_signups (shift_id, occurrence, person, present, at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (shift_id, occurrence, person) "
            "DO UPDATE SET present = excluded.present, at = excluded.at",
            (shift_id, occurrence, person, int(present), now_text(now)),
        )

    async def remove_signup(self, shift_id: int, occurrence: str, person: str) -> bool:
        cursor = await self._tx.execute(
            "DELETE FROM shift_signups WHERE shift_id = ? AND occurrence = ? AND person = ?",
            (shift_id, occurrence, person),
        )
        return cursor.rowcount == 1

    async def create_standin(self, shift: Shift, occurrence: str, requester: str,
                             now: datetime) -> StandinRequest:
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "INSERT INTO standin_requests (room_id, number, shift_id, occurrence, requester, "
            "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?) RETURNING *",
            (shift.room_id, await self._tx.next_number("standin_requests", shift.room_id),
             shift.id, occurrence, requester, stamp, stamp),
        )
        return standin_from_row(row)

    async def standin(self, room_id: str, number: int) -> StandinRequest | None:
        return await self._tx.fetch_by("standin_requests", standin_from_row, room_id=room_id,
                                       number=number)

    async def open_standins(self, room_id: str) -> list[StandinRequest]:
        rows = await self._tx.fetchall(
            "SELECT * FROM standin_requests WHERE room_id = ? AND status = 'open' ORDER BY number",
            (room_id,))
        return [standin_from_row(r) for r in rows]

    async def move_standin(self, request: StandinRequest, room_id: str,
                           now: datetime) -> StandinRequest:
        """An open stand-in request, with its shift, in a split pod's room under its next R
        number."""
        row = await self._tx.fetchone(
            "UPDATE standin_requests SET room_id = ?, number = ?, updated_at = ? WHERE id = ? "
            "RETURNING *",
            (room_id, await self._tx.next_number("standin_requests", room_id), now_text(now),
             request.id))
        return standin_from_row(row)

    async def open_standin_for(self, shift_id: int, occurrence: str,
                               requester: str) -> StandinRequest | None:
        return await self._tx.fetch_by(
            "standin_requests", standin_from_row, shift_id=shift_id, occurrence=occurrence,
            requester=requester, status="open")

    async def set_standin_status(self, request: StandinRequest, status: str, now: datetime,
                                 covered_by: str | None = None) -> None:
        await self._tx.execute(
            "UPDATE standin_requests SET status = ?, covered_by = ?, updated_at = ? WHERE id = ?",
            (status, covered_by, now_text(now), request.id),
        )

    async def record_noshow(self, shift_id: int, occurrence: str, person: str, recorded_by: str,
                            now: datetime) -> bool:
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO noshows (shift_id, occurrence, person, recorded_by, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (shift_id, occurrence, person, recorded_by, now_text(now)),
        )
        return cursor.rowcount == 1

    async def noshow_count(self, room_id: str, person: str) -> int:
        row = await self._tx.fetchone(
            "SELECT COUNT(*) FROM noshows JOIN shifts ON shifts.id = noshows.shift_id "
            "WHERE shifts.room_id = ? AND noshows.person = ?",
            (room_id, person),
        )
        return row[0]

    # ---- scheduled sends: recorded in the transaction that queues them ---------------------

    async def record_scheduled(self, kind: str, ref: str, occurrence: str, offset_key: str,
                               person: str, outcome: str, now: datetime) -> bool:
        """Claim one scheduled send; True only the first time (exactly once across restarts)."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO sent_reminders "
            "(kind, ref, occurrence, offset_key, person, outcome, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, ref, occurrence, offset_key, person, outcome, now_text(now)),
        )
        return cursor.rowcount == 1

    async def scheduled_records(self, kind: str | None = None) -> list[ScheduledSend]:
        rows = await self._tx.fetchall(
            "SELECT * FROM sent_reminders WHERE ? IS NULL OR kind = ? ORDER BY rowid", (kind, kind)
        )
        return [ScheduledSend(kind=r["kind"], ref=r["ref"], occurrence=r["occurrence"],
                              offset_key=r["offset_key"], person=r["person"],
                              outcome=r["outcome"], at=parse_time(r["at"])) for r in rows]
