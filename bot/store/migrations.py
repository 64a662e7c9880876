"""The schema's history. Ordered: index + 1 is the version a step brings the database to.
Append, never edit: a database made by an older release replays the steps it has not seen.

Each step is a script of plain statements; `bot.storage` runs a step and its version row in one
transaction, so a step that fails leaves the database exactly at the version before it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    name: str
    script: str

    def statements(self) -> list[str]:
        """The script split into statements (`executescript` would commit between them)."""
        statements, pending = [], ""
        for line in self.script.splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                statements.append(pending.strip())
                pending = ""
        if pending.strip():
            raise ValueError(f"migration {self.name!r} ends with an incomplete statement")
        return statements


MIGRATIONS: list[Migration] = [
    Migration("initial: inbox, outbox, posts, DM rooms", """
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

"""),
    Migration("shifts, sign-ups, stand-ins, room settings, scheduled sends", """
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

"""),
    Migration("private intake, introductions, retention marks", """
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

"""),
    # Without it every inbox insert scans all of the inbox's history for the next number.
    Migration("inbox sequence index", """
        CREATE INDEX inbox_seq ON inbox (seq);
"""),
    # Delivery keeps order per destination (a room, or a person's DM) and backs a failing one
    # off alone; what cannot be delivered ends as a dead letter with its reason.
    Migration("outbox by destination, failures and dead letters", """
        ALTER TABLE outbox ADD COLUMN destination TEXT;
        UPDATE outbox SET destination = COALESCE(room_id, 'person:' || user_id);
        ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN first_failure_at TEXT;
        ALTER TABLE outbox ADD COLUMN dead_at TEXT;
        ALTER TABLE outbox ADD COLUMN dead_reason TEXT;
        DROP INDEX outbox_pending;
        CREATE INDEX outbox_pending ON outbox (destination, id)
            WHERE sent_at IS NULL AND dead_at IS NULL;
        CREATE INDEX outbox_dead ON outbox (id) WHERE dead_at IS NOT NULL;
        CREATE INDEX posts_claimed_by ON posts (claimed_by) WHERE claimed_by IS NOT NULL;
"""),
    # Network steps (creating a room) are recorded before they are made and finished after, so
    # no transaction waits on the network and a crash between the two repeats nothing.
    Migration("actions: network steps with intent, outcome and tag", """
        CREATE TABLE actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            tag TEXT NOT NULL,
            params TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            first_failure_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE UNIQUE INDEX actions_pending_key ON actions (key) WHERE status = 'pending';
        CREATE INDEX actions_key ON actions (key, id);
"""),
    # Who a sent message names in its text (a roster "On: @sam:example.org", a consent question
    # naming the helper), kept after the text itself is erased so !forgetme can redact it.
    Migration("outbox: people named in a message's text", """
        ALTER TABLE outbox ADD COLUMN named TEXT NOT NULL DEFAULT '[]';
"""),
    # Records a pod can act on (issue 13). The ledger and the zone name nobody: they stay for
    # good. Time-bank credits, items and loans name people and follow retention and !forgetme.
    Migration("records: zones, ledger, time bank, tool library, report requests", """
        ALTER TABLE posts ADD COLUMN zone TEXT;
        ALTER TABLE posts ADD COLUMN claimed_at TEXT;
        ALTER TABLE outbox ADD COLUMN attachment_width INTEGER;
        ALTER TABLE outbox ADD COLUMN attachment_height INTEGER;
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            post_id INTEGER NOT NULL UNIQUE REFERENCES posts (id),
            room_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            category TEXT NOT NULL,
            zone TEXT,
            urgency INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            claimed_at TEXT,
            done_at TEXT NOT NULL,
            match_seconds REAL,
            fulfil_seconds REAL NOT NULL,
            hours REAL
        );
        CREATE INDEX ledger_room_done ON ledger (room_id, done_at);
        CREATE INDEX posts_room_created ON posts (room_id, created_at, kind, category, zone);
        CREATE TABLE timebank (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            person TEXT NOT NULL,
            hours REAL NOT NULL,
            ledger_id INTEGER NOT NULL REFERENCES ledger (id),
            at TEXT NOT NULL
        );
        CREATE INDEX timebank_person ON timebank (person);
        CREATE TABLE items (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            owner TEXT,
            name TEXT,
            notes TEXT,
            loan_days INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (room_id, number)
        );
        CREATE INDEX items_owner ON items (owner);
        CREATE TABLE loans (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            item_id INTEGER NOT NULL REFERENCES items (id),
            room_id TEXT NOT NULL,
            borrower TEXT,
            owner TEXT,
            status TEXT NOT NULL,
            asked_at TEXT NOT NULL,
            lent_at TEXT,
            due_on TEXT,
            closed_at TEXT
        );
        CREATE INDEX loans_item ON loans (item_id, status);
        CREATE TABLE report_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            pod_room TEXT NOT NULL,
            period TEXT NOT NULL,
            reply_room TEXT NOT NULL,
            reply_to TEXT NOT NULL,
            requested_at TEXT NOT NULL
        );
