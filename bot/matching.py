"""Which open posts answer a new one. Pure: no I/O, no clock."""

from __future__ import annotations

from bot.models import Match, Post, PostStatus


def rank_key(post: Post) -> tuple[int, float, int]:
    """Most urgent first, then oldest, then lowest id (stable)."""
    return (-int(post.urgency), post.created_at.timestamp(), post.id)


def find_matches(new: Post, candidates: list[Post], limit: int,
                 pod: tuple[str, ...] = ()) -> list[Match]:
    """Open posts of the opposite kind, same category, in the same room or another room of its
    `pod` (possibly on another network), not by the same person."""
    rooms = {new.room_id, *pod}
    eligible = [
        other for other in candidates
        if other.kind is new.kind.opposite
        and other.room_id in rooms
        and other.category is new.category
        and other.status is PostStatus.OPEN
        and other.author != new.author
        and other.id != new.id
    ]
    return [Match(new=new, other=other) for other in sorted(eligible, key=rank_key)[:limit]]
