"""The only place SQL lives.

One aiosqlite connection, WAL, foreign keys on. All access happens inside `transaction()`, which
serialises callers with a lock and commits on success, so a command's effects, its "handled" mark
and its replies in the outbox are written together or not at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bot.context import Attachment, Incoming, Outgoing
from bot.formatting import Rendered
from bot.models import Category, ParsedPost, Post, PostKind, PostStatus, Urgency

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


Migration = Callable[[aiosqlite.Connection], Awaitable[None]]


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


# Ordered: index + 1 is the schema version the step brings the database to. Append, never edit.
MIGRATIONS: list[Migration] = [_m001_initial]


def _now_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    out: Outgoing


def _post_from_row(row: sqlite3.Row) -> Post:
    return Post(
        id=row["id"],
        room_id=row["room_id"],
        number=row["number"],
        kind=PostKind(row["kind"]),
        author=row["author"] or "",
        category=Category(row["category"]),
        urgency=Urgency(row["urgency"]),
        text=row["text"] or "",
        status=PostStatus(row["status"]),
        created_at=_parse_time(row["created_at"]),
        claimed_by=row["claimed_by"],
        private=bool(row["private"]),
        anonymous=bool(row["anonymous"]),
    )


def create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


class Storage:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._db.row_factory = sqlite3.Row
        self._lock = asyncio.Lock()
        self._in_transaction = False

    # ---- opening, migrations, transactions ------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Storage:
        """Open (creating if needed) and migrate. Refuses a corrupt or newer database."""
        if str(path) != ":memory:":
            path = Path(path)
            create_private_file(path)
        try:
            db = await aiosqlite.connect(str(path), timeout=10)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        storage = cls(db)
        try:
            await storage._prepare()
        except BaseException:
            await db.close()
            raise
        return storage

    async def _prepare(self) -> None:
        try:
            await self._db.execute("PRAGMA busy_timeout = 10000")
            check = await (await self._db.execute("PRAGMA quick_check")).fetchone()
            if check is None or check[0] != "ok":
                raise StorageError(
                    f"the database failed its integrity check ({check[0] if check else 'no answer'}); "
                    "it was left untouched. Restore it from a backup or move it aside."
                )
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA foreign_keys = ON")
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
            await self._db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Storage]:
        async with self._lock:
            self._in_transaction = True
            try:
                yield self
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
            finally:
                self._in_transaction = False

    async def _execute(self, sql: str, params: tuple | list = ()) -> aiosqlite.Cursor:
        if not self._in_transaction:
            raise RuntimeError("storage used outside storage.transaction()")
        return await self._db.execute(sql, params)

    async def _fetchall(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        return list(await (await self._execute(sql, params)).fetchall())

    async def _fetchone(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        return await (await self._execute(sql, params)).fetchone()

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
        row = await self._fetchone("SELECT COALESCE(MAX(seq), 0) FROM inbox")
        seq = row[0]
        added = 0
        for item in items:
            seq += 1
            cursor = await self._execute(
                "INSERT OR IGNORE INTO inbox (event_id, room_id, sender, text, is_direct, ts, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item.event_id, item.room_id, item.sender, item.text, int(item.is_direct),
                 _now_text(item.timestamp), seq),
            )
            added += cursor.rowcount
        return added

    async def is_known_event(self, event_id: str) -> bool:
        return await self._fetchone("SELECT 1 FROM inbox WHERE event_id = ?", (event_id,)) is not None

    async def pending_rooms(self) -> list[str]:
        rows = await self._fetchall(
            "SELECT room_id, MIN(seq) AS first FROM inbox WHERE handled_at IS NULL "
            "GROUP BY room_id ORDER BY first"
        )
        return [r["room_id"] for r in rows]

    async def next_pending(self, room_id: str) -> Incoming | None:
        row = await self._fetchone(
            "SELECT * FROM inbox WHERE room_id = ? AND handled_at IS NULL ORDER BY seq LIMIT 1",
            (room_id,),
        )
        if row is None:
            return None
        return Incoming(
            event_id=row["event_id"], room_id=row["room_id"], sender=row["sender"],
            text=row["text"], is_direct=bool(row["is_direct"]), timestamp=_parse_time(row["ts"]),
        )

    async def mark_handled(self, event_id: str, now: datetime) -> None:
        # The text is only needed until the command has run; keeping it would be a record of
        # everything people typed.
        await self._execute(
            "UPDATE inbox SET handled_at = ?, text = '' WHERE event_id = ?", (_now_text(now), event_id)
        )

    # ---- outbox: replies delivered at least once, deduplicated by transaction id ----------

    async def enqueue(self, items: list[Outgoing], now: datetime) -> None:
        for out in items:
            attachment = out.attachment
            await self._execute(
                "INSERT INTO outbox (room_id, user_id, body, html, mentions, reply_to, "
                "attachment_name, attachment_type, attachment_data, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (out.room_id, out.user_id, out.message.body, out.message.html,
                 json.dumps(list(out.message.mentions)), out.reply_to,
                 attachment.filename if attachment else None,
                 attachment.mimetype if attachment else None,
                 attachment.data if attachment else None, _now_text(now)),
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
                reply_to=row["reply_to"], attachment=attachment,
            )))
        return items

    async def mark_sent(self, outbox_id: int, event_id: str | None, now: datetime) -> None:
        # Sent messages are in the room's history; the copy here is no longer needed.
        await self._execute(
            "UPDATE outbox SET sent_at = ?, event_id = ?, body = '', html = '', mentions = '[]', "
            "attachment_data = NULL WHERE id = ?",
            (_now_text(now), event_id, outbox_id),
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
        *, private: bool = False, anonymous: bool = False,
    ) -> Post:
        row = await self._fetchone(
            "INSERT INTO room_counters (room_id, last_number) VALUES (?, 1) "
            "ON CONFLICT (room_id) DO UPDATE SET last_number = last_number + 1 "
            "RETURNING last_number",
            (room_id,),
        )
        number = row[0]
        stamp = _now_text(now)
        cursor = await self._execute(
            "INSERT INTO posts (room_id, number, kind, author, category, urgency, text, status, "
            "created_at, updated_at, private, anonymous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (room_id, number, kind.value, author, parsed.category.value, int(parsed.urgency),
             parsed.text, PostStatus.OPEN.value, stamp, stamp, int(private), int(anonymous)),
        )
        return await self.get_post_by_id(cursor.lastrowid)

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
        """Open posts of the opposite kind in the same room and category, best first."""
        rows = await self._fetchall(
            "SELECT * FROM posts WHERE room_id = ? AND kind = ? AND category = ? AND status = ? "
            "AND id != ? ORDER BY urgency DESC, created_at, id LIMIT ?",
            (post.room_id, post.kind.opposite.value, post.category.value, PostStatus.OPEN.value,
             post.id, limit),
        )
        return [_post_from_row(r) for r in rows]

    async def set_post_status(
        self, post: Post, status: PostStatus, now: datetime, *, claimed_by: str | None = None
    ) -> Post:
        await self._execute(
            "UPDATE posts SET status = ?, claimed_by = COALESCE(?, claimed_by), updated_at = ? "
            "WHERE id = ?",
            (status.value, claimed_by, _now_text(now), post.id),
        )
        return await self.get_post_by_id(post.id)

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