"""),
    # The scheduler reads only what is due: posts by the start of their expiry clock, posts
    # changed since its last run, one-off shifts by their (local) start, and recurring shifts.
    Migration("indexes for what the scheduler finds due", """
        CREATE INDEX posts_expiry ON posts (COALESCE(renewed_at, created_at))
            WHERE status = 'open';
        CREATE INDEX posts_open_updated ON posts (updated_at) WHERE status = 'open';
        CREATE INDEX shifts_one_off ON shifts (
            json_extract(when_json, '$.first_date') || 'T' || json_extract(when_json, '$.start_local'))
            WHERE active = 1 AND json_extract(when_json, '$.rrule') IS NULL;
        CREATE INDEX shifts_recurring ON shifts (room_id, number)
            WHERE active = 1 AND json_extract(when_json, '$.rrule') IS NOT NULL;
"""),
    # !forgetme records the request in the command's short transaction; the erasure itself scans
    # every table, so the housekeeping task carries it out in a bulk transaction off the loop.
    Migration("erasure requests", """
        CREATE TABLE erasures (
            person TEXT PRIMARY KEY,
            room_id TEXT NOT NULL,
            reply_to TEXT NOT NULL,
            requested_at TEXT NOT NULL
        );
"""),
    # Redactions, reactions and edits are typed events in the inbox, handled exactly once like
    # commands: `kind` says which, `target` the event they act on (text: an edit's new text, a
    # reaction's key). Relays: two people on different networks talking through the bot.
    Migration("typed inbox events; relays", """
        ALTER TABLE inbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
        ALTER TABLE inbox ADD COLUMN target TEXT;
        UPDATE inbox SET kind = 'redaction', target = substr(text, 11), text = ''
            WHERE substr(text, 1, 10) = char(0) || 'redacted ';
        CREATE TABLE relays (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            post_id INTEGER NOT NULL REFERENCES posts (id),
            requester TEXT NOT NULL,
            helper TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE INDEX relays_requester ON relays (requester) WHERE ended_at IS NULL;
        CREATE INDEX relays_helper ON relays (helper) WHERE ended_at IS NULL;
"""),
    # A pod has zones (`!pod zones north, riverside`) where it had one (`!settings zone`).
    Migration("pod zones", """
        UPDATE room_settings SET key = 'zones'
            WHERE key = 'zone' AND NOT EXISTS (SELECT 1 FROM room_settings AS z
                WHERE z.room_id = room_settings.room_id AND z.key = 'zones');
        DELETE FROM room_settings WHERE key = 'zone';
"""),
    # The front door: coordinators block a sender's DMs (`!block`). A block made from a request
    # (`!block #14`) keeps where it came from, so it can be listed without naming the person.
    Migration("front door blocks", """
        CREATE TABLE blocks (
            person TEXT PRIMARY KEY,
            blocked_by TEXT NOT NULL,
            room_id TEXT,
            number INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX blocks_created ON blocks (created_at);
"""),
    # Phone trees (issue 12): who may be called and when, alerts and each person's call. A
    # call's DM is an outbox row (`outbox_id`), so a 👍 on it, or on any bot message, is found by
    # the event id the outbox keeps.
    Migration("phone trees and alerts", """
        CREATE TABLE tree_members (
            room_id TEXT NOT NULL,
            person TEXT NOT NULL,
            hours TEXT,
            backup TEXT,
            joined_at TEXT NOT NULL,
            PRIMARY KEY (room_id, person)
        );
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL,
            caller TEXT,
            text TEXT,
            urgent INTEGER NOT NULL,
            wait_seconds INTEGER NOT NULL,
            event_id TEXT,
            created_at TEXT NOT NULL,
            closed_at TEXT
        );
        CREATE INDEX alerts_open ON alerts (room_id, id) WHERE closed_at IS NULL;
        CREATE TABLE alert_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id INTEGER NOT NULL REFERENCES alerts (id),
            person TEXT NOT NULL,
            due_at TEXT NOT NULL,
            outbox_id INTEGER,
            escalated INTEGER NOT NULL DEFAULT 0,
            confirmed_at TEXT,
            UNIQUE (alert_id, person)
        );
        CREATE INDEX alert_calls_person ON alert_calls (person) WHERE confirmed_at IS NULL;
        CREATE INDEX alert_calls_outbox ON alert_calls (outbox_id);
        CREATE INDEX outbox_event ON outbox (event_id) WHERE event_id IS NOT NULL;
