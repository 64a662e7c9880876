"""How long personal data is kept: pure rules, the clock is passed in.

Details and the people linked to a post (author, claimer) are erased `retention_days` after the
post was closed (done, cancelled or expired); what remains is the aggregate: category, room,
dates and status. Storage applies the cutoff (`Storage.erase_closed_posts`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.models import PostStatus

CLOSED = frozenset({PostStatus.DONE, PostStatus.CANCELLED, PostStatus.EXPIRED})

# How often the retention sweep should run (a scheduler job or the app's housekeeping loop).
SWEEP_INTERVAL = timedelta(hours=1)


def cutoff(now: datetime, retention_days: float) -> datetime:
    """Posts closed before this moment are due for erasure."""
    return now - timedelta(days=retention_days)


def is_due(status: PostStatus, closed_at: datetime, now: datetime, retention_days: float) -> bool:
    return status in CLOSED and closed_at < cutoff(now, retention_days)
