"""Needs and offers as listings show them. Pure: no I/O, no clock."""

from __future__ import annotations

from bot.formatting import Rendered, render, shorten
from bot.models import Post, PostStatus


def post_line(post: Post) -> Rendered:
    """One line of a listing. People are named as text, not mentioned: listings ping nobody."""
    who = "someone" if post.anonymous or not post.author else post.author
    text = post.text if not post.private or post.details_shown else "(details private)"
    return render(
        "**#{number}** {kind} · {category}{urgency} · {text} ({who}{status})",
        number=post.number, kind=post.kind.value, category=post.category.value,
        urgency=" · " + post.urgency.label if post.urgency else "",
        text=shorten(text), who=who,
        status="" if post.status is PostStatus.OPEN else ", " + post.status.value,
    )
