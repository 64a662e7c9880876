"""How long personal data is kept: one table of rules, and the sweep that applies them.

Every column of every table is either in `NOT_PERSONAL` (it cannot name a person: counters,
categories, dates, flags, room ids of pods) or covered by a `Rule` here, which says how long it is
kept and what then happens to it. `tests/unit/test_retention.py` fails when the schema gains a
table or column that is in neither, so nothing personal is added without deciding its lifetime.

A rule with `sql` is applied by `sweep`: the statement runs over the table in bounded chunks of
rowids (`CHUNK_ROWS`), each chunk its own short bulk transaction on aiosqlite's thread, so that at
100,000 posts no chunk holds the storage lock for long and commands keep flowing between chunks.
A rule without `sql` is kept by the code its `then` names (delivery, intake, `!forgetme`).

Statements use named parameters, computed once per sweep by `parameters`:
`:now`, `:cutoff` (now - `privacy.retention_days`), `:cutoff_occurrence` (the same moment as a
shift occurrence key), `:inbox_cutoff` (the earlier of `:cutoff` and the oldest command the
transport still accepts, so a replayed event is still recognised), `:claimed_stale` (now -
`shifts.post_expiry_days`), `:network_cutoff` (now - `NETWORK_TOKENS_KEPT`, or longer if the
transport accepts older commands, so a replayed network message is still recognised), `:reminder_cutoff` (the earlier of `:cutoff` and a day past the late
grace, so a scheduled send is never repeated), `:ended_shifts` (a JSON list of shifts with no
occurrence since `:cutoff`), `:block_cutoff` (now - `front_door.block_days`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.models import PostStatus
from bot.schedule_rules import ShiftWhen, occurrences
from bot.shift_models import occurrence_key
from bot.store.base import now_text
from bot.turns import let_others_run

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.storage import Storage
    from bot.store.privacy import ShiftSpan

CLOSED = frozenset({PostStatus.DONE, PostStatus.CANCELLED, PostStatus.EXPIRED})

# How often the retention sweep should run (a scheduler job or the app's housekeeping loop).
SWEEP_INTERVAL = timedelta(hours=1)
# Rowids per chunk: one chunk is one short transaction (a few milliseconds at most).
CHUNK_ROWS = 1000
# A rule whose statement deletes whole rows covers every column of its table.
ROW = ("*",)

_CLOSED_SQL = "('done', 'cancelled', 'expired')"

# How long the network's alert tokens are kept (`alert_forwards`, `remote_alerts`: no person in
# them, but no end either): far past the hourly limits they count for and any replay window.
NETWORK_TOKENS_KEPT = timedelta(days=30)


@dataclass(frozen=True)
class Rule:
    table: str
    columns: tuple[str, ...]  # the columns that can name a person, or ROW
    kept: str  # until when
    then: str  # erased, deleted or aggregated, and by what
    sql: str | None = None  # applied by the sweep, chunk by chunk (`rowid` bounds are added)


RULES: tuple[Rule, ...] = (
    # ---- posts ----
    Rule("posts", (), "a claimed post: until untouched for post_expiry_days",
         "closed as expired (then erased like any closed post)",
         "UPDATE posts SET status = 'expired', updated_at = :now "
         "WHERE status = 'claimed' AND updated_at < :claimed_stale"),
    Rule("introductions", ROW, "until their post's people and details are erased",
         "deleted",
         f"DELETE FROM introductions WHERE post_id IN (SELECT id FROM posts WHERE status IN "  # noqa: S608
         f"{_CLOSED_SQL} AND updated_at < :cutoff)"),
    Rule("relays", ROW, "until ended by !end, then until their post's people and details are "
         "erased", "deleted",
         f"DELETE FROM relays WHERE post_id IN (SELECT id FROM posts WHERE status IN "  # noqa: S608
         f"{_CLOSED_SQL} AND updated_at < :cutoff)"),
    Rule("posts", ("author", "claimed_by", "text", "event_id"),
         "open: while listed; closed (done, cancelled, expired): retention_days after closing",
         "erased; room, number, kind, category, urgency, dates and status stay as aggregates",
         f"UPDATE posts SET text = NULL, author = NULL, claimed_by = NULL, event_id = NULL, "  # noqa: S608
         f"erased_at = :now WHERE status IN {_CLOSED_SQL} AND updated_at < :cutoff "
         "AND erased_at IS NULL"),
    # ---- delivery ----
    Rule("inbox", ("text",), "until the command has been handled (under a second)",
         "blanked by delivery (mark_handled)"),
    Rule("inbox", ROW, "retention_days after handling (at least as long as a replayed event "
         "could still be accepted, so it is never handled twice)", "deleted",
         "DELETE FROM inbox WHERE handled_at IS NOT NULL AND handled_at < :inbox_cutoff"),
    Rule("outbox", ("body", "html", "attachment_data", "network"),
         "until delivered or given up (dead letter)", "blanked by delivery (mark_sent, mark_dead)"),
    Rule("outbox", ROW, "sent: retention_days after sending (so !forgetme can redact them)",
         "deleted",
         "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < :cutoff"),
    Rule("outbox", ROW, "dead letters: retention_days after delivery was given up", "deleted",
         "DELETE FROM outbox WHERE dead_at IS NOT NULL AND dead_at < :cutoff"),
    Rule("dm_rooms", ROW, "until !forgetme: the way to reach the person; it holds no content",
         "deleted by !forgetme"),
    Rule("room_state", ROW, "while the person is in one of the bot's rooms: their membership and "
         "power level there, which the bot needs to reach them (bot/store/rooms.py)",
         "deleted when they leave; !forgetme erases them from it, and the next start reads the "
         "rooms' state from the homeserver again"),
    Rule("room_notes", ROW, "notes naming a person (an unreadable message, a warning to them): "
         "retention_days; other notes are about rooms only and stay", "deleted",
         "DELETE FROM room_notes WHERE instr(note, '@') > 0 AND at < :cutoff"),
    Rule("actions", ROW, "a room being made: until made or given up, then retention_days; a "
         "person's pending direct chat is dropped by !forgetme", "deleted",
         "DELETE FROM actions WHERE status != 'pending' AND updated_at < :cutoff"),
    # ---- records (issue 13): the ledger and report requests name nobody ----
    Rule("timebank", ("person",), "retention_days after the credit (so !balance counts the "
         "hours of the retention period)", "blanked; the hours stay in the pod's total",
         "UPDATE timebank SET person = '' WHERE person != '' AND at < :cutoff"),
    Rule("items", ("owner", "name", "notes"), "while listed (the owner chose to list them); "
         "withdrawn items: retention_days after", "blanked by !forgetme and the sweep",
         "UPDATE items SET owner = NULL, name = NULL, notes = NULL WHERE status != 'available' "
         "AND owner IS NOT NULL AND updated_at < :cutoff"),
    Rule("loans", ("owner", "borrower"), "while asked or lent; closed loans: retention_days "
         "after closing", "blanked; the loan stays as a count",
         "UPDATE loans SET borrower = NULL, owner = NULL WHERE status NOT IN ('asked', 'lent') "
         "AND closed_at < :cutoff AND (borrower IS NOT NULL OR owner IS NOT NULL)"),
    Rule("report_requests", ROW, "until the report is sent (seconds; the reply goes to the "
         "command, which may be a coordinator's DM)", "deleted by the report runner"),
    # ---- phone trees (issue 12) ----
    Rule("tree_members", ROW, "while the person is on the tree (they chose to join; the backup "
         "they named is kept with it)", "deleted by !tree leave and !forgetme (which also "
         "removes them as anyone's backup)"),
    Rule("alert_calls", ROW, "retention_days after the alert", "deleted",
         "DELETE FROM alert_calls WHERE alert_id IN (SELECT id FROM alerts "
         "WHERE created_at < :cutoff)"),
    Rule("alerts", ROW, "retention_days after the alert (its calls go first)", "deleted",
         "DELETE FROM alerts WHERE created_at < :cutoff AND id NOT IN "
         "(SELECT alert_id FROM alert_calls)"),
    # ---- private intake ----
    Rule("intake", ROW, "until posted, stopped or idle for intake_timeout_minutes "
         "(expire_idle tells the person); this rule is the backstop", "deleted",
         "DELETE FROM intake WHERE updated_at < :cutoff"),
    # ---- the front door ----
    Rule("blocks", ROW, "until !unblock, or block_days after it was made; the blocked person's "
         "!forgetme keeps it (their id and the date only) so erasure cannot lift a block; the "
         "blocking coordinator's !forgetme blanks blocked_by", "deleted",
         "DELETE FROM blocks WHERE created_at < :block_cutoff"),
    Rule("erasures", ROW, "a confirmed !forgetme: until carried out (seconds later; a restart "
         "carries it out on start)", "deleted by the housekeeping task that carries it out"),
    # ---- the network of pods (docs/network.md) ----
    Rule("remote_claims", ROW, "while the requester in the other pod is asked; answered or "
         "closed: retention_days after the claim", "deleted (and by !forgetme)",
         "DELETE FROM remote_claims WHERE status != 'asked' AND created_at < :cutoff"),
    Rule("alert_forwards", (), "NETWORK_TOKENS_KEPT (30 days) after the forward (tokens, no "
         "person; the hourly limit needs the last hour)", "deleted",
         "DELETE FROM alert_forwards WHERE created_at < :network_cutoff"),
    Rule("remote_alerts", (), "NETWORK_TOKENS_KEPT (30 days) after the alert came (tokens, no "
         "person; replays are recognised by them)", "deleted",
         "DELETE FROM remote_alerts WHERE received_at < :network_cutoff"),
    # ---- shifts ----
    Rule("shift_signups", ROW, "a dated sign-up: retention_days after that date", "deleted",
         "DELETE FROM shift_signups WHERE occurrence != '*' AND occurrence < :cutoff_occurrence"),
    Rule("shift_signups", ROW, "an all-dates sign-up: until retention_days after the shift's "
         "last date (or its cancellation)", "deleted",
         "DELETE FROM shift_signups WHERE shift_id IN (SELECT value FROM json_each(:ended_shifts))"),
    Rule("shifts", ("created_by",), "until retention_days after the shift's last date (or its "
         "cancellation)", "blanked; the shift's title, place and dates stay",
         "UPDATE shifts SET created_by = '' WHERE created_by != '' "
         "AND id IN (SELECT value FROM json_each(:ended_shifts))"),
    Rule("standin_requests", ROW, "retention_days after the shift date", "deleted",
         "DELETE FROM standin_requests WHERE occurrence < :cutoff_occurrence"),
    Rule("noshows", ROW, "retention_days after the shift date", "deleted",
         "DELETE FROM noshows WHERE occurrence < :cutoff_occurrence"),
    Rule("sent_reminders", ROW, "retention_days after sending (and never before the late grace "
         "has passed, so nothing is sent twice)", "deleted",
         "DELETE FROM sent_reminders WHERE at < :reminder_cutoff"),
)

# Columns that cannot name a person (nor link to one): kept as long as their row.
NOT_PERSONAL: dict[str, tuple[str, ...]] = {
    "schema_version": ("version", "applied_at"),
    "meta": ("key", "value"),  # sync token, per-room join and seen marks
    "room_counters": ("room_id", "last_number"),
    "room_settings": ("room_id", "key", "value"),
    "posts": ("id", "room_id", "number", "kind", "category", "urgency", "status", "created_at",
              "updated_at", "private", "anonymous", "renewed_at", "details_shown", "erased_at",
              "zone", "claimed_at", "escalate_at"),
    "outbox": ("id",),  # the rest goes with the row
    "shifts": ("id", "room_id", "number", "title", "place", "needed", "when_json", "active",
               "created_at", "updated_at"),
    "shift_cancelled": ("shift_id", "occurrence", "at"),
    # Records (issue 13): the ledger is counts and durations only, kept for good.
    "ledger": ("id", "post_id", "room_id", "kind", "category", "zone", "urgency", "created_at",
               "claimed_at", "done_at", "match_seconds", "fulfil_seconds", "hours"),
    "timebank": ("id", "room_id", "hours", "ledger_id", "at"),
    # The network of pods: rooms, pods' names and zones, bots' accounts (not people), tokens,
    # categories and dates. Who asked or helped is only in posts, introductions, remote_claims.
    "network_links": ("pod_room", "network_room", "address", "token", "linked_at"),
    "escalations": ("id", "post_id", "pod_room", "status", "created_at", "closed_at",
                    "sent_id", "rounds", "reopened_at"),
    "escalation_claims": ("claim", "escalation", "bot", "intro_id", "status", "created_at"),
    "network_pods": ("network_room", "bot", "token", "name", "zones", "announced_at", "left_at",
                     "answered_at"),
    "remote_needs": ("id", "pod_room", "network_room", "origin_bot", "origin_pod", "escalation",
                     "pod_name", "category", "urgency", "zone", "status", "received_at",
                     "closed_at"),
    "remote_need_routes": ("origin_bot", "escalation", "network_room", "received_at",
                           "closed_at"),
    # Forwarded phone-tree alerts: tokens, rooms, pods' names and bots' accounts; the text is in
    # `alerts` (its own rule) and, until sent, in the outbox.
    "alert_forwards": ("token", "pod_room", "urgent", "created_at"),
    "remote_alerts": ("origin_bot", "token", "pod_room", "network_room", "origin_pod",
                      "pod_name", "received_at"),
    "items": ("id", "room_id", "number", "loan_days", "status", "created_at", "updated_at"),
    "loans": ("id", "item_id", "room_id", "status", "asked_at", "lent_at", "due_on", "closed_at"),
}


def uncovered(schema: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(table, column) pairs of `schema` that neither a rule nor `NOT_PERSONAL` accounts for."""
    covered: dict[str, set[str]] = {t: set(c) for t, c in NOT_PERSONAL.items()}
    for rule in RULES:
        covered.setdefault(rule.table, set()).update(
            schema.get(rule.table, ()) if rule.columns == ROW else rule.columns)
    return [(table, column) for table, columns in sorted(schema.items()) for column in columns
            if column not in covered.get(table, ())]


