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
from bot.reports import OLDEST_SHOWN, LedgerRow, PostRow, ReportRows, StandinRow
from bot.shift_models import Shift, Signup
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


@dataclass
class RawReportRows:
    """Rows as the database returned them. A pod's posts can be many: converting them is work
    that grows with the data, so `convert` belongs off the event loop, with the aggregation."""

    posts: list[sqlite3.Row]
    ledger: list[sqlite3.Row]
    open_needs: list[sqlite3.Row]
    shifts: list[Shift]
    signups: list[Signup]
    cancelled: set[tuple[int, str]]
    standins: list[sqlite3.Row]

    def convert(self) -> ReportRows:
        return ReportRows(
            posts=[_post_row(r) for r in self.posts],
            ledger=[LedgerRow(Category(r["category"]), r["zone"], PostKind(r["kind"]),
                              parse_time(r["done_at"]), r["match_seconds"], r["fulfil_seconds"],
                              r["hours"]) for r in self.ledger],
            open_needs=[_post_row(r) for r in self.open_needs],
            shifts=self.shifts, signups=self.signups, cancelled=self.cancelled,
            standins=[StandinRow(r["status"], parse_time(r["created_at"])) for r in self.standins],
        )


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

    async def report_data(self, room_id: str, start: datetime, now: datetime) -> RawReportRows:
        """The rows as stored; `RawReportRows.convert` (run it off the loop) makes ReportRows."""
        since, until = now_text(start), now_text(now)
        columns = "number, kind, category, zone, status, created_at"
        shifts = [shift_from_row(r) for r in await self._tx.fetchall(
            "SELECT * FROM shifts WHERE room_id = ?", (room_id,))]
        ids = [s.id for s in shifts]
        return RawReportRows(
            posts=await self._tx.fetchall(
                f"SELECT {columns} FROM posts WHERE room_id = ? "  # noqa: S608 - fixed columns
                "AND created_at >= ? AND created_at <= ?", (room_id, since, until)),
            ledger=await self._tx.fetchall(
                "SELECT * FROM ledger WHERE room_id = ? AND done_at >= ? AND done_at <= ?",
                (room_id, since, until)),
            open_needs=await self._tx.fetchall(
                f"SELECT {columns} FROM posts WHERE room_id = ? AND kind = 'need' "  # noqa: S608
                "AND status = 'open' ORDER BY created_at, id LIMIT ?", (room_id, OLDEST_SHOWN)),
            shifts=shifts,
            signups=await self._tx.shifts.signups(ids),
            cancelled=await self._tx.shifts.cancelled_occurrences(ids),
            standins=await self._tx.fetchall(
                "SELECT status, created_at FROM standin_requests WHERE room_id = ? "
                "AND created_at >= ? AND created_at <= ?", (room_id, since, until)),
        )

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
