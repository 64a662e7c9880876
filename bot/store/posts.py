"""Needs and offers."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import NamedTuple

from bot.models import Category, ParsedPost, Post, PostKind, PostStatus, Urgency
from bot.store.base import Area, converted, now_text, parse_time, placeholders

_KINDS = {k.value: k for k in PostKind}
_CATEGORIES = {c.value: c for c in Category}
_URGENCIES = {int(u): u for u in Urgency}
_STATUSES = {s.value: s for s in PostStatus}
# When a post's expiry clock started: its creation or its last renewal (index `posts_expiry`).
_BASIS = "COALESCE(renewed_at, created_at)"


def post_from_row(row: sqlite3.Row) -> Post:
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
        created_at=parse_time(row["created_at"]),
        claimed_by=row["claimed_by"],
        private=bool(row["private"]),
        anonymous=bool(row["anonymous"]),
        details_shown=bool(row["details_shown"]),
        event_id=row["event_id"],
        zone=row["zone"],
        claimed_at=parse_time(row["claimed_at"]) if row["claimed_at"] else None,
        escalate_at=parse_time(row["escalate_at"]) if row["escalate_at"] else None,
    )


class RenewablePost(NamedTuple):
    post: Post
    clock_started: datetime  # creation, or the last !renew


def _renewable(row: sqlite3.Row) -> RenewablePost:
    return RenewablePost(post_from_row(row), parse_time(row["renewed_at"] or row["created_at"]))


class PostsArea(Area):
    async def create(
        self, room_id: str, kind: PostKind, author: str, parsed: ParsedPost, now: datetime,
        *, private: bool = False, anonymous: bool = False, details_shown: bool = False,
        event_id: str | None = None, zone: str | None = None, pod: tuple[str, ...] = (),
        escalate_at: datetime | None = None,
    ) -> Post:
        """`pod`: every room of the post's pod; numbers are then unique across all of them, so
        `!claim 7` means one post wherever in the pod it is typed. `escalate_at`: the latest a
        need waits before going to the pod's networks (`Post.escalate_at`)."""
        number = await self._next_number(room_id, pod)
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "INSERT INTO posts (room_id, number, kind, author, category, urgency, text, status, "
            "created_at, updated_at, private, anonymous, details_shown, event_id, zone, "
            "escalate_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (room_id, number, kind.value, author, parsed.category.value, int(parsed.urgency),
             parsed.text, PostStatus.OPEN.value, stamp, stamp, int(private), int(anonymous),
             int(details_shown), event_id, zone,
             now_text(escalate_at) if escalate_at is not None else None),
        )
        if kind is PostKind.NEED and await self._tx.fetchone(
                "SELECT 1 FROM network_links WHERE pod_room = ?", (room_id,)):
            self._tx.network_changed = True
        return post_from_row(row)

    async def _next_number(self, room_id: str, pod: tuple[str, ...]) -> int:
        rooms = (room_id, *pod)
        # Only placeholders are formatted into the SQL.
        next_number = (
            "INSERT INTO room_counters (room_id, last_number) VALUES (?, (SELECT "  # noqa: S608
            "COALESCE(MAX(last_number), 0) + 1 FROM room_counters "
            f"WHERE room_id IN ({placeholders(rooms)}))) "
            "ON CONFLICT (room_id) DO UPDATE SET last_number = excluded.last_number "
            "RETURNING last_number")
        row = await self._tx.fetchone(next_number, (room_id, *rooms))
        return row[0]

    async def move(self, post: Post, room_id: str, now: datetime,
                   pod: tuple[str, ...] = ()) -> Post:
        """The post, still open, in another room (a split pod's) under that room's next
        number; its id, and so its introductions and history, stay."""
        row = await self._tx.fetchone(
            "UPDATE posts SET room_id = ?, number = ?, updated_at = ? WHERE id = ? RETURNING *",
            (room_id, await self._next_number(room_id, pod), now_text(now), post.id))
        return post_from_row(row)

    async def by_id(self, post_id: int) -> Post:
        post = await self._tx.fetch_by("posts", post_from_row, id=post_id)
        if post is None:
            raise KeyError(post_id)
        return post

    async def by_number(self, room_id: str, number: int, *, pod: tuple[str, ...] = ()) -> Post | None:
        """The post with this number in the room, or else in another room of its pod."""
        rooms = (room_id, *pod)
        row = await self._tx.fetchone(
            f"SELECT * FROM posts WHERE room_id IN ({placeholders(rooms)}) AND number = ? "  # noqa: S608
            "ORDER BY room_id = ? DESC, id DESC LIMIT 1",
            (*rooms, number, room_id),
        )
        return post_from_row(row) if row else None

    async def by_event(self, room_id: str, event_id: str) -> Post | None:
        return await self._tx.fetch_by("posts", post_from_row, room_id=room_id, event_id=event_id)

    async def find_own(self, author: str, number: int) -> Post | None:
        """A person's post by number from anywhere (for use in a DM); the newest if several."""
        row = await self._tx.fetchone(
            "SELECT * FROM posts WHERE author = ? AND number = ? ORDER BY id DESC LIMIT 1",
            (author, number),
        )
        return post_from_row(row) if row else None

    async def list(
        self, room_id: str | None = None, *, kind: PostKind | None = None,
        category: Category | None = None, statuses: tuple[PostStatus, ...] = (PostStatus.OPEN,),
        author: str | None = None, limit: int = 50,
    ) -> list[Post]:
        clauses = [f"status IN ({placeholders(statuses)})"]
        params: list[object] = [s.value for s in statuses]
        for column, value in (("room_id", room_id), ("kind", kind), ("category", category),
                              ("author", author)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value.value if isinstance(value, PostKind | Category) else value)
        params.append(limit)
        rows = await self._tx.fetchall(
            f"SELECT * FROM posts WHERE {' AND '.join(clauses)} "  # noqa: S608 - columns are fixed
            "ORDER BY urgency DESC, created_at, id LIMIT ?",
            params,
        )
        return await converted(rows, post_from_row)

    async def match_candidates(self, post: Post, limit: int,
                               pod: tuple[str, ...] = ()) -> list[Post]:
        """Open posts of the opposite kind in the same room (or any room of its `pod`) and
        category, not by the same person, best first (the order of `matching.rank_key`)."""
        rooms = (post.room_id, *pod)
        rows = await self._tx.fetchall(
            f"SELECT * FROM posts WHERE room_id IN ({placeholders(rooms)}) AND kind = ? "  # noqa: S608
            "AND category = ? AND status = ? AND id != ? AND author IS NOT ? "
            "ORDER BY urgency DESC, created_at, id LIMIT ?",
            (*rooms, post.kind.opposite.value, post.category.value, PostStatus.OPEN.value,
             post.id, post.author, limit),
        )
        return [post_from_row(r) for r in rows]

    async def set_status(
        self, post: Post, status: PostStatus, now: datetime, *, claimed_by: str | None = None
    ) -> Post:
        row = await self._tx.fetchone(
            "UPDATE posts SET status = ?, claimed_by = COALESCE(?, claimed_by), updated_at = ?, "
            "claimed_at = CASE WHEN ? = 'claimed' THEN ? ELSE claimed_at END "
            "WHERE id = ? RETURNING *",
            (status.value, claimed_by, now_text(now), status.value, now_text(now), post.id),
        )
        if row is None:
            raise KeyError(post.id)
        if status is not PostStatus.OPEN and await self._tx.fetchone(
                "SELECT 1 FROM escalations WHERE post_id = ? AND status = 'open'", (post.id,)):
            self._tx.network_changed = True
        return post_from_row(row)

    async def unclaim(self, post: Post, now: datetime) -> Post:
        row = await self._tx.fetchone(
            "UPDATE posts SET status = ?, claimed_by = NULL, claimed_at = NULL, updated_at = ? "
            "WHERE id = ? "
            "RETURNING *",
            (PostStatus.OPEN.value, now_text(now), post.id),
        )
        if await self._tx.fetchone("SELECT 1 FROM escalations WHERE post_id = ?", (post.id,)):
            self._tx.network_changed = True  # open again: the networks may hear of it again
        return post_from_row(row)

    async def claimed_by(self, user_id: str) -> list[Post]:
        rows = await self._tx.fetchall(
            "SELECT * FROM posts WHERE claimed_by = ? AND status = ?",
            (user_id, PostStatus.CLAIMED.value),
        )
        return await converted(rows, post_from_row)

    # ---- expiry: the scheduler reads only the posts whose times have come ---------------------
    #
    # A post's expiry clock starts at its creation or last renewal (its "basis"); both the
    # warning and the expiry are fixed times after it. Every query here is a range of the
    # `posts_expiry` (or `posts_open_updated`) index, so what is read is what is due.

    async def open_by_basis(self, up_to: datetime, after: datetime | None = None,
                            ) -> list[RenewablePost]:
        """Open posts whose expiry clock started in (after, up_to], with that start."""
        # Two forms, so that the lower bound is a range of the index and not a filter.
        lower, params = ("", [now_text(up_to)]) if after is None else (
            f"AND {_BASIS} > ?", [now_text(up_to), now_text(after)])
        rows = await self._tx.fetchall(
            f"SELECT * FROM posts WHERE status = 'open' AND {_BASIS} <= ? {lower} "  # noqa: S608
            f"ORDER BY {_BASIS}, id", params,
        )
        return [_renewable(r) for r in rows]

    async def first_open_after_basis(self, after: datetime) -> RenewablePost | None:
        """The open post whose expiry clock started first after `after`."""
        row = await self._tx.fetchone(
            f"SELECT * FROM posts WHERE status = 'open' AND {_BASIS} > ? "  # noqa: S608
            f"ORDER BY {_BASIS}, id LIMIT 1", (now_text(after),),
        )
        return _renewable(row) if row else None

    async def open_changed_since(self, since: datetime, basis_up_to: datetime,
                                 ) -> list[RenewablePost]:
        """Open posts changed after `since` (opened again, say) whose clock started by
        `basis_up_to`."""
        # Few posts change between runs, but many have a clock that started long ago: the
        # planner is told which index bounds the read.
        rows = await self._tx.fetchall(
            "SELECT * FROM posts INDEXED BY posts_open_updated "  # noqa: S608 - fixed text
            f"WHERE status = 'open' AND updated_at > ? AND {_BASIS} <= ?",
            (now_text(since), now_text(basis_up_to)),
        )
        return [_renewable(r) for r in rows]

    async def open_counts(self, rooms: tuple[str, ...]) -> dict[PostKind, int]:
        """How many needs and offers are open in these rooms."""
        rows = await self._tx.fetchall(
            f"SELECT kind, count(*) AS n FROM posts WHERE room_id IN ({placeholders(rooms)}) "  # noqa: S608
            "AND status = 'open' GROUP BY kind", rooms)
        return {PostKind(r["kind"]): r["n"] for r in rows}

    async def rooms_with_open_needs(self) -> list[str]:
        """Rooms with at least one open need that is not private (an index probe per room and
        category: naming every category lets the probe reach `status` in `posts_open`, instead
        of stepping over each category's closed posts)."""
        rows = await self._tx.fetchall(
            "SELECT room_id FROM room_counters WHERE EXISTS (SELECT 1 FROM posts "  # noqa: S608
            "WHERE posts.room_id = room_counters.room_id AND kind = 'need' "
            f"AND category IN ({placeholders(_CATEGORIES)}) AND status = 'open' AND private = 0) "
            "ORDER BY room_id", tuple(_CATEGORIES))
        return [r["room_id"] for r in rows]

    async def renew(self, post: Post, now: datetime) -> Post:
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "UPDATE posts SET renewed_at = ?, updated_at = ?, "
            "status = CASE WHEN status = 'expired' THEN 'open' ELSE status END WHERE id = ? "
            "RETURNING *",
            (stamp, stamp, post.id),
        )
        return post_from_row(row)
