"""The front door: blocked senders, and how many requests a person has made (bot/front_door.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from bot.models import PostKind, PostStatus
from bot.store.base import Area, now_text, parse_time


@dataclass(frozen=True, slots=True)
class Block:
    person: str
    blocked_by: str  # '' once the coordinator who made it asked to be forgotten
    room_id: str | None  # with `number`: the request it was made from (`!block #14`)
    number: int | None
    created_at: datetime


def _block(row: sqlite3.Row) -> Block:
    return Block(row["person"], row["blocked_by"], row["room_id"], row["number"],
                 parse_time(row["created_at"]))


class FrontDoorArea(Area):
    async def block(self, person: str, blocked_by: str, now: datetime,
                    request: tuple[str, int] | None = None) -> bool:
        """Block `person`'s direct messages; False if they were blocked already."""
        room_id, number = request if request is not None else (None, None)
        cursor = await self._tx.execute(
            "INSERT INTO blocks (person, blocked_by, room_id, number, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (person) DO NOTHING",
            (person, blocked_by, room_id, number, now_text(now)))
        return cursor.rowcount > 0

    async def unblock(self, person: str) -> bool:
        cursor = await self._tx.execute("DELETE FROM blocks WHERE person = ?", (person,))
        return cursor.rowcount > 0

    async def blocked_from(self, room_id: str, number: int) -> Block | None:
        return await self._tx.fetch_by("blocks", _block, room_id=room_id, number=number)

    async def is_blocked(self, person: str) -> bool:
        row = await self._tx.fetchone("SELECT 1 FROM blocks WHERE person = ?", (person,))
        return row is not None

    async def blocks(self, limit: int) -> list[Block]:
        """The newest `limit` blocks, newest first."""
        rows = await self._tx.fetchall(
            "SELECT * FROM blocks ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_block(r) for r in rows]

    async def requests_by(self, author: str, since: datetime) -> tuple[int, list[datetime]]:
        """The person's private requests: how many are open or being handled, and when each
        made since `since` was made."""
        rows = await self._tx.fetchall(
            "SELECT status, created_at FROM posts WHERE author = ? AND kind = ? AND private = 1 "
            "AND (status IN (?, ?) OR created_at >= ?)",
            (author, PostKind.NEED.value, PostStatus.OPEN.value, PostStatus.CLAIMED.value,
             now_text(since)))
        open_now = sum(r["status"] in (PostStatus.OPEN.value, PostStatus.CLAIMED.value)
                       for r in rows)
        made = [parse_time(r["created_at"]) for r in rows if r["created_at"] >= now_text(since)]
        return open_now, made
