"""The only place SQL lives.

All access happens inside `transaction()`, which serialises callers with a lock and commits on
success, so a command's effects, its "handled" mark and its replies in the outbox are written
together or not at all.

Two connections to one WAL database, used one at a time under that lock:

- aiosqlite (a thread) for whatever can take long: the integrity check and migrations at start,
  and transactions opened with `transaction(long=True)` (the retention sweep).
- a plain sqlite3 connection on the event loop for the short transactions of commands, syncs and
  deliveries. A statement here takes microseconds; a trip to aiosqlite's thread and back costs
  50-130 us on a small VM, and a command needs a dozen statements (docs/performance.md). It never
  waits on a lock while blocking the loop: it takes the write lock up front (`BEGIN IMMEDIATE`,
  no busy timeout) and, if another process holds it, sleeps asynchronously and tries again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bot.context import Attachment, Incoming, Outgoing
from bot.formatting import Rendered
from bot.models import Category, ParsedPost, Post, PostKind, PostStatus, Urgency
from bot.schedule_rules import ShiftWhen
from bot.shift_models import Shift, Signup, StandinRequest

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

_LOCK_WAIT_SECONDS = 10  # how long a transaction waits for another process's write lock
# Per connection. With WAL, synchronous=NORMAL loses nothing when the process crashes (kill -9);
# only a power cut can roll back the last commits, and the outbox's row-derived transaction ids
# make a redo of those harmless. It saves an fsync per commit.
_CONNECTION_PRAGMAS = ("PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON")


async def _m001_initial(db: aiosqlite.Connection) -> None:
    await db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE inbox (
            event_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT NOT NULL,
            is_direct INTEGER NOT NULL,
            ts TEXT NOT NULL,
            seq INTEGER NOT NULL,
            handled_at TEXT
        );
        CREATE INDEX inbox_pending ON inbox (room_id, seq) WHERE handled_at IS NULL;
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT,
            user_id TEXT,
            body TEXT NOT NULL,
            html TEXT NOT NULL,
            mentions TEXT NOT NULL,
            reply_to TEXT,
            attachment_name TEXT,
            attachment_type TEXT,
            attachment_data BLOB,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            event_id TEXT,
            CHECK ((room_id IS NULL) <> (user_id IS NULL))
        );
        CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
        CREATE TABLE room_counters (room_id TEXT PRIMARY KEY, last_number INTEGER NOT NULL);
        CREATE TABLE posts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('need', 'offer')),
            author TEXT,
            category TEXT NOT NULL,
            urgency INTEGER NOT NULL,
            text TEXT,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            claimed_by TEXT,
            private INTEGER NOT NULL DEFAULT 0,
            anonymous INTEGER NOT NULL DEFAULT 0,
            UNIQUE (room_id, number)
        );
        CREATE INDEX posts_open ON posts (room_id, kind, category, status, urgency DESC, created_at);
        CREATE INDEX posts_author ON posts (author, status);
        CREATE TABLE dm_rooms (user_id TEXT PRIMARY KEY, room_id TEXT NOT NULL);
        CREATE TABLE room_notes (
            room_id TEXT NOT NULL,
            note TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (room_id, note)
        );
        """
    )


async def _m_shifts(db: aiosqlite.Connection) -> None:
    """Shifts, sign-ups, stand-ins, per-room settings, scheduled sends, post renewal."""
    await db.executescript(
        """
        CREATE TABLE room_settings (
            room_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (room_id, key)
        );
        CREATE TABLE shifts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            title TEXT NOT NULL,
            place TEXT,
            needed INTEGER NOT NULL,
            when_json TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (room_id, number)
        );
        CREATE TABLE shift_cancelled (
            shift_id INTEGER NOT NULL REFERENCES shifts (id),
            occurrence TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (shift_id, occurrence)
        );
        CREATE TABLE shift_signups (
            shift_id INTEGER NOT NULL REFERENCES shifts (id),
            occurrence TEXT NOT NULL,
            person TEXT NOT NULL,
            present INTEGER NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (shift_id, occurrence, person)
        );
        CREATE TABLE standin_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            shift_id INTEGER NOT NULL REFERENCES shifts (id),
            occurrence TEXT NOT NULL,
            requester TEXT NOT NULL,
            status TEXT NOT NULL,
            covered_by TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (room_id, number)
        );
        CREATE TABLE noshows (
            shift_id INTEGER NOT NULL REFERENCES shifts (id),
            occurrence TEXT NOT NULL,
            person TEXT NOT NULL,
            recorded_by TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (shift_id, occurrence, person)
        );
        CREATE TABLE sent_reminders (
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            occurrence TEXT NOT NULL,
            offset_key TEXT NOT NULL,
            person TEXT NOT NULL,
            outcome TEXT NOT NULL,
            at TEXT NOT NULL,
            UNIQUE (kind, ref, occurrence, offset_key, person)
        );
        ALTER TABLE posts ADD COLUMN renewed_at TEXT;
        """
    )


async def _m_privacy(db: aiosqlite.Connection) -> None:
    """Private intake conversations, introductions, post event ids, redactions, retention."""
    await db.executescript(
        """
        ALTER TABLE posts ADD COLUMN event_id TEXT;
        ALTER TABLE posts ADD COLUMN details_shown INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE posts ADD COLUMN erased_at TEXT;
        CREATE INDEX posts_event ON posts (event_id) WHERE event_id IS NOT NULL;
        ALTER TABLE outbox ADD COLUMN redacts TEXT;
        CREATE TABLE intake (
            user_id TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            flow TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE introductions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            post_id INTEGER NOT NULL REFERENCES posts (id),
            requester TEXT NOT NULL,
            helper TEXT NOT NULL,
            status TEXT NOT NULL,
            room_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX introductions_requester ON introductions (requester, status);
        """
    )


