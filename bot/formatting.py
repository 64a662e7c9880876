"""Turning bot replies into a Matrix-ready plain body, HTML and mention list.

Replies are written as markdown templates by the bot's own code. Anything a person typed is passed
in as a value and escaped, so it can never become HTML, a link, a mention pill or an `@room` ping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

import markdown as markdown_lib

# Word joiner: keeps "@room" readable but stops clients from treating it as a room-wide ping.
_WORD_JOINER = "\u2060"
_ROOM_PING = re.compile(r"@(room)\b", re.IGNORECASE)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
# Bidi overrides and other invisible controls could disguise what a reply says; drop them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _markdown() -> markdown_lib.Markdown:
    md = markdown_lib.Markdown(extensions=["sane_lists"], output_format="html")
    # Raw HTML in a template value must be shown as text, never rendered.
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.inlinePatterns.deregister("automail")
    md.inlinePatterns.deregister("autolink")
    return md


_MD = _markdown()


def clean(text: str) -> str:
    """Typed text as it may appear in a reply: controls removed, @room disarmed."""
    return _ROOM_PING.sub("@" + _WORD_JOINER + r"\1", _CONTROL.sub("", text))


def escape_md(text: str) -> str:
    escaped = _MD_SPECIAL.sub(r"\\\1", clean(text))
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "  \n")


@dataclass(frozen=True)
class Mention:
    """A deliberate mention of a person: a pill in HTML and an entry in m.mentions."""

    user_id: str


@dataclass(frozen=True)
class Code:
    """Text shown as inline code, e.g. a command to copy."""

    text: str

    def markdown(self) -> str:
        # Inside a code span markdown is inert and HTML is escaped by the renderer; only a
        # backtick could end the span early.
        return "`" + clean(self.text).replace("`", "'").replace("\n", " ") + "`"


@dataclass(frozen=True)
class Rendered:
    body: str
    html: str
    mentions: tuple[str, ...] = field(default=())


def _md_value(value: object) -> str:
    if isinstance(value, Mention):
        link = "https://matrix.to/#/" + quote(value.user_id, safe="@:")
        return f"[{escape_md(value.user_id)}]({link})"
    if isinstance(value, Code):
        return value.markdown()
    return escape_md(str(value))


def _plain_value(value: object) -> str:
    if isinstance(value, Mention):
        return value.user_id
    if isinstance(value, Code):
        return value.markdown()
    return clean(str(value))


def render(template: str, **values: object) -> Rendered:
    """Fill a markdown template; values are untrusted text or Mention objects."""
    mentions = tuple(dict.fromkeys(v.user_id for v in values.values() if isinstance(v, Mention)))
    md_source = template.format(**{k: _md_value(v) for k, v in values.items()})
    body = template.format(**{k: _plain_value(v) for k, v in values.items()})
    _MD.reset()
    html = _MD.convert(md_source)
    return Rendered(body=body, html=html, mentions=mentions)


def join(parts: list[Rendered], separator: str = "\n") -> Rendered:
    """Several rendered pieces as one message (for listings built line by line)."""
    html_sep = "<br>\n" if separator == "\n" else separator
    mentions = tuple(dict.fromkeys(m for p in parts for m in p.mentions))
    return Rendered(
        body=separator.join(p.body for p in parts),
        html=html_sep.join(_unwrap_paragraph(p.html) for p in parts),
        mentions=mentions,
    )


def _unwrap_paragraph(html: str) -> str:
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        return html[3:-4]
    return html


def shorten(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters, for listings."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
