"""The tool library: items members lend, and loans of them.

Items and loans name people (owner, borrower). A closed loan loses both names `retention_days`
after it was closed (`erase_closed_loans`); `!forgetme` removes the person's items and their
names from loans (the generic erasure pass in bot/store/privacy.py covers these columns too).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime

from bot.store.base import Area, now_text, parse_time

AVAILABLE = "available"
WITHDRAWN = "withdrawn"
ASKED, LENT, REFUSED, RETURNED = "asked", "lent", "refused", "returned"
ERASED = "erased"  # closed by !forgetme of the owner or the borrower
ACTIVE = (ASKED, LENT)


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    room_id: str
    number: int
    owner: str | None
    name: str
    notes: str | None
    loan_days: int
    status: str


@dataclass(frozen=True, slots=True)
class Loan:
    id: int
    item_id: int
    room_id: str
    borrower: str | None
    owner: str | None
    status: str
    lent_at: datetime | None
    due_on: date | None


def _item(row: sqlite3.Row) -> Item:
    return Item(row["id"], row["room_id"], row["number"], row["owner"], row["name"] or "",
                row["notes"], row["loan_days"], row["status"])


def _loan(row: sqlite3.Row) -> Loan:
    return Loan(row["id"], row["item_id"], row["room_id"], row["borrower"], row["owner"],
                row["status"], parse_time(row["lent_at"]) if row["lent_at"] else None,
                date.fromisoformat(row["due_on"]) if row["due_on"] else None)


class LibraryArea(Area):
    async def add_item(self, room_id: str, owner: str, name: str, notes: str | None,
                       loan_days: int, now: datetime) -> Item:
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "INSERT INTO items (room_id, number, owner, name, notes, loan_days, status, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (room_id, await self._tx.next_number("items", room_id), owner, name, notes, loan_days,
             AVAILABLE, stamp, stamp))
        return _item(row)

    async def item(self, room_id: str, number: int) -> Item | None:
        return await self._tx.fetch_by("items", _item, room_id=room_id, number=number)

    async def item_by_id(self, item_id: int) -> Item:
        found = await self._tx.fetch_by("items", _item, id=item_id)
        if found is None:
            raise KeyError(item_id)
        return found

    async def owned_item(self, owner: str, number: int) -> Item | None:
        """An owner's item by number from anywhere (for use in a DM); the newest if several."""
        row = await self._tx.fetchone(
            "SELECT * FROM items WHERE owner = ? AND number = ? ORDER BY id DESC LIMIT 1",
            (owner, number))
        return _item(row) if row else None

    async def search(self, room_id: str, word: str | None, limit: int) -> list[tuple[Item, Loan | None]]:
        """Listed items (with their current loan or request), matching `word` if given."""
        needle = (word or "").lower()
        rows = await self._tx.fetchall(
            "SELECT * FROM items WHERE room_id = ? AND status = ? AND owner IS NOT NULL "
            "AND (instr(lower(name), ?) > 0 OR instr(lower(coalesce(notes, '')), ?) > 0) "
            "ORDER BY number LIMIT ?",
            (room_id, AVAILABLE, needle, needle, limit))
        return [(_item(r), await self.active_loan(r["id"])) for r in rows]

    async def active_loan(self, item_id: int) -> Loan | None:
        row = await self._tx.fetchone(
            "SELECT * FROM loans WHERE item_id = ? AND status IN (?, ?) ORDER BY id DESC LIMIT 1",
            (item_id, *ACTIVE))
        return _loan(row) if row else None

    async def ask(self, item: Item, borrower: str, now: datetime) -> Loan:
        row = await self._tx.fetchone(
            "INSERT INTO loans (item_id, room_id, borrower, owner, status, asked_at) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
            (item.id, item.room_id, borrower, item.owner, ASKED, now_text(now)))
        return _loan(row)

    async def asked_of(self, owner: str) -> list[tuple[Loan, Item]]:
        """Requests waiting for this owner's yes or no, oldest first."""
        rows = await self._tx.fetchall(
            "SELECT * FROM loans WHERE owner = ? AND status = ? ORDER BY id", (owner, ASKED))
        return [(_loan(r), await self.item_by_id(r["item_id"])) for r in rows]

    async def set_loan(self, loan: Loan, status: str, now: datetime,
                       due_on: date | None = None) -> None:
        stamp = now_text(now)
        await self._tx.execute(
            "UPDATE loans SET status = ?, due_on = COALESCE(?, due_on), "
            "lent_at = CASE WHEN ? = 'lent' THEN ? ELSE lent_at END, "
            "closed_at = CASE WHEN ? IN ('refused', 'returned') THEN ? ELSE closed_at END "
            "WHERE id = ?",
            (status, due_on.isoformat() if due_on else None, status, stamp, status, stamp,
             loan.id))

    async def lent(self) -> list[tuple[Loan, Item]]:
        """Loans out now, for the scheduler's reminders."""
        rows = await self._tx.fetchall("SELECT * FROM loans WHERE status = ? ORDER BY id", (LENT,))
        return [(_loan(r), await self.item_by_id(r["item_id"])) for r in rows]

    async def forget(self, person: str, now: datetime) -> dict[str, int]:
        """`!forgetme`: the person's items are withdrawn and emptied, their loans closed and
        unnamed. Runs before the generic erasure pass, which would otherwise only blank names."""
        stamp = now_text(now)
        items = await self._tx.execute(
            "UPDATE items SET owner = NULL, name = NULL, notes = NULL, status = ?, updated_at = ? "
            "WHERE owner = ?", (WITHDRAWN, stamp, person))
        loans = await self._tx.execute(
            "UPDATE loans SET borrower = CASE WHEN borrower = ? THEN NULL ELSE borrower END, "
            "owner = CASE WHEN owner = ? THEN NULL ELSE owner END, "
            "status = CASE WHEN status IN (?, ?) THEN ? ELSE status END, "
            "closed_at = COALESCE(closed_at, ?) WHERE borrower = ? OR owner = ?",
            (person, person, *ACTIVE, ERASED, stamp, person, person))
        return {name: n for name, n in (("items", items.rowcount), ("loans", loans.rowcount))
                if n > 0}