def unknown(schema: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(table, column) pairs the rules name that the schema does not have (stale rules)."""
    named = [(rule.table, c) for rule in RULES for c in (rule.columns if rule.columns != ROW
                                                          else ())]
    named += [(t, c) for t, columns in NOT_PERSONAL.items() for c in columns]
    named += [(rule.table, "") for rule in RULES if rule.columns == ROW]
    return [(t, c) for t, c in named if t not in schema or (c and c not in schema[t])]


def cutoff(now: datetime, retention_days: float) -> datetime:
    """Posts closed before this moment are due for erasure."""
    return now - timedelta(days=retention_days)


def is_due(status: PostStatus, closed_at: datetime, now: datetime, retention_days: float) -> bool:
    return status in CLOSED and closed_at < cutoff(now, retention_days)


_SLICE_SECONDS = 0.002  # the longest `ended_shift_ids` works before letting other tasks run


async def ended_shift_ids(spans: list[ShiftSpan], before: datetime) -> list[int]:
    """The shifts with no date left at or after `before`. It parses every shift and expands
    every rota, which grows with the data: on the loop, a slice at a time. (On a thread, its
    pure Python held the GIL against the loop, and every statement the loop ran meanwhile
    waited up to 5 ms to get it back: stalls of 80-130 ms in bench/looplag.py's "all".)"""
    ended = []
    mark = time.perf_counter()
    for span in spans:
        if shift_has_ended(ShiftWhen.model_validate_json(span.when_json), span.active,
                           span.updated_at, before):
            ended.append(span.shift_id)
        if time.perf_counter() - mark > _SLICE_SECONDS:
            await let_others_run()
            mark = time.perf_counter()
    return ended


def shift_has_ended(when: ShiftWhen, active: bool, updated_at: datetime, before: datetime) -> bool:
    """No occurrence of the shift starts at or after `before` (a cancelled shift: cancelled
    before it)."""
    if not active:
        return updated_at < before
    return not occurrences(when, before, 1)


def parameters(config: BotConfig, now: datetime, ended_shifts: list[int]) -> dict[str, object]:
    """The named values the rules' statements use (see the module doc)."""
    at = cutoff(now, config.privacy.retention_days)
    command_age = config.matrix.max_command_age_hours if config.matrix else 24.0
    grace = timedelta(minutes=config.shifts.late_grace_minutes) + timedelta(days=1)
    return {
        "now": now_text(now),
        "cutoff": now_text(at),
        "cutoff_occurrence": occurrence_key(at),
        "inbox_cutoff": now_text(min(at, now - timedelta(hours=command_age))),
        "claimed_stale": now_text(now - timedelta(days=config.shifts.post_expiry_days)),
        "reminder_cutoff": now_text(min(at, now - grace)),
        "ended_shifts": json.dumps(ended_shifts),
        "block_cutoff": now_text(now - timedelta(days=config.front_door.block_days)),
        "network_cutoff": now_text(now - max(NETWORK_TOKENS_KEPT,
                                             timedelta(hours=command_age) + timedelta(days=1))),
    }


async def sweep(storage: Storage, config: BotConfig, now: datetime) -> int:
    """Apply every rule with a statement; returns how many rows were changed or deleted."""
    before = cutoff(now, config.privacy.retention_days)
    async with storage.transaction(bulk=True) as tx:
        spans = await tx.privacy.shift_spans()
    ended = await ended_shift_ids(spans, before)
    values = parameters(config, now, ended)
    changed = 0
    for rule in RULES:
        if rule.sql is None:
            continue
        async with storage.transaction() as tx:  # two index lookups
            low, high = await tx.privacy.rowid_span(rule.table)
        for start in range(low, high + 1, CHUNK_ROWS):
            async with storage.transaction(bulk=True) as tx:
                changed += await tx.privacy.apply_rule(rule.sql, values, start, start + CHUNK_ROWS)
            await let_others_run()  # waiting commands take the lock between chunks
    return changed
