"""The transaction handle every area works through, and what the areas share.

A `Handle` belongs to the task that opened it. Every statement checks that it is still open and
still used by that task, so a write from another task can never silently join it, and a handle
kept after its block raises instead of writing outside any transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiosqlite

from bot.turns import let_others_run

T = TypeVar("T")
Params = Sequence[Any]


class StorageUsageError(RuntimeError):
    """Storage was used in a way that could lose or mix up writes (a bug, not bad data)."""


def now_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


ROWS_PER_TURN = 200  # rows turned into objects on the loop between two turns of other tasks


async def converted(rows: Sequence[sqlite3.Row], convert: Callable[[sqlite3.Row], T],
                    per_turn: int = ROWS_PER_TURN) -> list[T]:
    """`convert` on every row, letting other tasks run every `per_turn` rows: a post takes
    about 20 us, and a heavy user's 1,500 posts were one 17 ms step (bench/looplag.py)."""
    out = []
    for n, row in enumerate(rows):
        if n % per_turn == per_turn - 1:
            await let_others_run()
        out.append(convert(row))
    return out


def placeholders(values: Sequence[object]) -> str:
    """`?,?,?` for an IN list; `NULL` for an empty one (which then matches nothing)."""
    return ",".join("?" * len(values)) or "NULL"


class Handle:
    """One open transaction: statements run on the event loop's connection (short) or on
    aiosqlite's thread (bulk); see bot/storage.py for the rule."""

    def __init__(self, inline: sqlite3.Connection | None, thread: aiosqlite.Connection | None,
                 ) -> None:
        self._inline = inline
        self._thread = thread
        self._owner = asyncio.current_task()
        self._open = True
        self._savepoints = 0
        # Set by the delivery area when a message is queued; read by the storage on commit.
        self.queued_messages = False
        # A need was posted in a pod linked to a network, or an escalated one closed: the
        # scheduler's next wake-up changes (bot/scheduler.py).
        self.network_changed = False

    @property
    def bulk(self) -> bool:
        return self._thread is not None

    def _check(self) -> None:
        if not self._open:
            raise StorageUsageError("this transaction has ended; open a new one with "
                                    "`async with storage.transaction() as tx`")
        if asyncio.current_task() is not self._owner:
            raise StorageUsageError("a transaction was used by a task that did not open it")

    def close(self) -> None:
        self._open = False

    async def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor | aiosqlite.Cursor:
        self._check()
        if self._thread is not None:
            return await self._thread.execute(sql, params)
        return self._inline.execute(sql, params)

    async def executemany(self, sql: str, rows: list[tuple]) -> sqlite3.Cursor | aiosqlite.Cursor:
        self._check()
        if self._thread is not None:
            return await self._thread.executemany(sql, rows)
        return self._inline.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        self._check()
        if self._thread is not None:
            return list(await self._thread.execute_fetchall(sql, params))
        return self._inline.execute(sql, params).fetchall()

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetch_by(self, table: str, convert: Callable[[sqlite3.Row], T],
                       **keys: object) -> T | None:
        """The one row of `table` whose columns equal `keys` (an id, or a room and a number)."""
        where = " AND ".join(f"{column} = ?" for column in keys)
        row = await self.fetchone(
            f"SELECT * FROM {table} WHERE {where} ORDER BY rowid LIMIT 1",  # noqa: S608 - fixed names
            tuple(keys.values()),
        )
        return convert(row) if row is not None else None

    async def next_number(self, table: str, room_id: str) -> int:
        """The next per-room number (#7, S3, R2) for a new row of `table`."""
        row = await self.fetchone(
            f"SELECT COALESCE(MAX(number), 0) + 1 FROM {table} WHERE room_id = ?",  # noqa: S608
            (room_id,),
        )
        return row[0]

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Undo only what this block wrote if it raises; the transaction goes on."""
        self._check()
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self.execute(f"ROLLBACK TO {name}")
            raise
        finally:
            await self.execute(f"RELEASE {name}")


class Area:
    """One area's statements, bound to a transaction."""

    def __init__(self, tx: Handle) -> None:
        self._tx = tx
