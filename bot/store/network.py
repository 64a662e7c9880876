"""The network of pods: which network rooms a pod is linked to, its needs escalated there (and
the claims other pods sent back), and the needs other pods escalated (and the claims made on them
here). See bot/commands/network.py and docs/network.md."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime

from bot.models import Category, Post, Urgency
from bot.store.base import Area, now_text, parse_time, placeholders
from bot.store.posts import post_from_row

OPEN, CLOSED = "open", "closed"
# A claim: waiting for the requester, then accepted (the introduction goes on), declined or
# closed (the need was met elsewhere, or a pod left).
ASKED, ACCEPTED, DECLINED = "asked", "accepted", "declined"


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Link:
    pod_room: str
    network_room: str
    address: str  # as the coordinator gave it (an alias, or the room id)
    token: str  # how other bots tell this pod from another of the same bot


@dataclass(frozen=True, slots=True)
class Escalation:
    id: str
    post_id: int
    pod_room: str
    status: str
    sent_id: str | None = None  # reopened: the id of this round in the networks
    rounds: int = 1  # how many times the need went to the networks

    @property
    def network_id(self) -> str:
        """The id the networks know the need by (a new one each time it is reopened)."""
        return self.sent_id or self.id


@dataclass(frozen=True, slots=True)
class EscalationClaim:
    claim: str
    escalation: str
    bot: str  # the claiming pod's bot: the one that learns the answer, and later invites nobody
    intro_id: int | None
    status: str


@dataclass(frozen=True, slots=True)
class RemoteNeed:
    id: int  # shown as E<id>
    pod_room: str
    network_room: str
    origin_bot: str
    origin_pod: str
    escalation: str
    pod_name: str
    category: Category
    urgency: Urgency
    zone: str | None
    status: str


@dataclass(frozen=True, slots=True)
class RemoteClaim:
    claim: str
    remote_need: int
    helper: str
    status: str


def _link(row: sqlite3.Row) -> Link:
    return Link(row["pod_room"], row["network_room"], row["address"], row["token"])


def _escalation(row: sqlite3.Row) -> Escalation:
    return Escalation(row["id"], row["post_id"], row["pod_room"], row["status"],
                      row["sent_id"], row["rounds"])


def _claim(row: sqlite3.Row) -> EscalationClaim:
    return EscalationClaim(row["claim"], row["escalation"], row["bot"], row["intro_id"],
                           row["status"])


def _remote(row: sqlite3.Row) -> RemoteNeed:
    return RemoteNeed(row["id"], row["pod_room"], row["network_room"], row["origin_bot"],
                      row["origin_pod"], row["escalation"], row["pod_name"],
                      Category(row["category"]), Urgency(row["urgency"]), row["zone"],
                      row["status"])


def _remote_claim(row: sqlite3.Row) -> RemoteClaim:
    return RemoteClaim(row["claim"], row["remote_need"], row["helper"], row["status"])


class NetworkArea(Area):
    # ---- links ---------------------------------------------------------------------------

    async def link(self, pod_room: str, network_room: str, address: str, now: datetime) -> Link:
        await self._tx.execute(
            "INSERT OR IGNORE INTO network_links (pod_room, network_room, address, token, "
            "linked_at) VALUES (?, ?, ?, ?, ?)",
            (pod_room, network_room, address, new_token(), now_text(now)))
        found = await self._tx.fetch_by("network_links", _link, pod_room=pod_room,
                                        network_room=network_room)
        assert found is not None
        return found

    async def unlink(self, pod_room: str, network_room: str) -> None:
        await self._tx.execute(
            "DELETE FROM network_links WHERE pod_room = ? AND network_room = ?",
            (pod_room, network_room))

    async def links(self, pod_room: str) -> list[Link]:
        rows = await self._tx.fetchall(
            "SELECT * FROM network_links WHERE pod_room = ? ORDER BY linked_at, network_room",
            (pod_room,))
        return [_link(r) for r in rows]

    async def pods_in(self, network_room: str) -> list[Link]:
        rows = await self._tx.fetchall(
            "SELECT * FROM network_links WHERE network_room = ? ORDER BY pod_room",
            (network_room,))
        return [_link(r) for r in rows]

    # ---- other pods in the networks, as their bots announced them ---------------------------

    async def pod_state(self, network_room: str, bot: str, token: str) -> str | None:
        """OPEN: the pod is listed here; CLOSED: it announced it left (its token is never
        listed again); None: this bot never heard of it."""
        row = await self._tx.fetchone(
            "SELECT left_at FROM network_pods WHERE network_room = ? AND bot = ? AND token = ?",
            (network_room, bot, token))
        return None if row is None else OPEN if row["left_at"] is None else CLOSED

    async def note_pod(self, network_room: str, bot: str, token: str, name: str,
                       zones: tuple[str, ...], now: datetime) -> None:
        """Another bot's pod as it last announced itself in a network room (name and zones);
        nothing for a pod that left."""
        await self._tx.execute(
            "INSERT INTO network_pods (network_room, bot, token, name, zones, announced_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (network_room, bot, token) DO UPDATE SET "
            "name = excluded.name, zones = excluded.zones, announced_at = excluded.announced_at "
            "WHERE left_at IS NULL",
            (network_room, bot, token, name, json.dumps(list(zones)), now_text(now)))

    async def answered_since(self, network_room: str, bot: str, since: datetime) -> int:
        """How many of `bot`'s pods this bot answered in the room after `since`."""
        row = await self._tx.fetchone(
            "SELECT COUNT(*) AS n FROM network_pods WHERE network_room = ? AND bot = ? "
            "AND answered_at > ?", (network_room, bot, now_text(since)))
        return int(row["n"])

    async def pod_answered(self, network_room: str, bot: str, token: str,
                           now: datetime) -> bool:
        """Record that this bot answered the pod's announcement; False if it did before."""
        cursor = await self._tx.execute(
            "UPDATE network_pods SET answered_at = ? WHERE network_room = ? AND bot = ? "
            "AND token = ? AND answered_at IS NULL", (now_text(now), network_room, bot, token))
        return cursor.rowcount == 1

    async def pod_left(self, network_room: str, bot: str, token: str, now: datetime) -> bool:
        """The pod left the network: no longer listed. False if it was not listed (a replay)."""
        cursor = await self._tx.execute(
            "UPDATE network_pods SET left_at = ? WHERE network_room = ? AND bot = ? "
            "AND token = ? AND left_at IS NULL", (now_text(now), network_room, bot, token))
        return cursor.rowcount == 1

    async def forget_pods(self, network_room: str) -> None:
        """This bot has no pod left in the room: what it knew of the others there goes."""
        await self._tx.execute("DELETE FROM network_pods WHERE network_room = ?",
                               (network_room,))

    async def network_zones(self, pod_room: str) -> list[str]:
        """The zones other pods announced in the networks `pod_room` is linked to (pods that
        left not counted), sorted."""
        rows = await self._tx.fetchall(
            "SELECT zones FROM network_pods WHERE left_at IS NULL AND network_room IN "
            "(SELECT network_room FROM network_links WHERE pod_room = ?)", (pod_room,))
        return sorted({zone for row in rows for zone in json.loads(row["zones"])})

    # ---- this pod's needs, escalated -------------------------------------------------------

    async def unescalated_needs(self) -> list[Post]:
        """Open needs of linked pods that are not in their networks: not gone yet, or open again
        after their escalation closed (a failed introduction, a helper's !forgetme)."""
        rows = await self._tx.fetchall(
            "SELECT * FROM posts WHERE kind = 'need' AND status = 'open' "
            "AND room_id IN (SELECT pod_room FROM network_links) "
            "AND NOT EXISTS (SELECT 1 FROM escalations WHERE escalations.post_id = posts.id "
            "AND escalations.status = 'open') ORDER BY created_at, id")
        return [post_from_row(r) for r in rows]

    async def escalation_rounds(self, post_ids: list[int]) -> dict[int, int]:
        """Per post that went to the networks before, how many times it went."""
        rows = await self._tx.fetchall(
            f"SELECT post_id, rounds FROM escalations WHERE post_id IN "  # noqa: S608
            f"({placeholders(post_ids)})", post_ids) if post_ids else []
        return {r["post_id"]: r["rounds"] for r in rows}

    async def escalated_since(self, since: datetime) -> dict[str, list[datetime]]:
        """Per pod room, when its escalations after `since` were sent, first or again (for the
        hourly limit)."""
        rows = await self._tx.fetchall(
            "SELECT pod_room, created_at AS at FROM escalations WHERE created_at > ? "
            "UNION ALL SELECT pod_room, reopened_at AS at FROM escalations "
            "WHERE reopened_at > ?", (now_text(since), now_text(since)))
        found: dict[str, list[datetime]] = {}
        for row in rows:
            found.setdefault(row["pod_room"], []).append(parse_time(row["at"]))
        return found

    async def escalate(self, post: Post, now: datetime) -> Escalation | None:
        """The post's escalation, new, or reopened under a new id when it had closed (its need
        is open again); None if it is open already (never twice at once)."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO escalations (id, post_id, pod_room, status, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (new_token(), post.id, post.room_id, OPEN, now_text(now)))
        if cursor.rowcount != 1:
            cursor = await self._tx.execute(
                "UPDATE escalations SET status = ?, sent_id = ?, rounds = rounds + 1, "
                "reopened_at = ?, closed_at = NULL WHERE post_id = ? AND status = ?",
                (OPEN, new_token(), now_text(now), post.id, CLOSED))
            if cursor.rowcount != 1:
                return None
            # The claims of the last round are over (the introduction failed or was undone).
            await self._tx.execute(
                "UPDATE escalation_claims SET status = ? WHERE status IN (?, ?) AND escalation "
                "IN (SELECT id FROM escalations WHERE post_id = ?)",
                (DECLINED, ASKED, ACCEPTED, post.id))
        return await self._tx.fetch_by("escalations", _escalation, post_id=post.id)

    async def escalation(self, escalation_id: str) -> Escalation | None:
        return await self._tx.fetch_by("escalations", _escalation, id=escalation_id)

    async def escalation_sent_as(self, network_id: str) -> Escalation | None:
        """The escalation the networks know by `network_id` (its current round only)."""
        row = await self._tx.fetchone(
            "SELECT * FROM escalations WHERE COALESCE(sent_id, id) = ?", (network_id,))
        return _escalation(row) if row else None

    async def closable(self) -> list[Escalation]:
        """Open escalations whose need is no longer open (met, withdrawn, expired, erased), or
        open again after a claim from the networks was accepted (its introduction failed): that
        round is over, and the need goes again under a new id (`escalate`)."""
        # Read from the open escalations outwards: left to the planner, an empty or small
        # escalations table made it scan every post (20-30 ms at 150,000 posts, per wake-up).
        # The accepted claims are looked up once, not once per escalation (claims have no
        # index by escalation).
        rows = await self._tx.fetchall(
            "SELECT escalations.* FROM escalations INDEXED BY escalations_open "
            "CROSS JOIN posts ON posts.id = escalations.post_id "
            "WHERE escalations.status = 'open' AND (posts.status != 'open' OR escalations.id IN "
            "(SELECT escalation FROM escalation_claims WHERE status = 'accepted')) "
            "ORDER BY escalations.created_at")
        return [_escalation(r) for r in rows]

    async def open_escalations(self, pod_room: str) -> list[Escalation]:
        rows = await self._tx.fetchall(
            "SELECT * FROM escalations WHERE pod_room = ? AND status = 'open' ORDER BY created_at",
            (pod_room,))
        return [_escalation(r) for r in rows]

    async def close_escalation(self, escalation_id: str, now: datetime) -> bool:
        """True the first time only: what closing says is sent once."""
        cursor = await self._tx.execute(
            "UPDATE escalations SET status = ?, closed_at = ? WHERE id = ? AND status = ?",
            (CLOSED, now_text(now), escalation_id, OPEN))
        return cursor.rowcount == 1

    async def add_claim(self, claim: str, escalation: str, bot: str, now: datetime) -> bool:
        """False for a claim token seen before (a replay)."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO escalation_claims (claim, escalation, bot, status, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (claim, escalation, bot, ASKED, now_text(now)))
        return cursor.rowcount == 1

    async def claim(self, claim: str) -> EscalationClaim | None:
        return await self._tx.fetch_by("escalation_claims", _claim, claim=claim)

    async def set_claim(self, claim: str, status: str, intro_id: int | None = None) -> None:
        await self._tx.execute(
            "UPDATE escalation_claims SET status = ?, intro_id = COALESCE(?, intro_id) "
            "WHERE claim = ?", (status, intro_id, claim))

    async def accepted_claim(self, escalation: str) -> EscalationClaim | None:
        """The claim on an escalation whose requester said yes, if any."""
        return await self._tx.fetch_by("escalation_claims", _claim, escalation=escalation,
                                       status=ACCEPTED)

    async def claim_for_introduction(self, intro_id: int) -> EscalationClaim | None:
        return await self._tx.fetch_by("escalation_claims", _claim, intro_id=intro_id)

    # ---- other pods' needs, shown here ----------------------------------------------------

    async def add_remote_need(self, *, pod_room: str, network_room: str, origin_bot: str,
                              origin_pod: str, escalation: str, pod_name: str,
                              category: Category, urgency: Urgency, zone: str | None,
                              now: datetime) -> RemoteNeed | None:
        """The need as shown in `pod_room`, new; None if it was shown there before (a replay)."""
        row = await self._tx.fetchone(
            "INSERT OR IGNORE INTO remote_needs (pod_room, network_room, origin_bot, origin_pod, "
            "escalation, pod_name, category, urgency, zone, status, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (pod_room, network_room, origin_bot, origin_pod, escalation, pod_name,
             category.value, int(urgency), zone, OPEN, now_text(now)))
        return _remote(row) if row else None

    async def remote_need(self, need_id: int) -> RemoteNeed | None:
        return await self._tx.fetch_by("remote_needs", _remote, id=need_id)

    async def remote_needs_of(self, origin_bot: str, escalation: str) -> list[RemoteNeed]:
        rows = await self._tx.fetchall(
            "SELECT * FROM remote_needs WHERE origin_bot = ? AND escalation = ? ORDER BY id",
            (origin_bot, escalation))
        return [_remote(r) for r in rows]

    async def received_since(self, origin_bot: str, origin_pod: str,
                             since: datetime) -> list[datetime]:
        rows = await self._tx.fetchall(
            "SELECT DISTINCT escalation, received_at FROM remote_needs WHERE origin_bot = ? "
            "AND origin_pod = ? AND received_at > ?", (origin_bot, origin_pod, now_text(since)))
        return [parse_time(r["received_at"]) for r in rows]

    async def open_remote_needs(self, pod_room: str, network_room: str) -> list[RemoteNeed]:
        rows = await self._tx.fetchall(
            "SELECT * FROM remote_needs WHERE pod_room = ? AND network_room = ? AND status = ? "
            "ORDER BY id", (pod_room, network_room, OPEN))
        return [_remote(r) for r in rows]

    async def close_remote_need(self, need_id: int, now: datetime) -> bool:
        cursor = await self._tx.execute(
            "UPDATE remote_needs SET status = ?, closed_at = ? WHERE id = ? AND status = ?",
            (CLOSED, now_text(now), need_id, OPEN))
        return cursor.rowcount == 1

    async def add_route(self, origin_bot: str, escalation: str, network_room: str,
                        now: datetime) -> bool:
        """The need reached this bot through `network_room`; False if it did before there (a
        replay, or a room that has closed it)."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO remote_need_routes (origin_bot, escalation, network_room, "
            "received_at) VALUES (?, ?, ?, ?)", (origin_bot, escalation, network_room,
                                                 now_text(now)))
        return cursor.rowcount == 1

    async def close_route(self, origin_bot: str, escalation: str, network_room: str,
                          now: datetime) -> None:
        """The need's bot closed it in `network_room` (met, withdrawn, or its pod left there)."""
        await self._tx.execute(
            "UPDATE remote_need_routes SET closed_at = ? WHERE origin_bot = ? AND escalation = ? "
            "AND network_room = ? AND closed_at IS NULL",
            (now_text(now), origin_bot, escalation, network_room))

    async def open_route(self, need: RemoteNeed, besides: str | None = None) -> str | None:
        """A network room, linked to the need's pod here (but `besides`), that still carries the
        need: the one it first came through; None when no such room is left."""
        row = await self._tx.fetchone(
            "SELECT network_room FROM remote_need_routes WHERE origin_bot = ? AND escalation = ? "
            "AND closed_at IS NULL AND network_room IS NOT ? AND network_room IN "
            "(SELECT network_room FROM network_links WHERE pod_room = ?) "
            "ORDER BY received_at, network_room LIMIT 1",
            (need.origin_bot, need.escalation, besides, need.pod_room))
        return row["network_room"] if row else None

    async def reroute_remote_need(self, need_id: int, network_room: str) -> None:
        """The need is now reached (claims sent) through `network_room`."""
        await self._tx.execute("UPDATE remote_needs SET network_room = ? WHERE id = ?",
                               (network_room, need_id))

    async def add_remote_claim(self, remote_need: int, helper: str, now: datetime) -> RemoteClaim:
        row = await self._tx.fetchone(
            "INSERT INTO remote_claims (claim, remote_need, helper, status, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING *",
            (new_token(), remote_need, helper, ASKED, now_text(now)))
        return _remote_claim(row)

    async def remote_claim(self, claim: str) -> RemoteClaim | None:
        return await self._tx.fetch_by("remote_claims", _remote_claim, claim=claim)

    async def remote_claims_on(self, remote_need: int) -> list[RemoteClaim]:
        rows = await self._tx.fetchall(
            "SELECT * FROM remote_claims WHERE remote_need = ? ORDER BY created_at",
            (remote_need,))
        return [_remote_claim(r) for r in rows]

    async def set_remote_claim(self, claim: str, status: str) -> bool:
        """False when it was no longer waiting (answered before: a replay)."""
        cursor = await self._tx.execute(
            "UPDATE remote_claims SET status = ? WHERE claim = ? AND status = ?",
            (status, claim, ASKED))
        return cursor.rowcount == 1

    # ---- phone-tree alerts forwarded to the networks, and received from them -------------

    async def add_forward(self, pod_room: str, urgent: bool, now: datetime) -> str:
        """A new forward of this pod's alert: its token (the `id` other bots know it by)."""
        token = new_token()
        await self._tx.execute(
            "INSERT INTO alert_forwards (token, pod_room, urgent, created_at) VALUES (?, ?, ?, ?)",
            (token, pod_room, int(urgent), now_text(now)))
        return token

    async def forwarded_since(self, pod_room: str, since: datetime) -> list[datetime]:
        """When the pod forwarded its alerts after `since` (for the hourly limit)."""
        rows = await self._tx.fetchall(
            "SELECT created_at FROM alert_forwards WHERE pod_room = ? AND created_at > ?",
            (pod_room, now_text(since)))
        return [parse_time(r["created_at"]) for r in rows]

    async def add_remote_alert(self, *, origin_bot: str, token: str, pod_room: str,
                               network_room: str, origin_pod: str, pod_name: str,
                               now: datetime) -> bool:
        """Record an alert received for `pod_room`; False if it was received there before (a
        replay, a restart, or the same alert by a second network)."""
        cursor = await self._tx.execute(
            "INSERT OR IGNORE INTO remote_alerts (origin_bot, token, pod_room, network_room, "
            "origin_pod, pod_name, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (origin_bot, token, pod_room, network_room, origin_pod, pod_name, now_text(now)))
        return cursor.rowcount == 1

    async def alert_pods(self, origin_bot: str, token: str) -> set[str]:
        """The pods here that have received this alert."""
        rows = await self._tx.fetchall(
            "SELECT pod_room FROM remote_alerts WHERE origin_bot = ? AND token = ?",
            (origin_bot, token))
        return {r["pod_room"] for r in rows}

    async def alerts_received_since(self, origin_bot: str, origin_pod: str, but: str,
                                    since: datetime) -> list[datetime]:
        """When the other pod's alerts (but `but`, the one being read) first came after `since`:
        one time per alert, however many pods here it reached."""
        rows = await self._tx.fetchall(
            "SELECT MIN(received_at) AS at FROM remote_alerts WHERE origin_bot = ? "
            "AND origin_pod = ? AND token != ? AND received_at > ? GROUP BY token",
            (origin_bot, origin_pod, but, now_text(since)))
        return [parse_time(r["at"]) for r in rows]