"""),
    # Issue 12: pods linked to network rooms, needs escalated to them and needs other pods
    # escalated, and the claims that travel between the bots. `outbox.network` carries a
    # message's payload to other bots until it is sent.
    Migration("network of pods: links, escalations, claims", """
        ALTER TABLE outbox ADD COLUMN network TEXT;
        CREATE TABLE network_links (
            pod_room TEXT NOT NULL,
            network_room TEXT NOT NULL,
            address TEXT NOT NULL,
            token TEXT NOT NULL,
            linked_at TEXT NOT NULL,
            PRIMARY KEY (pod_room, network_room)
        );
        CREATE INDEX network_links_network ON network_links (network_room);
        CREATE TABLE escalations (
            id TEXT PRIMARY KEY,
            post_id INTEGER NOT NULL UNIQUE REFERENCES posts (id),
            pod_room TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            closed_at TEXT
        );
        CREATE INDEX escalations_open ON escalations (pod_room, created_at) WHERE status = 'open';
        CREATE TABLE escalation_claims (
            claim TEXT PRIMARY KEY,
            escalation TEXT NOT NULL REFERENCES escalations (id),
            bot TEXT NOT NULL,
            intro_id INTEGER,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX escalation_claims_intro ON escalation_claims (intro_id);
        CREATE TABLE remote_needs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pod_room TEXT NOT NULL,
            network_room TEXT NOT NULL,
            origin_bot TEXT NOT NULL,
            origin_pod TEXT NOT NULL,
            escalation TEXT NOT NULL,
            pod_name TEXT NOT NULL,
            category TEXT NOT NULL,
            urgency INTEGER NOT NULL,
            zone TEXT,
            status TEXT NOT NULL,
            received_at TEXT NOT NULL,
            closed_at TEXT,
            UNIQUE (origin_bot, escalation, pod_room)
        );
        CREATE INDEX remote_needs_origin ON remote_needs (origin_bot, origin_pod, received_at);
        CREATE TABLE remote_claims (
            claim TEXT PRIMARY KEY,
            remote_need INTEGER NOT NULL REFERENCES remote_needs (id),
            helper TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX remote_claims_need ON remote_claims (remote_need);
"""),
    # Issue 12, item 7: a front-door request from an area no pod covers goes to the network at
    # once (`posts.escalate_at`: the latest it waits, else the pod's delay); the pods other bots
    # announced in a network room (name and zones) are kept, to offer their zones at the door.
    Migration("front door to the network: escalate_at, network_pods", """
        ALTER TABLE posts ADD COLUMN escalate_at TEXT;
        CREATE TABLE network_pods (
            network_room TEXT NOT NULL,
            bot TEXT NOT NULL,
            token TEXT NOT NULL,
            name TEXT NOT NULL,
            zones TEXT NOT NULL,
            announced_at TEXT NOT NULL,
            PRIMARY KEY (network_room, bot, token)
        );
"""),
    # Issue 12: a phone-tree alert forwarded to the network's pods. `alert_forwards`: this pod's
    # forwards (their tokens and times, for the hourly limit); `remote_alerts`: alerts received
    # per pod here (idempotent by origin bot, token and pod; the times for the other pod's
    # limit); `alerts.origin`: the name of the pod an alert came from (NULL: this pod's own).
    Migration("network alerts: forwarded and received", """
        ALTER TABLE alerts ADD COLUMN origin TEXT;
        CREATE TABLE alert_forwards (
            token TEXT PRIMARY KEY,
            pod_room TEXT NOT NULL,
            urgent INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX alert_forwards_pod ON alert_forwards (pod_room, created_at);
        CREATE TABLE remote_alerts (
            origin_bot TEXT NOT NULL,
            token TEXT NOT NULL,
            pod_room TEXT NOT NULL,
            network_room TEXT NOT NULL,
            origin_pod TEXT NOT NULL,
            pod_name TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (origin_bot, token, pod_room)
        );
        CREATE INDEX remote_alerts_origin ON remote_alerts (origin_bot, origin_pod, received_at);
"""),
    # The network's directory kept fresh: a pod that announced it left stays as a tombstone
    # (`left_at`; its token is never listed again: a pod that rejoins gets a new one), and when
    # this bot answered a pod new to it with its own pods (`answered_at`: the hourly cap).
    Migration("network_pods: left_at, answered_at", """
        ALTER TABLE network_pods ADD COLUMN left_at TEXT;
        ALTER TABLE network_pods ADD COLUMN answered_at TEXT;
"""),
    # A need open again after its escalation closed (a failed introduction, a helper's
    # !forgetme) is escalated again under a new id the networks have not seen (`sent_id`; NULL:
    # the first round, known by `id`), once per reopening (`rounds`, `reopened_at` for the
    # hourly limit). Claims keep naming the row by `id`.
    Migration("escalations reopened: sent_id, rounds, reopened_at", """
        ALTER TABLE escalations ADD COLUMN sent_id TEXT;
        ALTER TABLE escalations ADD COLUMN rounds INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE escalations ADD COLUMN reopened_at TEXT;
        CREATE UNIQUE INDEX escalations_sent ON escalations (sent_id);
"""),
    # The Matrix rooms' current state (bot/store/rooms.py), so that a restart syncs incrementally
    # instead of asking the homeserver for the full state of every room again.
    Migration("room_state", """
        CREATE TABLE room_state (
            room_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            state_key TEXT NOT NULL,
            event TEXT NOT NULL,
            PRIMARY KEY (room_id, event_type, state_key)
        );
"""),
    # A phone-tree call keeps the backup its member had when the alert was sent (`backup`), so
    # an alert finishes as it began: a `!pod split` that moves the member (their tree row goes
    # to the new pod) or clears their backup does not change whom their silence reaches.
    Migration("alert_calls: the backup at sending time", """
        ALTER TABLE alert_calls ADD COLUMN backup TEXT;
        UPDATE alert_calls SET backup = (SELECT m.backup FROM tree_members m JOIN alerts a
            ON a.room_id = m.room_id WHERE a.id = alert_calls.alert_id
            AND m.person = alert_calls.person);
"""),
    # Through which network rooms each other bot's escalated need reached this bot
    # (`remote_need_routes`; `closed_at`: its bot closed it there, or its pod left that room).
    # A need shown here closes only when no room linked to the pod still carries it, so a pod
    # that leaves one of two networks it shares with a pod here is still reached by the other.
    Migration("remote_need_routes", """
        CREATE TABLE remote_need_routes (
            origin_bot TEXT NOT NULL,
            escalation TEXT NOT NULL,
            network_room TEXT NOT NULL,
            received_at TEXT NOT NULL,
            closed_at TEXT,
            PRIMARY KEY (origin_bot, escalation, network_room)
        );
        INSERT INTO remote_need_routes (origin_bot, escalation, network_room, received_at,
                                        closed_at)
            SELECT origin_bot, escalation, network_room, MIN(received_at),
                   CASE WHEN SUM(status = 'open') > 0 THEN NULL ELSE MAX(closed_at) END
            FROM remote_needs GROUP BY origin_bot, escalation, network_room;
"""),
]
