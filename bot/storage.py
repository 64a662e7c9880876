"""The entry point to the database: opening it, migrating it, and transactions.

Every read and write goes through a transaction you hold:

    async with storage.transaction() as tx:
        post = await tx.posts.by_number(room_id, 14)
        await tx.delivery.enqueue([...], now)

The block commits when it ends and rolls back if it raises. Transactions are serialised; a
handle belongs to the task that opened it (another task using it, or using it after its block,
is a `StorageUsageError`), and opening a second transaction inside the first is an error rather
than a deadlock. Areas of the schema live in `bot/store/`, one module each.

Where statements run, one rule: a transaction whose work is bounded by index lookups (commands,
syncs, deliveries: the default) runs on the event loop, on a plain sqlite3 connection, because a
statement there takes microseconds while a trip to a thread and back costs 50-130 us and a command
needs a dozen (docs/performance.md). Anything whose work grows with the data (the integrity check,
migrations, the retention sweep, erasure scans, reports) is a bulk transaction,
`storage.transaction(bulk=True)`, and runs on aiosqlite's thread so that the loop stays free.
The loop's connection never waits on a lock while blocking the loop: it takes the write lock up
front (`BEGIN IMMEDIATE`, no busy timeout) and, if another process holds it, sleeps
asynchronously and tries again. No transaction ever waits on the network.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bot.store.actions import ActionsArea
from bot.store.base import Handle, StorageUsageError, now_text
from bot.store.delivery import DeliveryArea
from bot.store.front_door import FrontDoorArea
from bot.store.library import LibraryArea
from bot.store.migrations import MIGRATIONS, Migration
from bot.store.network import NetworkArea
from bot.store.posts import PostsArea
from bot.store.privacy import SQL_FUNCTIONS, PrivacyArea
from bot.store.records import RecordsArea
from bot.store.rooms import RoomStateArea
from bot.store.settings import SettingsArea
from bot.store.shifts import ShiftsArea
from bot.store.tree import TreeArea

__all__ = ["MIGRATIONS", "Storage", "StorageError", "StorageUsageError", "Transaction",
           "backup_database", "create_private_file"]

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


_LOCK_WAIT_SECONDS = 10  # how long a transaction waits for another process's write lock
# Rows written between checkpoints of the write-ahead log (reads, most of a command's
# transactions, add nothing to the log and do not count; a sweep or an erasure adds up its steps).
_CHECKPOINT_AFTER_ROWS = 2000
# Per connection. With WAL, synchronous=NORMAL loses nothing when the process crashes (kill -9);
# only a power cut can roll back the last commits, and the outbox's row-derived transaction ids
# make a redo of those harmless. It saves an fsync per commit. secure_delete overwrites erased
# rows in the file, so what retention and !forgetme remove cannot be read back from the disk.
_CONNECTION_PRAGMAS = ("PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON",
                       "PRAGMA secure_delete = ON")


class Transaction(Handle):
    """A transaction and the areas of the schema, each working through it."""

    def __init__(self, inline: sqlite3.Connection | None,
                 thread: aiosqlite.Connection | None) -> None:
        super().__init__(inline, thread)
        self.posts = PostsArea(self)
        self.shifts = ShiftsArea(self)
        self.delivery = DeliveryArea(self)
        self.privacy = PrivacyArea(self)
        self.settings = SettingsArea(self)
        self.library = LibraryArea(self)
        self.records = RecordsArea(self)
        self.actions = ActionsArea(self)
        self.network = NetworkArea(self)
        self.front_door = FrontDoorArea(self)
        self.tree = TreeArea(self)
        self.rooms = RoomStateArea(self)


def create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


def _unreadable(exc: BaseException) -> StorageError:
    return StorageError(f"the database cannot be read ({exc}); it was left untouched. "
                        "Restore it from a backup or move it aside.")


class Storage:
    def __init__(self, thread: aiosqlite.Connection, path: Path) -> None:
        self._thread = thread
        self._thread.row_factory = sqlite3.Row
        self._path = path
        self._inline: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task | None = None
        # Counts committed transactions that queued messages, so delivery can tell that nothing
        # was queued while it sent.
        self.outbox_writes = 0
        self._rows_at_checkpoint = 0
        self._checkpoint: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self._path

    # ---- opening and migrations ------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, migrations: list[Migration] = MIGRATIONS) -> Storage:
        """Open (creating if needed) and migrate. Refuses a corrupt or newer database."""
        path = Path(path)
        create_private_file(path)
        try:
            thread = await aiosqlite.connect(str(path), timeout=_LOCK_WAIT_SECONDS,
                                             isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        storage = cls(thread, path)
        try:
            await storage._prepare(migrations)
            storage._inline = storage._connect_inline()
        except BaseException:
            await thread.close()
            raise
        return storage

    def _connect_inline(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly.
        db = sqlite3.connect(self._path, timeout=0, isolation_level=None)
        db.row_factory = sqlite3.Row
        for pragma in _CONNECTION_PRAGMAS:
            db.execute(pragma)
        # A checkpoint copies the write-ahead log into the database file: after a bulk
        # transaction (an erasure overwriting thousands of pages) that took hundreds of
        # milliseconds inside whichever commit crossed the threshold, on the loop. Checkpoints
        # run on a thread instead (see _checkpoint_soon).
        db.execute("PRAGMA wal_autocheckpoint = 0")
        for name, arity, function in SQL_FUNCTIONS:
            db.create_function(name, arity, function, deterministic=True)
        return db

    async def _prepare(self, migrations: list[Migration]) -> None:
        db = self._thread
        try:
            await db.execute(f"PRAGMA busy_timeout = {_LOCK_WAIT_SECONDS * 1000}")
            check = await (await db.execute("PRAGMA quick_check")).fetchone()
            if check is None or check[0] != "ok":
                raise StorageError(
                    f"the database failed its integrity check ({check[0] if check else 'no answer'}); "
                    "it was left untouched. Restore it from a backup or move it aside."
                )
            await db.execute("PRAGMA journal_mode = WAL")
            for pragma in _CONNECTION_PRAGMAS:
                await db.execute(pragma)
            for name, arity, function in SQL_FUNCTIONS:
                await db.create_function(name, arity, function, deterministic=True)
            current = await self._current_version()
        except sqlite3.DatabaseError as exc:
            raise _unreadable(exc) from exc
        if current > len(migrations):
            raise StorageError(
                f"the database is at schema version {current}, newer than this bot knows "
                f"({len(migrations)}). Upgrade mutual-aid-bot; the database was left untouched."
            )
        for version in range(current + 1, len(migrations) + 1):
            await self._apply(version, migrations[version - 1])

    async def _current_version(self) -> int:
        await self._thread.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
        row = await (await self._thread.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        return row[0] or 0

    async def _apply(self, version: int, migration: Migration) -> None:
        """One step and its version row, committed together or not at all."""
        log.info("migrating the database to schema version %d (%s)", version, migration.name)
        db = self._thread
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements():
                await db.execute(statement)
            await db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                             (version, now_text(datetime.now(UTC))))
            await db.execute("COMMIT")
        except BaseException as exc:
            await db.execute("ROLLBACK")
            if not isinstance(exc, Exception):
                raise
            raise StorageError(
                f"upgrading the database to schema version {version} ({migration.name}) failed: "
                f"{exc}. Nothing of that step was kept: the database is still at version "
                f"{version - 1} and the bot did not start. Report this; a fixed release will "
                "upgrade it.") from exc

    async def schema_version(self) -> int:
        row = await (await self._thread.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        return row[0] or 0

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        async with self._lock:
            if self._inline is not None:
                self._inline.close()
                self._inline = None
            await self._thread.close()

    # ---- transactions ----------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self, *, bulk: bool = False) -> AsyncIterator[Transaction]:
        """One transaction; `bulk=True` runs it on aiosqlite's thread (see the module doc)."""
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            raise StorageUsageError(
                "a transaction was opened inside another one in the same task; use the "
                "outer transaction's handle (nesting would deadlock)")
        async with self._lock:
            if self._inline is None:
                raise StorageUsageError("storage is closed")
            self._holder = task
            try:
                if bulk:
                    await self._begin_bulk()
                    tx = Transaction(None, self._thread)
                else:
                    await self._begin_inline()
                    tx = Transaction(self._inline, None)
                try:
                    yield tx
                    tx.close()
                    await self._end(bulk, "COMMIT")
                except BaseException:
                    tx.close()
                    await self._end(bulk, "ROLLBACK")
                    raise
            finally:
                self._holder = None
            if tx.queued_messages:
                self.outbox_writes += 1
            written = self._inline.total_changes + self._thread.total_changes
            if written - self._rows_at_checkpoint >= _CHECKPOINT_AFTER_ROWS:
                self._rows_at_checkpoint = written
                self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """A checkpoint on its own connection in a thread, never on the loop (see `_checkpoint`)."""
        if self._checkpoint is None or self._checkpoint.done():
            self._checkpoint = asyncio.create_task(asyncio.to_thread(_checkpoint, self._path),
                                                   name="database checkpoint")

    async def _begin_bulk(self) -> None:
        try:
            await self._thread.execute("BEGIN IMMEDIATE")
        except asyncio.CancelledError:
            # The thread runs the BEGIN all the same: without a ROLLBACK queued behind it, its
            # write lock outlived the cancelled task and locked every other writer out.
            await self._rollback_bulk()
            raise

    async def _rollback_bulk(self) -> None:
        try:
            await self._thread.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            # A BEGIN that failed, or a COMMIT that the thread finished after its task was
            # cancelled, left nothing to roll back.
            if "no transaction is active" not in str(exc):
                raise

    async def _end(self, bulk: bool, statement: str) -> None:
        if not bulk:
            self._inline.execute(statement)
        elif statement == "ROLLBACK":
            await self._rollback_bulk()
        else:
            await self._thread.execute(statement)

    async def _begin_inline(self) -> None:
        """Take the write lock, waiting (without blocking the loop) while another process has it."""
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        pause = 0.005
        while True:
            try:
                self._inline.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    # ---- backups ---------------------------------------------------------------------------

    async def backup(self, target: Path) -> None:
        """A consistent copy of the database while the bot runs (see `backup_database`)."""
        await asyncio.to_thread(backup_database, self._path, target)