# Ordered: index + 1 is the schema version the step brings the database to. Append, never edit.
async def _m_inbox_seq(db: aiosqlite.Connection) -> None:
    """An index for the next inbox sequence number: without it every insert scans all of the
    inbox's history."""
    await db.execute("CREATE INDEX inbox_seq ON inbox (seq)")


MIGRATIONS: list[Migration] = [_m001_initial, _m_shifts, _m_privacy, _m_inbox_seq]


def _now_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    out: Outgoing


_KINDS = {k.value: k for k in PostKind}
_CATEGORIES = {c.value: c for c in Category}
_URGENCIES = {int(u): u for u in Urgency}
_STATUSES = {s.value: s for s in PostStatus}


def _post_from_row(row: sqlite3.Row) -> Post:
    return Post(
        id=row["id"],
        room_id=row["room_id"],
        number=row["number"],
        kind=_KINDS[row["kind"]],
        author=row["author"] or "",
        category=_CATEGORIES[row["category"]],
        urgency=_URGENCIES[row["urgency"]],
        text=row["text"] or "",
        status=_STATUSES[row["status"]],
        created_at=_parse_time(row["created_at"]),
        claimed_by=row["claimed_by"],
        private=bool(row["private"]),
        anonymous=bool(row["anonymous"]),
        details_shown=bool(row["details_shown"]),
        event_id=row["event_id"],
    )


def create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


