"""Phone trees: who is on a room's tree (hours, backup), alerts, and each member's call.

A call's DM is an outbox row (`outbox_id`): whether and when it reached the person, and a 👍 on it,
are read from the outbox. Rows name people: `tree_members` until `!tree leave` or `!forgetme`;
alerts and their calls `retention_days` after the alert (bot/retention.py), and `!forgetme`
removes the person's (`forget`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from bot.store.base import Area, now_text, parse_time, placeholders


@dataclass(frozen=True, slots=True)
class TreeMember:
    room_id: str
    person: str
    hours: str | None
    backup: str | None


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    room_id: str
    caller: str | None
    text: str
    urgent: bool
    wait_seconds: int
    event_id: str | None
    created_at: datetime
    closed_at: datetime | None
    origin: str | None = None  # the name of the pod that forwarded it (None: this pod's own)


@dataclass(frozen=True, slots=True)
class Call:
    """One member's call, with what the outbox knows of its DM, and the backup the member had
    when the alert was sent (the alert finishes as it began, whatever changed since)."""

    id: int
    alert_id: int
    person: str
    due_at: datetime
    outbox_id: int | None
    escalated: int  # steps of the escalation chain already taken
    confirmed_at: datetime | None
    backup: str | None
    sent_at: datetime | None
    dead_at: datetime | None


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(row["id"], row["room_id"], row["caller"], row["text"] or "", bool(row["urgent"]),
                 row["wait_seconds"], row["event_id"], parse_time(row["created_at"]),
                 _time(row["closed_at"]), row["origin"])


def _call(row: sqlite3.Row) -> Call:
    return Call(row["id"], row["alert_id"], row["person"], parse_time(row["due_at"]),
                row["outbox_id"], row["escalated"], _time(row["confirmed_at"]), row["backup"],
                _time(row["sent_at"]), _time(row["dead_at"]))


_CALLS = ("SELECT c.*, o.sent_at, o.dead_at FROM alert_calls c "
          "JOIN alerts a ON a.id = c.alert_id "
          "LEFT JOIN outbox o ON o.id = c.outbox_id ")


class TreeArea(Area):
    # ---- members ------------------------------------------------------------------------------

    async def join(self, room_id: str, person: str, hours: str | None, now: datetime) -> bool:
        """On the tree with these hours; True if they were not on it before."""
        known = await self.member(room_id, person) is not None
        await self._tx.execute(
            "INSERT INTO tree_members (room_id, person, hours, joined_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (room_id, person) DO UPDATE SET hours = excluded.hours",
            (room_id, person, hours, now_text(now)))
        return not known

    async def leave(self, room_id: str, person: str) -> bool:
        cursor = await self._tx.execute(
            "DELETE FROM tree_members WHERE room_id = ? AND person = ?", (room_id, person))
        return cursor.rowcount > 0

    async def set_backup(self, room_id: str, person: str, backup: str | None) -> None:
        await self._tx.execute(
            "UPDATE tree_members SET backup = ? WHERE room_id = ? AND person = ?",
            (backup, room_id, person))

    async def member(self, room_id: str, person: str) -> TreeMember | None:
        row = await self._tx.fetchone(
            "SELECT * FROM tree_members WHERE room_id = ? AND person = ?", (room_id, person))
        return TreeMember(row["room_id"], row["person"], row["hours"], row["backup"]) if row else None

    async def members(self, room_id: str) -> list[TreeMember]:
        rows = await self._tx.fetchall(
            "SELECT * FROM tree_members WHERE room_id = ? ORDER BY joined_at, person", (room_id,))
        return [TreeMember(r["room_id"], r["person"], r["hours"], r["backup"]) for r in rows]

    async def move(self, room_id: str, new_room: str, people: list[str]) -> list[TreeMember]:
        """A split: these people's places on the room's tree go to the new pod's tree, with
        their hours, backups and order (a backup is the caller's to check); what moved. Their
        calls of alerts already sent stay with those alerts."""
        if not people:
            return []
        moving = [m for m in await self.members(room_id) if m.person in set(people)]
        names = [m.person for m in moving]
        if not names:
            return []
        these = f"room_id = ? AND person IN ({placeholders(names)})"
        copy = ("INSERT INTO tree_members (room_id, person, hours, backup, joined_at) "  # noqa: S608
                "SELECT ?, person, hours, backup, joined_at FROM tree_members WHERE "
                + these + " ON CONFLICT (room_id, person) DO NOTHING")
        await self._tx.execute(copy, (new_room, room_id, *names))
        await self._tx.execute("DELETE FROM tree_members WHERE " + these,  # noqa: S608
                               (room_id, *names))
        return [TreeMember(new_room, m.person, m.hours, m.backup) for m in moving]

    # ---- alerts and calls ---------------------------------------------------------------------

    async def add_alert(self, room_id: str, caller: str | None, text: str, urgent: bool,
                        wait_seconds: int, event_id: str, now: datetime,
                        calls: list[tuple[str, datetime]], origin: str | None = None) -> Alert:
        """An alert and a call per (person, when it may reach them), each with the person's
        backup on the room's tree now."""
        row = await self._tx.fetchone(
            "INSERT INTO alerts (room_id, caller, text, urgent, wait_seconds, event_id, "
            "created_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (room_id, caller, text, int(urgent), wait_seconds, event_id, now_text(now), origin))
        alert = _alert(row)
        await self._tx.executemany(
            "INSERT INTO alert_calls (alert_id, person, due_at, backup) VALUES (?, ?, ?, (SELECT "
            "backup FROM tree_members WHERE room_id = ? AND person = ?))",
            [(alert.id, person, now_text(at), room_id, person) for person, at in calls])
        return alert

    async def alert(self, alert_id: int) -> Alert:
        found = await self._tx.fetch_by("alerts", _alert, id=alert_id)
        if found is None:
            raise KeyError(alert_id)
        return found

    async def latest_alert(self, room_id: str | None = None,
                           caller: str | None = None) -> Alert | None:
        """The newest alert of a room, or called by a person (from their DM)."""
        row = await self._tx.fetchone(
            "SELECT * FROM alerts WHERE (? IS NULL OR room_id = ?) AND (? IS NULL OR caller = ?) "
            "ORDER BY id DESC LIMIT 1", (room_id, room_id, caller, caller))
        return _alert(row) if row else None

    async def alert_by_event(self, room_id: str, event_id: str) -> Alert | None:
        """The alert whose command, or the bot's answer to it, is `event_id` in the room."""
        row = await self._tx.fetchone(
            "SELECT * FROM alerts WHERE room_id = ? AND event_id IN (?, (SELECT reply_to FROM "
            "outbox WHERE event_id = ? AND room_id = ?)) ORDER BY id DESC LIMIT 1",
            (room_id, event_id, event_id, room_id))
        return _alert(row) if row else None

    async def open_alerts(self, since: datetime) -> list[Alert]:
        rows = await self._tx.fetchall(
            "SELECT * FROM alerts WHERE closed_at IS NULL AND created_at >= ? ORDER BY id",
            (now_text(since),))
        return [_alert(r) for r in rows]

    async def calls(self, alert_id: int) -> list[Call]:
        rows = await self._tx.fetchall(_CALLS + "WHERE c.alert_id = ? ORDER BY c.id", (alert_id,))
        return [_call(r) for r in rows]

    async def call(self, call_id: int) -> Call:
        row = await self._tx.fetchone(_CALLS + "WHERE c.id = ?", (call_id,))
        if row is None:
            raise KeyError(call_id)
        return _call(row)

    async def waiting_call(self, person: str, since: datetime) -> tuple[Call, Alert] | None:
        """The person's newest call that reached them and awaits their confirmation."""
        row = await self._tx.fetchone(
            _CALLS + "WHERE c.person = ? AND c.confirmed_at IS NULL AND c.outbox_id IS NOT NULL "
            "AND a.closed_at IS NULL AND a.created_at >= ? ORDER BY c.id DESC LIMIT 1",
            (person, now_text(since)))
        return (_call(row), await self.alert(row["alert_id"])) if row else None

    async def call_by_message(self, event_id: str) -> tuple[Call, Alert] | None:
        """The call whose DM is the bot's message `event_id`."""
        row = await self._tx.fetchone(
            _CALLS + "WHERE c.outbox_id = (SELECT id FROM outbox WHERE event_id = ?)",  # noqa: S608
            (event_id,))
        return (_call(row), await self.alert(row["alert_id"])) if row else None

    async def call_of(self, alert_id: int, person: str) -> Call | None:
        row = await self._tx.fetchone(
            _CALLS + "WHERE c.alert_id = ? AND c.person = ?", (alert_id, person))
        return _call(row) if row else None

    async def rung(self, call_id: int, outbox_id: int) -> None:
        await self._tx.execute(
            "UPDATE alert_calls SET outbox_id = ? WHERE id = ? AND outbox_id IS NULL",
            (outbox_id, call_id))

    async def escalated(self, call_id: int, steps: int) -> None:
        await self._tx.execute(
            "UPDATE alert_calls SET escalated = MAX(escalated, ?) WHERE id = ?", (steps, call_id))

    async def confirm(self, call_id: int, now: datetime) -> bool:
        cursor = await self._tx.execute(
            "UPDATE alert_calls SET confirmed_at = ? WHERE id = ? AND confirmed_at IS NULL",
            (now_text(now), call_id))
        return cursor.rowcount == 1

    async def close(self, alert_id: int, now: datetime) -> None:
        await self._tx.execute(
            "UPDATE alerts SET closed_at = COALESCE(closed_at, ?) WHERE id = ?",
            (now_text(now), alert_id))

    async def forget(self, person: str) -> dict[str, int]:
        """`!forgetme`: off every tree, nobody's backup, no calls, and no longer a caller."""
        counts = {}
        for table, sql in (
                ("tree_members", "DELETE FROM tree_members WHERE person = ?"),
                ("tree_members", "UPDATE tree_members SET backup = NULL WHERE backup = ?"),
                ("alert_calls", "UPDATE alert_calls SET backup = NULL WHERE backup = ?"),
                ("alert_calls", "DELETE FROM alert_calls WHERE person = ?"),
                ("alerts", "UPDATE alerts SET caller = NULL WHERE caller = ?")):
            n = (await self._tx.execute(sql, (person,))).rowcount
            if n > 0:
                counts[table] = counts.get(table, 0) + n
        return counts
