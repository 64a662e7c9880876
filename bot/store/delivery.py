"""Delivery: commands received (inbox), messages to send (outbox, kept in order per destination,
failures backed off per destination and ended as dead letters), DM rooms and small marks."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from bot.messages import (
    Attachment,
    Edit,
    Event,
    Incoming,
    Membership,
    Outgoing,
    Reaction,
    Redaction,
    Rendered,
)
from bot.store.base import Area, now_text, parse_time

# A Matrix user id as it appears in a message's text; a trailing dot ends a sentence.
_USER_ID = re.compile(
    r"@[A-Za-z0-9._=/+\-]+:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::[0-9]{1,5})?")


def named_in(text: str) -> list[str]:
    """The user ids a message's text names, whole, in order of first appearance."""
    return list(dict.fromkeys(m.group().rstrip(".-") for m in _USER_ID.finditer(text)))


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    out: Outgoing
    created_at: datetime
    attempts: int
    first_failure_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that will not be delivered, and why (for coordinators and metrics)."""

    id: int
    destination: str
    room_id: str | None
    reason: str
    created_at: datetime
    dead_at: datetime


@dataclass(frozen=True, slots=True)
class SentMessage:
    room_id: str
    event_id: str


def _outbox_item(row: sqlite3.Row) -> OutboxItem:
    attachment = None
    if row["attachment_name"] is not None:
        attachment = Attachment(
            row["attachment_name"], row["attachment_type"], bytes(row["attachment_data"]),
            row["attachment_width"], row["attachment_height"])
    message = Rendered(row["body"], row["html"], tuple(json.loads(row["mentions"])))
    failure = row["first_failure_at"]
    return OutboxItem(
        row["id"],
        Outgoing(message, room_id=row["room_id"], user_id=row["user_id"],
                 reply_to=row["reply_to"], attachment=attachment, redacts=row["redacts"]),
        parse_time(row["created_at"]), row["attempts"], parse_time(failure) if failure else None,
    )


def _kind_row(item: Event) -> tuple[str, str, str | None]:
    """(text, kind, target) of an event as the inbox keeps it."""
    if isinstance(item, Redaction):
        return "", "redaction", item.redacts
    if isinstance(item, Reaction):
        return item.key, "reaction", item.relates_to
    if isinstance(item, Edit):
        return item.text, "edit", item.replaces
    if isinstance(item, Membership):
        return "", "membership", None
    return item.text, "message", None


def _event(row: sqlite3.Row) -> Event:
    common = dict(event_id=row["event_id"], room_id=row["room_id"], sender=row["sender"],
                  is_direct=bool(row["is_direct"]), timestamp=parse_time(row["ts"]))
    kind, target = row["kind"], row["target"] or ""
    if kind == "redaction":
        return Redaction(redacts=target, **common)
    if kind == "reaction":
        return Reaction(relates_to=target, key=row["text"], **common)
    if kind == "edit":
        return Edit(replaces=target, text=row["text"], **common)
    if kind == "membership":
        return Membership(**common)
    return Incoming(text=row["text"], **common)


class DeliveryArea(Area):
    # ---- key/value marks (sync token, first-start marks) ------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._tx.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def note_once(self, room_id: str, note: str, now: datetime) -> bool:
        """Record that `note` was given in a room; True only the first time."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO room_notes (room_id, note, at) VALUES (?, ?, ?)",
            (room_id, note, now_text(now)),
        )
        return cursor.rowcount == 1

    async def drop_note(self, room_id: str, note: str) -> None:
        """Forget that `note` was given, so that `note_once` gives it again."""
        await self._tx.execute("DELETE FROM room_notes WHERE room_id = ? AND note = ?",
                               (room_id, note))

    async def has_note(self, room_id: str, note: str) -> bool:
        row = await self._tx.fetchone(
            "SELECT 1 FROM room_notes WHERE room_id = ? AND note = ?", (room_id, note))
        return row is not None

    # ---- inbox: commands received, handled exactly once ------------------------------------

    async def add_to_inbox(self, items: list[Event]) -> int:
        """Store received commands and events (known event ids are ignored); returns how many
        were new."""
        # Each row's seq is taken after the previous row's insert.
        cursor = await self._tx.executemany(
            "INSERT OR IGNORE INTO inbox (event_id, room_id, sender, text, kind, target, "
            "is_direct, ts, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM inbox))",
            [(item.event_id, item.room_id, item.sender, *_kind_row(item), int(item.is_direct),
              now_text(item.timestamp)) for item in items],
        )
        return max(cursor.rowcount, 0)

    async def is_known_event(self, event_id: str) -> bool:
        row = await self._tx.fetchone("SELECT 1 FROM inbox WHERE event_id = ?", (event_id,))
        return row is not None

    async def pending_rooms(self) -> list[str]:
        rows = await self._tx.fetchall(
            "SELECT room_id, MIN(seq) AS first FROM inbox WHERE handled_at IS NULL "
            "GROUP BY room_id ORDER BY first"
        )
        return [r["room_id"] for r in rows]

    async def pending_commands(self, room_id: str, limit: int) -> list[Event]:
        """The room's oldest commands and events not yet handled, in the order they arrived."""
        rows = await self._tx.fetchall(
            "SELECT * FROM inbox WHERE room_id = ? AND handled_at IS NULL ORDER BY seq LIMIT ?",
            (room_id, limit),
        )
        return [_event(row) for row in rows]

    async def mark_handled(self, event_id: str, now: datetime) -> None:
        # The text is only needed until the command has run; keeping it would be a record of
        # everything people typed.
        await self._tx.execute(
            "UPDATE inbox SET handled_at = ?, text = '' WHERE event_id = ?",
            (now_text(now), event_id))

    # ---- outbox ----------------------------------------------------------------------------

    async def enqueue(self, items: list[Outgoing], now: datetime) -> None:
        if not items:
            return
        self._tx.queued_messages = True
        stamp = now_text(now)
        rows = []
        for out in items:
            attachment = out.attachment
            rows.append(
                (out.room_id, out.user_id, out.destination, out.message.body, out.message.html,
                 json.dumps(list(out.message.mentions)), out.reply_to,
                 attachment.filename if attachment else None,
                 attachment.mimetype if attachment else None,
                 attachment.data if attachment else None,
                 attachment.width if attachment else None,
                 attachment.height if attachment else None, stamp, out.redacts,
                 json.dumps(named_in(out.message.body))))
        # Rows keep the order of `items` (AUTOINCREMENT ids, one statement after another).
        await self._tx.executemany(
            "INSERT INTO outbox (room_id, user_id, destination, body, html, mentions, reply_to, "
            "attachment_name, attachment_type, attachment_data, attachment_width, "
            "attachment_height, created_at, redacts, named) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    async def enqueue_one(self, out: Outgoing, now: datetime) -> int:
        """Queue one message and return its outbox id (to find its event id once sent)."""
        await self.enqueue([out], now)
        return (await self._tx.fetchone("SELECT last_insert_rowid()"))[0]

    async def pending_destinations(self) -> list[str]:
        """Destinations with messages waiting, the one waiting longest first."""
        rows = await self._tx.fetchall(
            "SELECT destination, MIN(id) AS first FROM outbox "
            "WHERE sent_at IS NULL AND dead_at IS NULL GROUP BY destination ORDER BY first")
        return [r["destination"] for r in rows]

    async def pending_for(self, destination: str, limit: int) -> list[OutboxItem]:
        rows = await self._tx.fetchall(
            "SELECT * FROM outbox WHERE destination = ? AND sent_at IS NULL AND dead_at IS NULL "
            "ORDER BY id LIMIT ?", (destination, limit))
        return [_outbox_item(r) for r in rows]

    async def mark_sent(self, done: list[tuple[int, str | None]], now: datetime) -> None:
        """Record (outbox id, event id) pairs as sent, in one statement.

        Sent messages are in the room's history; the copy here is no longer needed. Who was
        mentioned or named is kept (until retention or !forgetme) so those messages can be
        redacted.
        """
        if not done:
            return
        stamp = now_text(now)
        await self._tx.executemany(
            "UPDATE outbox SET sent_at = ?, event_id = ?, body = '', html = '', "
            "attachment_data = NULL WHERE id = ?",
            [(stamp, event_id, outbox_id) for outbox_id, event_id in done],
        )

    async def note_failure(self, outbox_id: int, now: datetime) -> None:
        """A transient failure: counted, and the time of the first one kept for the bound."""
        await self._tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, "
            "first_failure_at = COALESCE(first_failure_at, ?) WHERE id = ?",
            (now_text(now), outbox_id))

    async def mark_dead(self, outbox_id: int, reason: str, now: datetime) -> None:
        """Never retried again; what it said is erased, where and why are kept for coordinators."""
        await self._tx.execute(
            "UPDATE outbox SET dead_at = ?, dead_reason = ?, body = '', html = '', "
            "attachment_data = NULL WHERE id = ?",
            (now_text(now), reason, outbox_id))

    async def dead_letters(self, room_ids: list[str] | None = None,
                           limit: int = 50) -> list[DeadLetter]:
        """Dead letters, newest first; only those for `room_ids` when given."""
        rows = await self._tx.fetchall(
            "SELECT id, destination, room_id, dead_reason, created_at, dead_at FROM outbox "
            "WHERE dead_at IS NOT NULL AND (? IS NULL OR room_id IN "
            "(SELECT value FROM json_each(?))) ORDER BY id DESC LIMIT ?",
            (None if room_ids is None else 1, json.dumps(room_ids or []), limit))
        return [DeadLetter(r["id"], r["destination"], r["room_id"], r["dead_reason"],
                           parse_time(r["created_at"]), parse_time(r["dead_at"])) for r in rows]

    async def count_waiting(self) -> int:
        row = await self._tx.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL")
        return row[0]

    async def bot_replies_to(self, event_id: str) -> list[SentMessage]:
        """The bot's sent replies (in rooms) to an event."""
        rows = await self._tx.fetchall(
            "SELECT room_id, event_id FROM outbox WHERE reply_to = ? AND event_id IS NOT NULL "
            "AND room_id IS NOT NULL", (event_id,),
        )
        return [SentMessage(r["room_id"], r["event_id"]) for r in rows]

    async def replied_to(self, room_id: str, event_id: str) -> str | None:
        """The event the bot's message `event_id` in the room answered, if it was a reply."""
        row = await self._tx.fetchone(
            "SELECT reply_to FROM outbox WHERE event_id = ? AND room_id = ?", (event_id, room_id))
        return row["reply_to"] if row else None

    # ---- direct-message rooms ----------------------------------------------------------------

    async def get_dm_room(self, user_id: str) -> str | None:
        row = await self._tx.fetchone("SELECT room_id FROM dm_rooms WHERE user_id = ?", (user_id,))
        return row["room_id"] if row else None

    async def dm_partner(self, room_id: str) -> str | None:
        row = await self._tx.fetchone("SELECT user_id FROM dm_rooms WHERE room_id = ?", (room_id,))
        return row["user_id"] if row else None

    async def set_dm_room(self, user_id: str, room_id: str) -> None:
        await self._tx.execute(
            "INSERT INTO dm_rooms (user_id, room_id) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
            (user_id, room_id),
        )
