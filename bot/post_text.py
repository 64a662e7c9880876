"""Needs and offers as listings show them. Pure: no I/O, no clock."""

from __future__ import annotations

from bot.formatting import Rendered, render, shorten
from bot.models import Post, PostStatus

# The separators are in the templates, not the values: a value with a leading space cannot use
# the renderer's cached-template path and costs a python-markdown run (0.5-1 ms a line; a
# 25-line listing held the loop 5-12 ms).
_LINE = "**#{number}** {kind} · {category} · {text} ({who}{status})"
_URGENT_LINE = "**#{number}** {kind} · {category} · {urgency} · {text} ({who}{status})"


def post_line(post: Post) -> Rendered:
    """One line of a listing. People are named as text, not mentioned: listings ping nobody."""
    who = "someone" if post.anonymous or not post.author else post.author
    text = post.text if not post.private or post.details_shown else "(details private)"
    values: dict[str, object] = dict(
        number=post.number, kind=post.kind.value, category=post.category.value,
        text=shorten(text), who=who,
        status="" if post.status is PostStatus.OPEN else ", " + post.status.value,
    )
    if not post.urgency:
        return render(_LINE, **values)
    return render(_URGENT_LINE, urgency=post.urgency.label, **values)
