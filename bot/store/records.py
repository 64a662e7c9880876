"""Records: the ledger of exchanges, time-bank credits, and report requests waiting to be made.

The ledger names nobody: a row is what was exchanged (category, pod, zone, urgency) and how long
matching and fulfilling took. Time-bank credits name the helper, so that `!balance` can show a
person their own hours; `!forgetme` blanks the name (the pod's totals stay).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from bot.models import Category, Post, PostKind, PostStatus
from bot.reports import (
    OLDEST_SHOWN,
    LedgerCount,
    Medians,
    PostCount,
    PostRow,
    ReportRows,
    StandinRow,
    median_offsets,
)
from bot.store.base import Area, now_text, parse_time
from bot.store.shifts import shift_from_row


@dataclass(frozen=True, slots=True)
class ReportRequest:
    id: int
    kind: str  # "report" (chart and table, in the pod room) or "csv" (a coordinator's DM)
    pod_room: str
    period: str
    reply_room: str
    reply_to: str


def _post_row(row: sqlite3.Row) -> PostRow:
    return PostRow(row["number"], PostKind(row["kind"]), Category(row["category"]), row["zone"],
                   PostStatus(row["status"]), parse_time(row["created_at"]))


class RecordsArea(Area):
    # ---- the ledger and the time bank --------------------------------------------------------

    async def record_exchange(self, post: Post, done_at: datetime,
                              hours: float | None) -> int | None:
        """One fulfilled need or offer; None if it was already recorded."""
        claimed = post.claimed_at if post.claimed_by else None
        row = await self._tx.fetchone(
            "INSERT INTO ledger (post_id, room_id, kind, category, zone, urgency, created_at, "
            "claimed_at, done_at, match_seconds, fulfil_seconds, hours) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (post_id) DO NOTHING "
            "RETURNING id",
            (post.id, post.room_id, post.kind.value, post.category.value, post.zone,
             int(post.urgency), now_text(post.created_at), now_text(claimed) if claimed else None,
             now_text(done_at), (claimed - post.created_at).total_seconds() if claimed else None,
             (done_at - post.created_at).total_seconds(), hours),
        )
        return row["id"] if row else None

    async def credit(self, room_id: str, person: str, hours: float, ledger_id: int,
                     now: datetime) -> None:
        await self._tx.execute(
            "INSERT INTO timebank (room_id, person, hours, ledger_id, at) VALUES (?, ?, ?, ?, ?)",
            (room_id, person, hours, ledger_id, now_text(now)))

    async def balance(self, person: str) -> dict[str, float]:
        """Hours a person has given, per pod room."""
        rows = await self._tx.fetchall(
            "SELECT room_id, SUM(hours) AS hours FROM timebank WHERE person = ? "
            "GROUP BY room_id ORDER BY room_id", (person,))
        return {r["room_id"]: r["hours"] for r in rows}

    # ---- what a report is computed from (a bulk transaction: it grows with the data) ----------

    async def report_rows(self, room_id: str, start: datetime, now: datetime) -> ReportRows:
        """What one pod's report is computed from. Counting and the medians are left to SQLite:
        it steps through a long history without holding Python's GIL, so a bulk transaction
        (aiosqlite's thread) reading 100,000 posts leaves the event loop free."""
        period = (room_id, now_text(start), now_text(now))
        posts = await self._tx.fetchall(
            "SELECT kind, category, zone, COUNT(*) AS n FROM posts WHERE room_id = ? "
            "AND created_at >= ? AND created_at <= ? GROUP BY kind, category, zone", period)
        ledger = await self._tx.fetchall(
            "SELECT category, zone, COUNT(*) AS n, COALESCE(SUM(hours), 0) AS hours, "
            "COUNT(hours) AS with_hours FROM ledger WHERE room_id = ? AND done_at >= ? "
            "AND done_at <= ? GROUP BY category, zone", period)
        oldest = await self._tx.fetchall(
            "SELECT number, kind, category, zone, status, created_at FROM posts "
            "WHERE room_id = ? AND kind = 'need' AND status = 'open' ORDER BY created_at, id "
            "LIMIT ?", (room_id, OLDEST_SHOWN))
        match, matched = await self._median("match_seconds", period)
        fulfil, _ = await self._median("fulfil_seconds", period)
        shifts = [shift_from_row(r) for r in await self._tx.fetchall(
            "SELECT * FROM shifts WHERE room_id = ?", (room_id,))]
        ids = [s.id for s in shifts]
        standins = await self._tx.fetchall(
            "SELECT status, created_at FROM standin_requests WHERE room_id = ? "
            "AND created_at >= ? AND created_at <= ?", period)
        return ReportRows(
            posts=[PostCount(PostKind(r["kind"]), Category(r["category"]), r["zone"], r["n"])
                   for r in posts],
            ledger=[LedgerCount(Category(r["category"]), r["zone"], r["n"], r["hours"],
                                r["with_hours"]) for r in ledger],
            medians=Medians(match, matched, fulfil),
            open_needs=[_post_row(r) for r in oldest],
            shifts=shifts,
            signups=await self._tx.shifts.signups(ids),
            cancelled=await self._tx.shifts.cancelled_occurrences(ids),
            standins=[StandinRow(r["status"], parse_time(r["created_at"])) for r in standins],
        )

    async def _median(self, column: str, period: tuple[str, str, str]) -> tuple[float | None, int]:
        """The median of a ledger column over the period, and how many values it is of."""
        where = f"room_id = ? AND done_at >= ? AND done_at <= ? AND {column} IS NOT NULL"
        n = (await self._tx.fetchone(
            f"SELECT COUNT(*) FROM ledger WHERE {where}", period))[0]  # noqa: S608 - fixed names
        if n == 0:
            return None, 0
        low, high = median_offsets(n)
        rows = await self._tx.fetchall(
            f"SELECT {column} FROM ledger WHERE {where} "  # noqa: S608 - fixed names
            f"ORDER BY {column} LIMIT ? OFFSET ?", (*period, high - low + 1, low))
        return sum(r[0] for r in rows) / len(rows), n

    # ---- report requests: made after the command's transaction, off the event loop ------------

    async def request_report(self, kind: str, pod_room: str, period: str, reply_room: str,
                             reply_to: str, now: datetime) -> None:
        await self._tx.execute(
            "INSERT INTO report_requests (kind, pod_room, period, reply_room, reply_to, "
            "requested_at) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, pod_room, period, reply_room, reply_to, now_text(now)))

    async def next_report_request(self) -> ReportRequest | None:
        row = await self._tx.fetchone("SELECT * FROM report_requests ORDER BY id LIMIT 1")
        if row is None:
            return None
        return ReportRequest(row["id"], row["kind"], row["pod_room"], row["period"],
                             row["reply_room"], row["reply_to"])

    async def finish_report_request(self, request_id: int) -> bool:
        cursor = await self._tx.execute("DELETE FROM report_requests WHERE id = ?", (request_id,))
        return cursor.rowcount > 0
