"""Privacy: private intake conversations, introductions, retention and erasure."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from bot.models import PostStatus
from bot.store.actions import dm_key
from bot.store.base import Area, converted, now_text, parse_time, placeholders
from bot.store.delivery import SentMessage

# What may stand right after a Matrix user id inside a longer id (`@bob:example.org.uk`,
# `@bob:example.org:8448`): an occurrence followed by one of these is someone else.
_ID_CONTINUES = r"[A-Za-z0-9._=/+\-:\[\]]"
_ID_PRECEDES = r"[A-Za-z0-9._=/+\-]"


def _id_pattern(user_id: str) -> re.Pattern[str]:
    return re.compile(f"(?<!{_ID_PRECEDES}){re.escape(user_id)}(?!{_ID_CONTINUES})")


def names_person(text: object, user_id: str) -> bool:
    """Whether `text` contains `user_id` as a whole id (not as the start of a longer one)."""
    return isinstance(text, str) and _id_pattern(user_id).search(text) is not None


def without_person(text: object, user_id: str) -> object:
    if not isinstance(text, str):
        return text
    return _id_pattern(user_id).sub("[someone]", text)


# What !forgetme keeps of the person: a coordinator's block on their direct messages (their id
# and its date), or erasing themselves would lift it (docs/privacy.md, threat model). It lapses
# by retention (front_door.block_days).
KEPT_THROUGH_ERASURE = frozenset({("blocks", "person")})

# SQL functions erasure needs, registered on every connection that may run it.
SQL_FUNCTIONS = (("names_person", 2, names_person), ("without_person", 2, without_person))


class ShiftSpan(NamedTuple):
    shift_id: int
    when_json: str  # a ShiftWhen as stored
    active: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class IntakeConversation:
    user_id: str
    room_id: str
    flow: str
    state: dict
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Introduction:
    id: int
    post_id: int
    requester: str
    helper: str
    status: str
    room_id: str | None


@dataclass(frozen=True, slots=True)
class Relay:
    """Two people on different networks talking through the bot, about one post."""

    id: int
    post_id: int
    requester: str
    helper: str

    def partner_of(self, person: str) -> str:
        return self.helper if person == self.requester else self.requester


def _relay(row: sqlite3.Row) -> Relay:
    return Relay(row["id"], row["post_id"], row["requester"], row["helper"])


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """A confirmed !forgetme, waiting to be carried out (and answered in `room_id`)."""

    person: str
    room_id: str
    reply_to: str
    requested_at: datetime


def _intake(row: sqlite3.Row) -> IntakeConversation:
    return IntakeConversation(row["user_id"], row["room_id"], row["flow"],
                              json.loads(row["state"]), parse_time(row["updated_at"]))


def _introduction(row: sqlite3.Row) -> Introduction:
    return Introduction(row["id"], row["post_id"], row["requester"], row["helper"],
                        row["status"], row["room_id"])


class PrivacyArea(Area):
    # ---- intake conversations ----------------------------------------------------------------

    async def intake(self, user_id: str) -> IntakeConversation | None:
        return await self._tx.fetch_by("intake", _intake, user_id=user_id)

    async def save_intake(self, user_id: str, room_id: str, flow: str, state: dict,
                          now: datetime) -> None:
        await self._tx.execute(
            "INSERT INTO intake (user_id, room_id, flow, state, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, flow = excluded.flow, "
            "state = excluded.state, updated_at = excluded.updated_at",
            (user_id, room_id, flow, json.dumps(state), now_text(now)),
        )

    async def end_intake(self, user_id: str) -> bool:
        cursor = await self._tx.execute("DELETE FROM intake WHERE user_id = ?", (user_id,))
        return cursor.rowcount > 0

    async def idle_intakes(self, before: datetime) -> list[IntakeConversation]:
        """Conversations untouched since `before`, oldest first."""
        rows = await self._tx.fetchall(
            "SELECT * FROM intake WHERE updated_at < ? ORDER BY updated_at", (now_text(before),))
        return [_intake(r) for r in rows]

    # ---- introductions -----------------------------------------------------------------------

    async def add_introduction(self, post_id: int, requester: str, helper: str,
                               now: datetime) -> int:
        stamp = now_text(now)
        cursor = await self._tx.execute(
            "INSERT INTO introductions (post_id, requester, helper, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'asked', ?, ?)",
            (post_id, requester, helper, stamp, stamp),
        )
        return cursor.lastrowid

    async def introduction(self, intro_id: int) -> Introduction | None:
        return await self._tx.fetch_by("introductions", _introduction, id=intro_id)

    async def asked_introductions(self, requester: str | None = None,
                                  post_id: int | None = None) -> list[Introduction]:
        """Introductions waiting for the requester's answer, oldest first."""
        rows = await self._tx.fetchall(
            "SELECT * FROM introductions WHERE status = 'asked' AND (? IS NULL OR requester = ?) "
            "AND (? IS NULL OR post_id = ?) ORDER BY id",
            (requester, requester, post_id, post_id),
        )
        return [_introduction(r) for r in rows]

    async def set_introduction(self, intro_id: int, status: str, now: datetime,
                               room_id: str | None = None) -> None:
        await self._tx.execute(
            "UPDATE introductions SET status = ?, room_id = COALESCE(?, room_id), updated_at = ? "
            "WHERE id = ?",
            (status, room_id, now_text(now), intro_id),
        )

    async def set_introduction_helper(self, intro_id: int, helper: str, now: datetime) -> None:
        """The helper of an introduction from another pod, known once the requester said yes."""
        await self._tx.execute(
            "UPDATE introductions SET helper = ?, updated_at = ? WHERE id = ? AND helper = ''",
            (helper, now_text(now), intro_id))

    async def introduction_post_id(self, room_id: str) -> int | None:
        """The post an introduction room was made for, if `room_id` is one."""
        row = await self._tx.fetchone(
            "SELECT post_id FROM introductions WHERE room_id = ?", (room_id,))
        return row["post_id"] if row else None

    # ---- relays: introductions across networks ------------------------------------------------

    async def start_relay(self, post_id: int, requester: str, helper: str, now: datetime) -> Relay:
        row = await self._tx.fetchone(
            "INSERT INTO relays (post_id, requester, helper, started_at) VALUES (?, ?, ?, ?) "
            "RETURNING *", (post_id, requester, helper, now_text(now)))
        return _relay(row)

    async def active_relay(self, person: str) -> Relay | None:
        """The person's open relay (the newest, if several)."""
        row = await self._tx.fetchone(
            "SELECT * FROM relays WHERE ended_at IS NULL AND (requester = ? OR helper = ?) "
            "ORDER BY id DESC LIMIT 1", (person, person))
        return _relay(row) if row else None

    async def end_relay(self, relay_id: int, now: datetime) -> None:
        await self._tx.execute("UPDATE relays SET ended_at = ? WHERE id = ?",
                               (now_text(now), relay_id))

    # ---- retention (the rules and the sweep are in bot/retention.py) -------------------------

    async def rowid_span(self, table: str) -> tuple[int, int]:
        """The lowest and highest rowid of `table` (1, 0 when it is empty)."""
        # One aggregate per subquery: SQLite answers a lone MIN() or MAX() of the rowid from the
        # b-tree's ends, but MIN() and MAX() side by side scan the whole table (90 ms at 100,000).
        row = await self._tx.fetchone(
            f"SELECT COALESCE((SELECT MIN(rowid) FROM {table}), 1), "  # noqa: S608
            f"COALESCE((SELECT MAX(rowid) FROM {table}), 0)")  # noqa: S608
        return row[0], row[1]

    async def apply_rule(self, sql: str, values: dict[str, object], low: int, high: int) -> int:
        """One retention statement over the rows with `low <= rowid < high`; rows changed."""
        cursor = await self._tx.execute(
            f"{sql} AND rowid >= :chunk_low AND rowid < :chunk_high",
            {**values, "chunk_low": low, "chunk_high": high})
        return max(cursor.rowcount, 0)

    async def shift_spans(self) -> list[ShiftSpan]:
        """Every shift that still names its creator or has all-dates sign-ups, for deciding
        which have ended (its schedule left as stored: parsed in slices, `retention.ended_shift_ids`)."""
        rows = await self._tx.fetchall(
            "SELECT id, when_json, active, updated_at FROM shifts WHERE created_by != '' "
            "OR id IN (SELECT shift_id FROM shift_signups WHERE occurrence = '*')")
        return await converted(rows, lambda r: ShiftSpan(r["id"], r["when_json"], bool(r["active"]),
                                                         parse_time(r["updated_at"])))

    # ---- erasure (!forgetme) -----------------------------------------------------------------

    async def person_dm_rooms(self, user_id: str) -> set[str]:
        rows = await self._tx.fetchall(
            "SELECT room_id FROM dm_rooms WHERE user_id = ? UNION "
            "SELECT room_id FROM inbox WHERE sender = ? AND is_direct = 1 UNION "
            "SELECT room_id FROM intake WHERE user_id = ?", (user_id, user_id, user_id),
        )
        return {r["room_id"] for r in rows}

    async def _about_person(self, user_id: str) -> tuple[str, tuple[str, ...]]:
        """The condition on `outbox` rows (and its parameters) for the bot's messages to,
        mentioning, naming or answering the person."""
        dm_rooms = sorted(await self.person_dm_rooms(user_id))
        return ("redacts IS NULL AND (user_id = ? OR instr(mentions, ?) > 0 "  # noqa: S608
                "OR instr(named, ?) > 0 OR reply_to IN (SELECT event_id FROM inbox WHERE "
                f"sender = ?) OR room_id IN ({placeholders(dm_rooms)}))",
                (user_id, json.dumps(user_id), json.dumps(user_id), user_id, *dm_rooms))

    async def bot_messages_about(self, user_id: str) -> list[SentMessage]:
        """The bot's sent messages to, mentioning, naming in their text or answering the person
        (ids in JSON lists are matched whole: quotes around them)."""
        dm_room = await self._tx.fetchone(
            "SELECT room_id FROM dm_rooms WHERE user_id = ?", (user_id,))
        about, params = await self._about_person(user_id)
        rows = await self._tx.fetchall(
            f"SELECT room_id, user_id, event_id FROM outbox WHERE {about}", params)  # noqa: S608

        def sent(row: sqlite3.Row) -> SentMessage | None:
            room_id = row["room_id"] or (dm_room[0] if dm_room and row["user_id"] == user_id
                                         else None)
            if room_id is None or row["event_id"] is None:
                return None
            return SentMessage(room_id, row["event_id"])

        # Thousands for a heavy user: other tasks get turns.
        return [found for found in await converted(rows, sent)
                if found is not None]

    async def forget_person(self, user_id: str, now: datetime) -> dict[str, int]:
        """Erase the rows that name the person in the columns made for people; per table, rows
        changed. Every other mention is erased by the walk (`forget_in_rows`).

        Posts keep their aggregates (category, room, dates, status) with author, claimer and
        details erased; open ones are cancelled and ones they claimed reopened. Inbox rows keep
        only their event id, so that a command is still never handled twice. Safe to repeat: what
        was erased is not found again.
        """
        counts: dict[str, int] = {}

        def add(table: str, n: int) -> None:
            if n > 0:
                counts[table] = counts.get(table, 0) + n

        stamp = now_text(now)
        cursor = await self._tx.execute(
            "UPDATE posts SET author = NULL, text = NULL, claimed_by = NULL, event_id = NULL, "
            "erased_at = ?, updated_at = ?, status = CASE WHEN status IN (?, ?) THEN ? "
            "ELSE status END WHERE author = ?",
            (stamp, stamp, PostStatus.OPEN.value, PostStatus.CLAIMED.value,
             PostStatus.CANCELLED.value, user_id),
        )
        add("posts", cursor.rowcount)
        cursor = await self._tx.execute(
            "UPDATE posts SET claimed_by = NULL, status = CASE WHEN status = ? THEN ? "
            "ELSE status END WHERE claimed_by = ?",
            (PostStatus.CLAIMED.value, PostStatus.OPEN.value, user_id),
        )
        add("posts", cursor.rowcount)
        # In one statement: thousands of ids read out and bound back in were Python work on
        # the database's thread, holding the GIL the loop needs.
        about, params = await self._about_person(user_id)
        cursor = await self._tx.execute(f"DELETE FROM outbox WHERE {about}", params)  # noqa: S608
        add("outbox", cursor.rowcount)
        cursor = await self._tx.execute(
            "UPDATE inbox SET sender = '', text = '' WHERE sender = ?", (user_id,))
        add("inbox", cursor.rowcount)
        for table, column in (("dm_rooms", "user_id"), ("intake", "user_id")):
            cursor = await self._tx.execute(
                f"DELETE FROM {table} WHERE {column} = ?", (user_id,))  # noqa: S608
            add(table, cursor.rowcount)
        for table in ("introductions", "relays"):
            cursor = await self._tx.execute(
                f"DELETE FROM {table} WHERE requester = ? OR helper = ?",  # noqa: S608
                (user_id, user_id))
            add(table, cursor.rowcount)
        cursor = await self._tx.execute("DELETE FROM remote_claims WHERE helper = ?", (user_id,))
        add("remote_claims", cursor.rowcount)
        # Rooms no longer to be made for them (a pending introduction's step finds it erased).
        cursor = await self._tx.execute(
            "DELETE FROM actions WHERE key = ?", (dm_key(user_id),))
        add("actions", cursor.rowcount)
        return counts

    async def _text_columns(self) -> list[tuple[str, sqlite3.Row]]:
        found = []
        for table in await self._tx.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'schema_version'"):
            for column in await self._tx.fetchall(f"PRAGMA table_info({table['name']})"):
                if (column["type"] or "").upper() in ("TEXT", ""):
                    found.append((table["name"], column))
        return found

    async def tables_to_walk(self) -> dict[str, list[sqlite3.Row]]:
        """Per table, the text columns an erasure walks: all but `KEPT_THROUGH_ERASURE` and the
        table `erasures`, whose request row must outlast the walk, so that a walk cut short is
        carried out again."""
        by_table: dict[str, list[sqlite3.Row]] = {}
        for name, col in await self._text_columns():
            if name != "erasures" and (name, col["name"]) not in KEPT_THROUGH_ERASURE:
                by_table.setdefault(name, []).append(col)
        return by_table

    async def forget_in_rows(self, user_id: str, table: str, columns: list[sqlite3.Row],
                             low: int, high: int) -> int:
        """The walk over one table's rows with `low <= rowid < high` (shifts, and whatever comes
        later): a row whose key names the person is deleted, other mentions are blanked; rows
        changed. Ids are matched whole: forgetting `@bob:example.org` leaves
        `@bob:example.org.uk` alone. Safe to repeat."""
        rows = "rowid >= :low AND rowid < :high"
        params = {"id": user_id, "low": low, "high": high}
        changed = 0
        for col in columns:
            column = col["name"]
            # instr() (in C) passes only the few rows that contain the id at all to the
            # whole-id check in Python, so the walk costs a scan, not a Python call per row.
            names = f"{rows} AND instr({column}, :id) > 0 AND names_person({column}, :id)"
            if col["pk"]:
                cursor = await self._tx.execute(
                    f"DELETE FROM {table} WHERE {names}", params)  # noqa: S608
                changed += cursor.rowcount
                continue
            blank = "NULL" if not col["notnull"] else "''"
            exact = (f"UPDATE {table} SET {column} = {blank} "  # noqa: S608
                     f"WHERE {rows} AND {column} = :id")
            inside = (f"UPDATE {table} SET {column} = without_person({column}, :id) "  # noqa: S608
                      f"WHERE {names}")
            for sql in (exact, inside):
                try:
                    cursor = await self._tx.execute(sql, params)
                except sqlite3.IntegrityError:
                    cursor = await self._tx.execute(
                        f"DELETE FROM {table} WHERE {names}", params)  # noqa: S608
                changed += cursor.rowcount
        return changed

    async def table_rows_mentioning(self, text: str) -> dict[str, int]:
        """Per table, how many rows contain `text` in any text column (for privacy checks)."""
        by_table: dict[str, list[str]] = {}
        for name, col in await self._text_columns():
            by_table.setdefault(name, []).append(col["name"])
        counts: dict[str, int] = {}
        for name, columns in by_table.items():
            condition = " OR ".join(f"instr({c}, ?) > 0" for c in columns)
            row = await self._tx.fetchone(
                f"SELECT COUNT(*) FROM {name} WHERE {condition}",  # noqa: S608 - schema names
                [text] * len(columns))
            counts[name] = row[0]
        return counts

    # ---- erasure requests: recorded by !forgetme, carried out by the housekeeping task -------

    async def request_erasure(self, person: str, room_id: str, reply_to: str,
                              now: datetime) -> None:
        """Record the request, and blank the person's commands not handled yet (the inbox's
        pending rows only), so that nothing they sent after it is acted on."""
        await self._tx.execute(
            "INSERT INTO erasures (person, room_id, reply_to, requested_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (person) DO UPDATE SET room_id = excluded.room_id, "
            "reply_to = excluded.reply_to",
            (person, room_id, reply_to, now_text(now)))
        await self._tx.execute(
            "UPDATE inbox SET sender = '', text = '' WHERE handled_at IS NULL AND sender = ?",
            (person,))

    async def next_erasure(self) -> ErasureRequest | None:
        row = await self._tx.fetchone("SELECT * FROM erasures ORDER BY requested_at LIMIT 1")
        if row is None:
            return None
        return ErasureRequest(row["person"], row["room_id"], row["reply_to"],
                              parse_time(row["requested_at"]))

    async def end_erasure(self, person: str) -> None:
        await self._tx.execute("DELETE FROM erasures WHERE person = ?", (person,))
