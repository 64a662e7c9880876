"""Needs and offers."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import NamedTuple

from bot.models import Category, ParsedPost, Post, PostKind, PostStatus, Urgency
from bot.store.base import Area, now_text, parse_time, placeholders

_KINDS = {k.value: k for k in PostKind}
_CATEGORIES = {c.value: c for c in Category}
_URGENCIES = {int(u): u for u in Urgency}
_STATUSES = {s.value: s for s in PostStatus}


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
    )


class RenewablePost(NamedTuple):
    post: Post
    clock_started: datetime  # creation, or the last !renew


class PostsArea(Area):
    async def create(
        self, room_id: str, kind: PostKind, author: str, parsed: ParsedPost, now: datetime,
        *, private: bool = False, anonymous: bool = False, details_shown: bool = False,
        event_id: str | None = None, zone: str | None = None, pod: tuple[str, ...] = (),
    ) -> Post:
        """`pod`: every room of the post's pod; numbers are then unique across all of them, so
        `!claim 7` means one post wherever in the pod it is typed."""
        rooms = (room_id, *pod)
        # Only placeholders are formatted into the SQL.
        next_number = (
            "INSERT INTO room_counters (room_id, last_number) VALUES (?, (SELECT "  # noqa: S608
            "COALESCE(MAX(last_number), 0) + 1 FROM room_counters "
            f"WHERE room_id IN ({placeholders(rooms)}))) "
            "ON CONFLICT (room_id) DO UPDATE SET last_number = excluded.last_number "
            "RETURNING last_number")
        row = await self._tx.fetchone(next_number, (room_id, *rooms))
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "INSERT INTO posts (room_id, number, kind, author, category, urgency, text, status, "
            "created_at, updated_at, private, anonymous, details_shown, event_id, zone) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (room_id, row[0], kind.value, author, parsed.category.value, int(parsed.urgency),
             parsed.text, PostStatus.OPEN.value, stamp, stamp, int(private), int(anonymous),
             int(details_shown), event_id, zone),
        )
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
        return [post_from_row(r) for r in rows]

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
        return post_from_row(row)

    async def unclaim(self, post: Post, now: datetime) -> Post:
        row = await self._tx.fetchone(
            "UPDATE posts SET status = ?, claimed_by = NULL, claimed_at = NULL, updated_at = ? "
            "WHERE id = ? "
            "RETURNING *",
            (PostStatus.OPEN.value, now_text(now), post.id),
        )
        return post_from_row(row)

    async def claimed_by(self, user_id: str) -> list[Post]:
        rows = await self._tx.fetchall(
            "SELECT * FROM posts WHERE claimed_by = ? AND status = ?",
            (user_id, PostStatus.CLAIMED.value),
        )
        return [post_from_row(r) for r in rows]

    async def with_renewal(self, statuses: tuple[PostStatus, ...] = (PostStatus.OPEN,),
                           ) -> list[RenewablePost]:
        """Posts with the moment their expiry clock started (creation or last renewal)."""
        rows = await self._tx.fetchall(
            f"SELECT * FROM posts WHERE status IN ({placeholders(statuses)}) "  # noqa: S608
            "ORDER BY id",
            [s.value for s in statuses],
        )
        return [RenewablePost(post_from_row(r), parse_time(r["renewed_at"] or r["created_at"]))
                for r in rows]

    async def renew(self, post: Post, now: datetime) -> Post:
        stamp = now_text(now)
        row = await self._tx.fetchone(
            "UPDATE posts SET renewed_at = ?, updated_at = ?, "
            "status = CASE WHEN status = 'expired' THEN 'open' ELSE status END WHERE id = ? "
            "RETURNING *",
            (stamp, stamp, post.id),
        )
        return post_from_row(row)
