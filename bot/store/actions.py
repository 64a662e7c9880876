"""Network steps (creating a room): the intent, committed before the request is made, and its
outcome, committed after it with whatever follows from it. See bot/actions.py for the steps."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from bot.store.base import Area, now_text, parse_time

PENDING, DONE, FAILED = "pending", "done", "failed"


def dm_key(user_id: str) -> str:
    """The key of the step that makes a person's direct chat."""
    return f"dm:{user_id}"


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    kind: str  # what the request is: "create_room"
    key: str  # what it is for ("intro:7", "dm:@bob:example.org"); one pending action per key
    tag: str  # written into what the request makes, to find it again (unique, never reused)
    params: dict
    status: str
    result: str | None  # the room id once done
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    first_failure_at: datetime | None


def _action(row: sqlite3.Row) -> Action:
    failure = row["first_failure_at"]
    return Action(row["id"], row["kind"], row["key"], row["tag"], json.loads(row["params"]),
                  row["status"], row["result"], row["error"], row["attempts"],
                  parse_time(row["created_at"]), parse_time(row["updated_at"]),
                  parse_time(failure) if failure else None)


class ActionsArea(Area):
    async def request(self, kind: str, key: str, params: dict, now: datetime) -> Action:
        """The pending action for `key`, or a new one. A new one for a key whose last action
        failed keeps that action's tag, so a room it left behind is used rather than another
        made."""
        pending = await self._tx.fetch_by("actions", _action, key=key, status=PENDING)
        if pending is not None:
            return pending
        last = await self._tx.fetchone(
            "SELECT tag FROM actions WHERE key = ? AND status = ? ORDER BY id DESC LIMIT 1",
            (key, FAILED))
        tag = last["tag"] if last else uuid.uuid4().hex
        stamp = now_text(now)
        cursor = await self._tx.execute(
            "INSERT INTO actions (kind, key, tag, params, status, attempts, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            (kind, key, tag, json.dumps(params), PENDING, stamp, stamp))
        return await self.by_id(cursor.lastrowid)

    async def by_id(self, action_id: int) -> Action | None:
        return await self._tx.fetch_by("actions", _action, id=action_id)

    async def pending(self, limit: int = 100, exclude: Iterable[int] = ()) -> list[Action]:
        """Pending actions, oldest first, leaving out `exclude` (those backing off)."""
        rows = await self._tx.fetchall(
            "SELECT * FROM actions WHERE status = ? AND id NOT IN "
            "(SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
            (PENDING, json.dumps(list(exclude)), limit))
        return [_action(r) for r in rows]

    async def note_failure(self, action_id: int, error: str, now: datetime) -> None:
        """A transient failure: counted, the time of the first kept for the give-up bound."""
        await self._tx.execute(
            "UPDATE actions SET attempts = attempts + 1, error = ?, updated_at = ?, "
            "first_failure_at = COALESCE(first_failure_at, ?) WHERE id = ?",
            (error, now_text(now), now_text(now), action_id))

    async def finish(self, action_id: int, status: str, now: datetime, *,
                     result: str | None = None, error: str | None = None) -> bool:
        """Done (with its result) or failed (with why); False if it was no longer pending."""
        cursor = await self._tx.execute(
            "UPDATE actions SET status = ?, result = ?, error = COALESCE(?, error), "
            "updated_at = ? WHERE id = ? AND status = ?",
            (status, result, error, now_text(now), action_id, PENDING))
        return cursor.rowcount == 1

    async def failed(self, limit: int = 50) -> list[Action]:
        """Actions that gave up, newest first (for coordinators)."""
        rows = await self._tx.fetchall(
            "SELECT * FROM actions WHERE status = ? ORDER BY id DESC LIMIT ?", (FAILED, limit))
        return [_action(r) for r in rows]