class Storage:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._db.row_factory = sqlite3.Row
        self._path = path
        self._inline: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._in_transaction = False
        self._long = False
        # Counts enqueue() calls, so delivery can tell that nothing was queued while it sent.
        self.outbox_writes = 0

    # ---- opening, migrations, transactions ------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Storage:
        """Open (creating if needed) and migrate. Refuses a corrupt or newer database."""
        path = Path(path)
        create_private_file(path)
        try:
            db = await aiosqlite.connect(str(path), timeout=_LOCK_WAIT_SECONDS)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        storage = cls(db, path)
        try:
            await storage._prepare()
            storage._inline = storage._connect_inline()
        except BaseException:
            await db.close()
            raise
        return storage

    def _connect_inline(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly.
        db = sqlite3.connect(self._path, timeout=0, isolation_level=None)
        db.row_factory = sqlite3.Row
        for pragma in _CONNECTION_PRAGMAS:
            db.execute(pragma)
        return db

    async def _prepare(self) -> None:
        try:
            await self._db.execute(f"PRAGMA busy_timeout = {_LOCK_WAIT_SECONDS * 1000}")
            check = await (await self._db.execute("PRAGMA quick_check")).fetchone()
            if check is None or check[0] != "ok":
                raise StorageError(
                    f"the database failed its integrity check ({check[0] if check else 'no answer'}); "
                    "it was left untouched. Restore it from a backup or move it aside."
                )
            await self._db.execute("PRAGMA journal_mode = WAL")
            for pragma in _CONNECTION_PRAGMAS:
                await self._db.execute(pragma)
            await self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"the database cannot be read ({exc}); it was left untouched. "
                "Restore it from a backup or move it aside."
            ) from exc

    async def _migrate(self) -> None:
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = await (await self._db.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise StorageError(
                f"the database is at schema version {current}, newer than this bot knows "
                f"({len(MIGRATIONS)}). Upgrade mutual-aid-bot; the database was left untouched."
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            log.info("migrating database to schema version %d", version)
            try:
                await MIGRATIONS[version - 1](self._db)
                await self._db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _now_text(datetime.now(UTC))),
                )
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
        await self._db.commit()

    async def schema_version(self) -> int:
        row = await (await self._db.execute("SELECT MAX(version) FROM schema_version")).fetchone()
        return row[0] or 0

    async def close(self) -> None:
        async with self._lock:
            if self._inline is not None:
                self._inline.close()
            await self._db.close()

    @asynccontextmanager
    async def transaction(self, *, long: bool = False) -> AsyncIterator[Storage]:
        """One transaction; `long=True` runs it on aiosqlite's thread (see the module doc)."""
        async with self._lock:
            if not long:
                await self._begin_inline()
            self._in_transaction, self._long = True, long
            try:
                yield self
                if not long:
                    self._inline_db().execute("COMMIT")
                elif self._db.in_transaction:  # sqlite3 begins one only before a write
                    await self._db.commit()
            except BaseException:
                if not long:
                    self._inline_db().execute("ROLLBACK")
                elif self._db.in_transaction:
                    await self._db.rollback()
                raise
            finally:
                self._in_transaction = self._long = False

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Inside a transaction: undo only what this block wrote if it raises."""
        self._check_in_transaction()
        if self._long:
            raise RuntimeError("savepoints are for short transactions")
        db = self._inline_db()
        db.execute("SAVEPOINT block")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK TO block")
            raise
        finally:
            db.execute("RELEASE block")

    def _inline_db(self) -> sqlite3.Connection:
        if self._inline is None:
            raise RuntimeError("storage is closed")
        return self._inline

    async def _begin_inline(self) -> None:
        """Take the write lock, waiting (without blocking the loop) while another process has it."""
        db = self._inline_db()
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        pause = 0.005
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    def _check_in_transaction(self) -> None:
        if not self._in_transaction:
            raise RuntimeError("storage used outside storage.transaction()")

    async def _execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor | aiosqlite.Cursor:
        self._check_in_transaction()
        if self._long:
            return await self._db.execute(sql, params)
        return self._inline_db().execute(sql, params)

    async def _executemany(self, sql: str, rows: list[tuple]) -> sqlite3.Cursor | aiosqlite.Cursor:
        self._check_in_transaction()
        if self._long:
            return await self._db.executemany(sql, rows)
        return self._inline_db().executemany(sql, rows)

    async def _fetchall(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        self._check_in_transaction()
        if self._long:
            return list(await self._db.execute_fetchall(sql, params))
        return self._inline_db().execute(sql, params).fetchall()

    async def _fetchone(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    # ---- key/value state (sync token, first-start marks) ----------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def note_once(self, room_id: str, note: str, now: datetime) -> bool:
        """Record that `note` was given in a room; True only the first time."""
        cursor = await self._execute(
            "INSERT OR IGNORE INTO room_notes (room_id, note, at) VALUES (?, ?, ?)",
            (room_id, note, _now_text(now)),
        )
        return cursor.rowcount == 1

    # ---- inbox: commands received, handled exactly once ----------------------------------

    async def add_to_inbox(self, items: list[Incoming]) -> int:
        """Store received commands (known event ids are ignored); returns how many were new."""
        # Each row's seq is taken after the previous row's insert.
        cursor = await self._executemany(
            "INSERT OR IGNORE INTO inbox (event_id, room_id, sender, text, is_direct, ts, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox))",
            [(item.event_id, item.room_id, item.sender, item.text, int(item.is_direct),
              _now_text(item.timestamp)) for item in items],
        )
        return max(cursor.rowcount, 0)

    async def is_known_event(self, event_id: str) -> bool:
        return await self._fetchone("SELECT 1 FROM inbox WHERE event_id = ?", (event_id,)) is not None

    async def pending_rooms(self) -> list[str]:
        rows = await self._fetchall(
            "SELECT room_id, MIN(seq) AS first FROM inbox WHERE handled_at IS NULL "
            "GROUP BY room_id ORDER BY first"
        )
        return [r["room_id"] for r in rows]

    async def next_pending_and_more(self, room_id: str) -> tuple[Incoming | None, bool]:
        """The room's next pending command, and whether another one is pending after it."""
        rows = await self._fetchall(
            "SELECT * FROM inbox WHERE room_id = ? AND handled_at IS NULL ORDER BY seq LIMIT 2",
            (room_id,),
        )
        if not rows:
            return None, False
        row = rows[0]
        return Incoming(
            event_id=row["event_id"], room_id=row["room_id"], sender=row["sender"],
            text=row["text"], is_direct=bool(row["is_direct"]), timestamp=_parse_time(row["ts"]),
        ), len(rows) > 1

    async def mark_handled(self, event_id: str, now: datetime) -> None:
        # The text is only needed until the command has run; keeping it would be a record of
        # everything people typed.
        await self._execute(
            "UPDATE inbox SET handled_at = ?, text = '' WHERE event_id = ?", (_now_text(now), event_id)
        )

    # ---- outbox: replies delivered at least once, deduplicated by transaction id ----------

    async def enqueue(self, items: list[Outgoing], now: datetime) -> None:
        if not items:
            return
        self.outbox_writes += 1
        stamp = _now_text(now)
        rows = []
        for out in items:
            attachment = out.attachment
            rows.append(
                (out.room_id, out.user_id, out.message.body, out.message.html,
                 json.dumps(list(out.message.mentions)), out.reply_to,
                 attachment.filename if attachment else None,
                 attachment.mimetype if attachment else None,
                 attachment.data if attachment else None, stamp, out.redacts))
        # Rows keep the order of `items` (AUTOINCREMENT ids, one statement after another).
        await self._executemany(
            "INSERT INTO outbox (room_id, user_id, body, html, mentions, reply_to, "
            "attachment_name, attachment_type, attachment_data, created_at, redacts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    async def pending_outbox(self, limit: int = 50) -> list[OutboxItem]:
        rows = await self._fetchall(
            "SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,)
        )
        items = []
        for row in rows:
            attachment = None
            if row["attachment_name"] is not None:
                attachment = Attachment(
                    row["attachment_name"], row["attachment_type"], bytes(row["attachment_data"])
                )
            message = Rendered(row["body"], row["html"], tuple(json.loads(row["mentions"])))
            items.append(OutboxItem(row["id"], Outgoing(
                message, room_id=row["room_id"], user_id=row["user_id"],
                reply_to=row["reply_to"], attachment=attachment, redacts=row["redacts"],
            )))
        return items

    async def mark_sent(self, done: list[tuple[int, str | None]], now: datetime) -> None:
        """Record (outbox id, event id) pairs as sent, in one statement.

        Sent messages are in the room's history; the copy here is no longer needed. Who was
        mentioned is kept (until retention or !forgetme) so those messages can be redacted.
        """
        if not done:
            return
        stamp = _now_text(now)
        await self._executemany(
            "UPDATE outbox SET sent_at = ?, event_id = ?, body = '', html = '', "
            "attachment_data = NULL WHERE id = ?",
            [(stamp, event_id, outbox_id) for outbox_id, event_id in done],
        )

    # ---- direct-message rooms -------------------------------------------------------------

    async def get_dm_room(self, user_id: str) -> str | None:
        row = await self._fetchone("SELECT room_id FROM dm_rooms WHERE user_id = ?", (user_id,))
        return row["room_id"] if row else None

    async def dm_partner(self, room_id: str) -> str | None:
        row = await self._fetchone("SELECT user_id FROM dm_rooms WHERE room_id = ?", (room_id,))
        return row["user_id"] if row else None

    async def set_dm_room(self, user_id: str, room_id: str) -> None:
        await self._execute(
            "INSERT INTO dm_rooms (user_id, room_id) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
            (user_id, room_id),
        )

    # ---- posts ----------------------------------------------------------------------------

    async def create_post(
        self, room_id: str, kind: PostKind, author: str, parsed: ParsedPost, now: datetime,
        *, private: bool = False, anonymous: bool = False, details_shown: bool = False,
        event_id: str | None = None,
    ) -> Post:
        row = await self._fetchone(
            "INSERT INTO room_counters (room_id, last_number) VALUES (?, 1) "
            "ON CONFLICT (room_id) DO UPDATE SET last_number = last_number + 1 "
            "RETURNING last_number",
            (room_id,),
        )
        number = row[0]
        stamp = _now_text(now)
        columns = ["room_id", "number", "kind", "author", "category", "urgency", "text", "status",
                   "created_at", "updated_at", "private", "anonymous"]
        values: list[object] = [room_id, number, kind.value, author, parsed.category.value,
                                int(parsed.urgency), parsed.text, PostStatus.OPEN.value, stamp,
                                stamp, int(private), int(anonymous)]
        for column, value in (("details_shown", int(details_shown)), ("event_id", event_id)):
            if value:  # only when set, so older schemas (in migration tests) still work
                columns.append(column)
                values.append(value)
        sql = (f"INSERT INTO posts ({', '.join(columns)}) "  # noqa: S608 - fixed column names
               f"VALUES ({', '.join('?' * len(columns))}) RETURNING *")
        row = await self._fetchone(sql, values)
        return _post_from_row(row)

    async def get_post_by_id(self, post_id: int) -> Post:
        row = await self._fetchone("SELECT * FROM posts WHERE id = ?", (post_id,))
        if row is None:
            raise KeyError(post_id)
        return _post_from_row(row)

    async def get_post(self, room_id: str, number: int) -> Post | None:
        row = await self._fetchone(
            "SELECT * FROM posts WHERE room_id = ? AND number = ?", (room_id, number)
        )
        return _post_from_row(row) if row else None

    async def list_posts(
        self, room_id: str | None = None, *, kind: PostKind | None = None,
        category: Category | None = None, statuses: tuple[PostStatus, ...] = (PostStatus.OPEN,),
        author: str | None = None, limit: int = 50,
    ) -> list[Post]:
        clauses = [f"status IN ({','.join('?' * len(statuses))})"]
        params: list[object] = [s.value for s in statuses]
        for column, value in (("room_id", room_id), ("kind", kind), ("category", category),
                              ("author", author)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value.value if isinstance(value, PostKind | Category) else value)
        params.append(limit)
        rows = await self._fetchall(
            f"SELECT * FROM posts WHERE {' AND '.join(clauses)} "  # noqa: S608 - columns are fixed
            "ORDER BY urgency DESC, created_at, id LIMIT ?",
            params,
        )
        return [_post_from_row(r) for r in rows]

    async def match_candidates(self, post: Post, limit: int) -> list[Post]:
        """Open posts of the opposite kind in the same room and category, not by the same
        person, best first (the order of `matching.rank_key`)."""
        rows = await self._fetchall(
            "SELECT * FROM posts WHERE room_id = ? AND kind = ? AND category = ? AND status = ? "
            "AND id != ? AND author IS NOT ? ORDER BY urgency DESC, created_at, id LIMIT ?",
            (post.room_id, post.kind.opposite.value, post.category.value, PostStatus.OPEN.value,
             post.id, post.author, limit),
        )
        return [_post_from_row(r) for r in rows]

    async def set_post_status(
        self, post: Post, status: PostStatus, now: datetime, *, claimed_by: str | None = None
    ) -> Post:
        row = await self._fetchone(
            "UPDATE posts SET status = ?, claimed_by = COALESCE(?, claimed_by), updated_at = ? "
            "WHERE id = ? RETURNING *",
            (status.value, claimed_by, _now_text(now), post.id),
        )
        if row is None:
            raise KeyError(post.id)
        return _post_from_row(row)

    async def table_rows_mentioning(self, text: str) -> dict[str, int]:
        """Per table, how many rows contain `text` in any text column (for privacy checks)."""
        tables = await self._fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        counts: dict[str, int] = {}
        for table in tables:
            name = table["name"]
            columns = await self._fetchall(f"PRAGMA table_info({name})")
            text_columns = [c["name"] for c in columns if (c["type"] or "").upper() in ("TEXT", "")]
            if not text_columns:
                continue
            condition = " OR ".join(f"instr({c}, ?) > 0" for c in text_columns)
            row = await self._fetchone(
                f"SELECT COUNT(*) FROM {name} WHERE {condition}",  # noqa: S608 - names from schema
                [text] * len(text_columns),
            )
            counts[name] = row[0]
        return counts

    # ---- per-room settings ----------------------------------------------------------------

    # ---- privacy: intake conversations, introductions, retention, forget-me ----------------

    async def get_post_by_event(self, room_id: str, event_id: str) -> Post | None:
        row = await self._fetchone(
            "SELECT * FROM posts WHERE room_id = ? AND event_id = ?", (room_id, event_id)
        )
        return _post_from_row(row) if row else None

    async def find_own_post(self, author: str, number: int) -> Post | None:
        """A person's post by number from anywhere (for use in a DM); the newest if several."""
        row = await self._fetchone(
            "SELECT * FROM posts WHERE author = ? AND number = ? ORDER BY id DESC LIMIT 1",
            (author, number),
        )
        return _post_from_row(row) if row else None

    async def unclaim_post(self, post: Post, now: datetime) -> Post:
        await self._execute(
            "UPDATE posts SET status = ?, claimed_by = NULL, updated_at = ? WHERE id = ?",
            (PostStatus.OPEN.value, _now_text(now), post.id),
        )
        return await self.get_post_by_id(post.id)

    async def get_intake(self, user_id: str) -> tuple[str, str, dict, datetime] | None:
        """(room_id, flow, state, updated_at) of the person's conversation, if any."""
        row = await self._fetchone("SELECT * FROM intake WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        return row["room_id"], row["flow"], json.loads(row["state"]), _parse_time(row["updated_at"])

    async def save_intake(self, user_id: str, room_id: str, flow: str, state: dict,
                          now: datetime) -> None:
        await self._execute(
            "INSERT INTO intake (user_id, room_id, flow, state, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, flow = excluded.flow, "
            "state = excluded.state, updated_at = excluded.updated_at",
            (user_id, room_id, flow, json.dumps(state), _now_text(now)),
        )

    async def end_intake(self, user_id: str) -> bool:
        cursor = await self._execute("DELETE FROM intake WHERE user_id = ?", (user_id,))
        return cursor.rowcount > 0

    async def idle_intakes(self, before: datetime) -> list[tuple[str, str, str]]:
        """(user_id, room_id, flow) of conversations untouched since `before`."""
        rows = await self._fetchall(
            "SELECT user_id, room_id, flow FROM intake WHERE updated_at < ? ORDER BY updated_at",
            (_now_text(before),),
        )
        return [(r["user_id"], r["room_id"], r["flow"]) for r in rows]

    async def add_introduction(self, post: Post, helper: str, now: datetime) -> int:
        stamp = _now_text(now)
        cursor = await self._execute(
            "INSERT INTO introductions (post_id, requester, helper, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'asked', ?, ?)",
            (post.id, post.author, helper, stamp, stamp),
        )
        return cursor.lastrowid

    async def asked_introductions(self, requester: str | None = None,
                                  post_id: int | None = None) -> list[dict]:
        """Introductions waiting for the requester's answer, oldest first."""
        clauses, params = ["status = 'asked'"], []
        if requester is not None:
            clauses.append("requester = ?")
            params.append(requester)
        if post_id is not None:
            clauses.append("post_id = ?")
            params.append(post_id)
        rows = await self._fetchall(
            f"SELECT * FROM introductions WHERE {' AND '.join(clauses)} ORDER BY id",  # noqa: S608
            params,
        )
        return [dict(r) for r in rows]

    async def set_introduction(self, intro_id: int, status: str, now: datetime,
                               room_id: str | None = None) -> None:
        await self._execute(
            "UPDATE introductions SET status = ?, room_id = COALESCE(?, room_id), updated_at = ? "
            "WHERE id = ?",
            (status, room_id, _now_text(now), intro_id),
        )

    async def has_note(self, room_id: str, note: str) -> bool:
        row = await self._fetchone(
            "SELECT 1 FROM room_notes WHERE room_id = ? AND note = ?", (room_id, note))
        return row is not None

    async def introduction_post_id(self, room_id: str) -> int | None:
        """The post an introduction room was made for, if `room_id` is one."""
        row = await self._fetchone("SELECT post_id FROM introductions WHERE room_id = ?", (room_id,))
        return row["post_id"] if row else None

    async def bot_replies_to(self, event_id: str) -> list[tuple[str, str]]:
        """(room_id, event_id) of the bot's sent replies to an event."""
        rows = await self._fetchall(
            "SELECT room_id, event_id FROM outbox WHERE reply_to = ? AND event_id IS NOT NULL "
            "AND room_id IS NOT NULL", (event_id,),
        )
        return [(r["room_id"], r["event_id"]) for r in rows]

    async def posts_claimed_by(self, user_id: str) -> list[Post]:
        rows = await self._fetchall(
            "SELECT * FROM posts WHERE claimed_by = ? AND status = ?",
            (user_id, PostStatus.CLAIMED.value),
        )
        return [_post_from_row(r) for r in rows]

    async def erase_closed_posts(self, before: datetime, now: datetime) -> int:
        """Retention: details and people of posts closed before `before`; counts remain."""
        closed = (PostStatus.DONE.value, PostStatus.CANCELLED.value, PostStatus.EXPIRED.value)
        cutoff = _now_text(before)
        await self._execute(
            "DELETE FROM introductions WHERE post_id IN (SELECT id FROM posts WHERE status IN "
            "(?, ?, ?) AND updated_at < ?)", (*closed, cutoff),
        )
        cursor = await self._execute(
            "UPDATE posts SET text = NULL, author = NULL, claimed_by = NULL, event_id = NULL, "
            "erased_at = ? WHERE status IN (?, ?, ?) AND updated_at < ? AND erased_at IS NULL",
            (_now_text(now), *closed, cutoff),
        )
        # Who sent which command and who was mentioned: kept only as long as the posts are.
        await self._execute(
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,)
        )
        await self._execute(
            "UPDATE inbox SET sender = '' WHERE handled_at IS NOT NULL AND handled_at < ?",
            (cutoff,),
        )
        return cursor.rowcount

    async def person_dm_rooms(self, user_id: str) -> set[str]:
        rows = await self._fetchall(
            "SELECT room_id FROM dm_rooms WHERE user_id = ? UNION "
            "SELECT room_id FROM inbox WHERE sender = ? AND is_direct = 1 UNION "
            "SELECT room_id FROM intake WHERE user_id = ?", (user_id, user_id, user_id),
        )
        return {r["room_id"] for r in rows}

    async def bot_messages_about(self, user_id: str) -> list[tuple[str, str]]:
        """(room_id, event_id) of sent bot messages to, mentioning or answering the person."""
        dm_rooms = await self.person_dm_rooms(user_id)
        dm_room = await self.get_dm_room(user_id)
        marks = ",".join("?" * len(dm_rooms)) or "NULL"
        sql = ("SELECT room_id, user_id, event_id FROM outbox WHERE event_id IS NOT NULL "  # noqa: S608
               "AND redacts IS NULL AND (user_id = ? OR instr(mentions, ?) > 0 OR reply_to IN "
               f"(SELECT event_id FROM inbox WHERE sender = ?) OR room_id IN ({marks}))")
        rows = await self._fetchall(sql, (user_id, json.dumps(user_id), user_id, *sorted(dm_rooms)))
        found = []
        for row in rows:
            room_id = row["room_id"] or (dm_room if row["user_id"] == user_id else None)
            if room_id is not None:
                found.append((room_id, row["event_id"]))
        return found

    async def forget_person(self, user_id: str, now: datetime) -> dict[str, int]:
        """Erase every row that names the person, in every table; per table, rows changed.

        Posts keep their aggregates (category, room, dates, status) with author, claimer and
        details erased; open ones are cancelled and ones they claimed reopened. Inbox rows keep
        only their event id, so that a command is still never handled twice. Any other table
        (shifts and whatever comes later) is walked generically: a row whose key names the person
        is deleted, other mentions are blanked.
        """
        counts: dict[str, int] = {}

        def add(table: str, n: int) -> None:
            if n > 0:
                counts[table] = counts.get(table, 0) + n

        closed = (PostStatus.OPEN.value, PostStatus.CLAIMED.value)
        cursor = await self._execute(
            "UPDATE posts SET author = NULL, text = NULL, claimed_by = NULL, event_id = NULL, "
            "erased_at = ?, updated_at = ?, status = CASE WHEN status IN (?, ?) THEN ? ELSE status END "
            "WHERE author = ?",
            (_now_text(now), _now_text(now), *closed, PostStatus.CANCELLED.value, user_id),
        )
        add("posts", cursor.rowcount)
        cursor = await self._execute(
            "UPDATE posts SET claimed_by = NULL, status = CASE WHEN status = ? THEN ? ELSE status END "
            "WHERE claimed_by = ?",
            (PostStatus.CLAIMED.value, PostStatus.OPEN.value, user_id),
        )
        add("posts", cursor.rowcount)
        dm_rooms = sorted(await self.person_dm_rooms(user_id))
        marks = ",".join("?" * len(dm_rooms)) or "NULL"
        sql = ("DELETE FROM outbox WHERE redacts IS NULL AND (user_id = ? "  # noqa: S608
               "OR instr(mentions, ?) > 0 OR reply_to IN (SELECT event_id FROM inbox WHERE "
               f"sender = ?) OR room_id IN ({marks}))")
        cursor = await self._execute(sql, (user_id, json.dumps(user_id), user_id, *dm_rooms))
        add("outbox", cursor.rowcount)
        cursor = await self._execute(
            "UPDATE inbox SET sender = '', text = '' WHERE sender = ?", (user_id,))
        add("inbox", cursor.rowcount)
        for table, column in (("dm_rooms", "user_id"), ("intake", "user_id")):
            cursor = await self._execute(f"DELETE FROM {table} WHERE {column} = ?", (user_id,))  # noqa: S608
            add(table, cursor.rowcount)
        cursor = await self._execute(
            "DELETE FROM introductions WHERE requester = ? OR helper = ?", (user_id, user_id))
        add("introductions", cursor.rowcount)
        for table, n in (await self._forget_everywhere(user_id)).items():
            add(table, n)
        return counts

    async def _forget_everywhere(self, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        tables = await self._fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'schema_version'"
        )
        for table in tables:
            name = table["name"]
            columns = await self._fetchall(f"PRAGMA table_info({name})")
            for col in columns:
                if (col["type"] or "").upper() not in ("TEXT", ""):
                    continue
                column = col["name"]
                changed = 0
                if col["pk"]:
                    cursor = await self._execute(
                        f"DELETE FROM {name} WHERE instr({column}, ?) > 0", (user_id,))  # noqa: S608
                    counts[name] = counts.get(name, 0) + cursor.rowcount
                    continue
                blank = "NULL" if not col["notnull"] else "''"
                exact = f"UPDATE {name} SET {column} = {blank} WHERE {column} = ?"  # noqa: S608
                inside = (f"UPDATE {name} SET {column} = replace({column}, ?, '[someone]') "  # noqa: S608
                          f"WHERE instr({column}, ?) > 0")
                for sql, params in ((exact, (user_id,)), (inside, (user_id, user_id))):
                    try:
                        cursor = await self._execute(sql, params)
                    except sqlite3.IntegrityError:
                        cursor = await self._execute(
                            f"DELETE FROM {name} WHERE instr({column}, ?) > 0", (user_id,))  # noqa: S608
                    changed += cursor.rowcount
                if changed:
                    counts[name] = counts.get(name, 0) + changed
        return counts

    async def get_room_settings(self, room_id: str) -> dict[str, str]:
        rows = await self._fetchall(
            "SELECT key, value FROM room_settings WHERE room_id = ?", (room_id,)
        )
        return {r["key"]: r["value"] for r in rows}

    async def set_room_setting(self, room_id: str, key: str, value: str | None) -> None:
        """Store a room's value for `key`; None removes it (back to the default)."""
        if value is None:
            await self._execute(
                "DELETE FROM room_settings WHERE room_id = ? AND key = ?", (room_id, key)
            )
            return
        await self._execute(
            "INSERT INTO room_settings (room_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, key) DO UPDATE SET value = excluded.value",
            (room_id, key, value),
        )

    # ---- shifts ---------------------------------------------------------------------------

    async def create_shift(
        self, room_id: str, title: str, place: str | None, needed: int, when: ShiftWhen,
        created_by: str, now: datetime,
    ) -> Shift:
        row = await self._fetchone(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM shifts WHERE room_id = ?", (room_id,)
        )
        stamp = _now_text(now)
        cursor = await self._execute(
            "INSERT INTO shifts (room_id, number, title, place, needed, when_json, active, "
            "created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            (room_id, row[0], title, place, needed, when.model_dump_json(), created_by, stamp,
             stamp),
        )
        return await self.get_shift_by_id(cursor.lastrowid)

    async def get_shift_by_id(self, shift_id: int) -> Shift:
        row = await self._fetchone("SELECT * FROM shifts WHERE id = ?", (shift_id,))
        if row is None:
            raise KeyError(shift_id)
        return _shift_from_row(row)

    async def get_shift(self, room_id: str, number: int) -> Shift | None:
        row = await self._fetchone(
            "SELECT * FROM shifts WHERE room_id = ? AND number = ?", (room_id, number)
        )
        return _shift_from_row(row) if row else None

    async def list_shifts(self, room_id: str | None = None, *, active_only: bool = True) -> list[Shift]:
        clauses, params = [], []
        if room_id is not None:
            clauses.append("room_id = ?")
            params.append(room_id)
        if active_only:
            clauses.append("active = 1")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetchall(
            f"SELECT * FROM shifts {where} ORDER BY room_id, number", params  # noqa: S608
        )
        return [_shift_from_row(r) for r in rows]

    async def update_shift(
        self, shift: Shift, now: datetime, *, title: str | None = None, place: str | None = None,
        needed: int | None = None, when: ShiftWhen | None = None, active: bool | None = None,
    ) -> Shift:
        await self._execute(
            "UPDATE shifts SET title = COALESCE(?, title), place = COALESCE(?, place), "
            "needed = COALESCE(?, needed), when_json = COALESCE(?, when_json), "
            "active = COALESCE(?, active), updated_at = ? WHERE id = ?",
            (title, place, needed, when.model_dump_json() if when else None,
             None if active is None else int(active), _now_text(now), shift.id),
        )
        return await self.get_shift_by_id(shift.id)

    async def cancel_occurrence(self, shift_id: int, occurrence: str, now: datetime) -> bool:
        cursor = await self._execute(
            "INSERT OR IGNORE INTO shift_cancelled (shift_id, occurrence, at) VALUES (?, ?, ?)",
            (shift_id, occurrence, _now_text(now)),
        )
        return cursor.rowcount == 1

    async def cancelled_occurrences(self, shift_ids: list[int]) -> set[tuple[int, str]]:
        if not shift_ids:
            return set()
        rows = await self._fetchall(
            f"SELECT shift_id, occurrence FROM shift_cancelled "  # noqa: S608 - placeholders only
            f"WHERE shift_id IN ({','.join('?' * len(shift_ids))})",
            shift_ids,
        )
        return {(r["shift_id"], r["occurrence"]) for r in rows}

    async def signups(self, shift_ids: list[int]) -> list[Signup]:
        if not shift_ids:
            return []
        rows = await self._fetchall(
            f"SELECT * FROM shift_signups "  # noqa: S608 - placeholders only
            f"WHERE shift_id IN ({','.join('?' * len(shift_ids))}) ORDER BY at, person",
            shift_ids,
        )
        return [Signup(shift_id=r["shift_id"], occurrence=r["occurrence"], person=r["person"],
                       present=bool(r["present"])) for r in rows]

    async def set_signup(self, shift_id: int, occurrence: str, person: str, present: bool,
                         now: datetime) -> None:
        await self._execute(
            "INSERT INTO shift_signups (shift_id, occurrence, person, present, at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (shift_id, occurrence, person) "
            "DO UPDATE SET present = excluded.present, at = excluded.at",
            (shift_id, occurrence, person, int(present), _now_text(now)),
        )

    async def remove_signup(self, shift_id: int, occurrence: str, person: str) -> bool:
        cursor = await self._execute(
            "DELETE FROM shift_signups WHERE shift_id = ? AND occurrence = ? AND person = ?",
            (shift_id, occurrence, person),
        )
        return cursor.rowcount == 1

    async def create_standin(self, shift: Shift, occurrence: str, requester: str,
                             now: datetime) -> StandinRequest:
        row = await self._fetchone(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM standin_requests WHERE room_id = ?",
            (shift.room_id,),
        )
        stamp = _now_text(now)
        cursor = await self._execute(
            "INSERT INTO standin_requests (room_id, number, shift_id, occurrence, requester, "
            "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
            (shift.room_id, row[0], shift.id, occurrence, requester, stamp, stamp),
        )
        return await self._standin_where("id = ?", (cursor.lastrowid,))

    async def get_standin(self, room_id: str, number: int) -> StandinRequest | None:
        try:
            return await self._standin_where("room_id = ? AND number = ?", (room_id, number))
        except KeyError:
            return None

    async def open_standin_for(self, shift_id: int, occurrence: str,
                               requester: str) -> StandinRequest | None:
        try:
            return await self._standin_where(
                "shift_id = ? AND occurrence = ? AND requester = ? AND status = 'open'",
                (shift_id, occurrence, requester),
            )
        except KeyError:
            return None

    async def _standin_where(self, condition: str, params: tuple) -> StandinRequest:
        row = await self._fetchone(
            f"SELECT * FROM standin_requests WHERE {condition} ORDER BY id LIMIT 1",  # noqa: S608
            params,
        )
        if row is None:
            raise KeyError(params)
        return StandinRequest(
            id=row["id"], room_id=row["room_id"], number=row["number"], shift_id=row["shift_id"],
            occurrence=row["occurrence"], requester=row["requester"], status=row["status"],
            covered_by=row["covered_by"],
        )

    async def set_standin_status(self, request: StandinRequest, status: str, now: datetime,
                                 covered_by: str | None = None) -> None:
        await self._execute(
            "UPDATE standin_requests SET status = ?, covered_by = ?, updated_at = ? WHERE id = ?",
            (status, covered_by, _now_text(now), request.id),
        )

    async def record_noshow(self, shift_id: int, occurrence: str, person: str, recorded_by: str,
                            now: datetime) -> bool:
        cursor = await self._execute(
            "INSERT OR IGNORE INTO noshows (shift_id, occurrence, person, recorded_by, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (shift_id, occurrence, person, recorded_by, _now_text(now)),
        )
        return cursor.rowcount == 1

    async def noshow_count(self, room_id: str, person: str) -> int:
        row = await self._fetchone(
            "SELECT COUNT(*) FROM noshows JOIN shifts ON shifts.id = noshows.shift_id "
            "WHERE shifts.room_id = ? AND noshows.person = ?",
            (room_id, person),
        )
        return row[0]

    # ---- scheduled sends: recorded in the transaction that enqueues them -------------------

    async def record_scheduled(self, kind: str, ref: str, occurrence: str, offset_key: str,
                               person: str, outcome: str, now: datetime) -> bool:
        """Claim one scheduled send; True only the first time (exactly once across restarts)."""
        cursor = await self._execute(
            "INSERT OR IGNORE INTO sent_reminders "
            "(kind, ref, occurrence, offset_key, person, outcome, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, ref, occurrence, offset_key, person, outcome, _now_text(now)),
        )
        return cursor.rowcount == 1

    async def scheduled_records(self, kind: str | None = None) -> list[dict[str, str]]:
        rows = await self._fetchall(
            "SELECT * FROM sent_reminders WHERE ? IS NULL OR kind = ? ORDER BY rowid", (kind, kind)
        )
        return [dict(r) for r in rows]

    # ---- post expiry and renewal ----------------------------------------------------------

    async def posts_with_renewal(self, statuses: tuple[PostStatus, ...] = (PostStatus.OPEN,),
                                 ) -> list[tuple[Post, datetime]]:
        """Posts with the moment their expiry clock started (creation or last renewal)."""
        rows = await self._fetchall(
            f"SELECT * FROM posts WHERE status IN ({','.join('?' * len(statuses))}) "  # noqa: S608
            "ORDER BY id",
            [s.value for s in statuses],
        )
        return [(_post_from_row(r), _parse_time(r["renewed_at"] or r["created_at"])) for r in rows]

    async def renew_post(self, post: Post, now: datetime) -> Post:
        stamp = _now_text(now)
        await self._execute(
            "UPDATE posts SET renewed_at = ?, updated_at = ?, "
            "status = CASE WHEN status = 'expired' THEN 'open' ELSE status END WHERE id = ?",
            (stamp, stamp, post.id),
        )
        return await self.get_post_by_id(post.id)


def _shift_from_row(row: sqlite3.Row) -> Shift:
    return Shift(
        id=row["id"], room_id=row["room_id"], number=row["number"], title=row["title"],
        place=row["place"], needed=row["needed"],
        when=ShiftWhen.model_validate_json(row["when_json"]), active=bool(row["active"]),
        created_by=row["created_by"], created_at=_parse_time(row["created_at"]),
    )