def _checkpoint(path: Path) -> None:
    """Copy the write-ahead log into the database and have the next writer start the log
    afresh. A passive checkpoint never finished while commands kept committing, so the log was
    never restarted: it grew to 55 MB over a 2 MB database in a minute of the pipeline bench,
    and every read looked through its index, halving the commands per second. RESTART holds
    writers off while it copies (a few milliseconds); the loop's connection meanwhile waits
    asynchronously for the lock, as it does for any other writer."""
    db = sqlite3.connect(path, timeout=_LOCK_WAIT_SECONDS)
    try:
        db.execute("PRAGMA wal_checkpoint(RESTART)")
    except sqlite3.Error as exc:  # retried after the next commits; nothing depends on it
        log.warning("database checkpoint failed: %s", exc)
    finally:
        db.close()


def backup_database(source: Path, target: Path) -> None:
    """Copy a live database with SQLite's online backup API, in one step (one read snapshot,
    so writers in WAL mode are never blocked and the copy never restarts), check the copy, and
    move it into place 0600. Refuses to overwrite an existing file."""
    target = Path(target)
    if target.exists():
        raise StorageError(f"{target} already exists; choose a new file name for the backup")
    if not Path(source).exists():
        raise StorageError(f"there is no database at {source}")
    partial = target.with_name(target.name + ".partial")
    create_private_file(partial)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=_LOCK_WAIT_SECONDS)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            check = dst.execute("PRAGMA integrity_check").fetchone()
            if check is None or check[0] != "ok":
                raise StorageError(f"the backup failed its integrity check ({check})")
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
            src.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise StorageError(f"the backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
