"""Turning bot replies into a Matrix-ready plain body, HTML and mention list.

Replies are written as markdown templates by the bot's own code. Anything a person typed is passed
in as a value and escaped, so it can never become HTML, a link, a mention pill or an `@room` ping.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
import string
from dataclasses import dataclass
from urllib.parse import quote

import markdown as markdown_lib

from bot.messages import Rendered

# Word joiner: keeps "@room" readable but stops clients from treating it as a room-wide ping.
_WORD_JOINER = "\u2060"
_ROOM_PING = re.compile(r"@(room)\b", re.IGNORECASE)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
# Every form of line break becomes "\n" before anything else looks at the text: the markdown
# renderer treats "\r" (and the escaper did not) as a line break, so one left in place could end a
# code span or start a heading.
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Other C0 and C1 controls, bidi overrides and isolates could disguise what a reply says; drop them.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")
# Indentation at a line start could open a code block; "=" under a line makes it a heading and,
# unlike "-", markdown has no backslash escape for it.
_LINE_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)
# The longest value a reply shows (the longest a post's text may be). python-markdown's work grows
# faster than its input on escaped characters and line breaks, so the cut keeps every reply's
# rendering bounded whatever was typed.
MAX_VALUE_CHARS = 2000


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
    """Typed text as it may appear in a reply: the one normalisation every value goes through.

    At most MAX_VALUE_CHARS characters; line breaks of every kind become "\n" and tabs a space;
    other controls are removed; @room is disarmed.
    """
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS - 1] + "…"
    if text.isascii() and text.isprintable() and "@" not in text:
        return text  # most values (numbers, words, commands): nothing to remove
    text = _CONTROL.sub("", _LINE_BREAKS.sub("\n", text)).replace("\t", " ")
    return _ROOM_PING.sub("@" + _WORD_JOINER + r"\1", text)


def escape_md(text: str) -> str:
    escaped = _MD_SPECIAL.sub(r"\\\1", _LINE_INDENT.sub("", clean(text)))
    escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace("=", "&#61;")
    return escaped.replace("\n", "  \n")


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


def _matrix_to(user_id: str) -> str:
    return "https://matrix.to/#/" + quote(user_id, safe="@:")


def _md_value(value: object) -> str:
    if isinstance(value, Mention):
        return f"[{escape_md(value.user_id)}]({_matrix_to(value.user_id)})"
    if isinstance(value, Code):
        return value.markdown()
    return escape_md(str(value))


def _plain_value(value: object) -> str:
    if isinstance(value, Mention):
        return value.user_id
    if isinstance(value, Code):
        return value.markdown()
    return clean(str(value))


def _markdown_html(md_source: str) -> str:
    _MD.reset()
    return _MD.convert(md_source)


# ---- a fast path that gives python-markdown's output without running it per reply -----------
#
# A template is rendered by python-markdown once, with a plain placeholder word in each value's
# place (a "skeleton"), and cached. A reply then only substitutes each value's HTML into it. That
# is exact only for values whose markdown is inert text, a code span or a mention link that cannot
# interact with what surrounds it; anything else (newlines, tabs, backslashes, leading or trailing
# spaces, a value that could start a block at a line start, odd templates) goes through
# python-markdown as before.

_TOKEN = "MABSLOT{}Z"
_TOKEN_RE = re.compile(r"MABSLOT(\d+)Z")
_INERT_TEXT = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\\|~]*")
_PLAIN_USER_ID = re.compile(r"@[A-Za-z0-9._=/+:\-]+")
_TEMPLATE_UNSAFE = re.compile(r"[`<>&\\\[\]\t\r]|MABSLOT|(?:^|\n) {4}")
_SKELETONS: dict[tuple[str, tuple[tuple[str, str], ...]], str | None] = {}
_SKELETON_LIMIT = 2048


def _value_html(value: object) -> tuple[str, str] | None:
    """(kind, HTML) of a value whose markdown is inert; None if it needs python-markdown.

    Kinds: "e" empty, "p" text starting with a letter, "q" other text, "c" code, "m" mention.
    """
    if type(value) is int:  # post and shift numbers, counts: the most common values
        return "q", str(value)
    if isinstance(value, Mention):
        return _mention_html(value.user_id)
    if isinstance(value, Code):
        content = value.markdown()[1:-1]
        inner = content.strip()
        if not inner or not _INERT_TEXT.fullmatch(content):
            return None
        return "c", "<code>" + html_lib.escape(inner, quote=False) + "</code>"
    text = clean(str(value))
    if not text:
        return "e", ""
    if text != text.strip() or not _INERT_TEXT.fullmatch(text):
        return None
    return ("p" if text[0].isalpha() else "q"), html_lib.escape(text, quote=False)


@functools.lru_cache(maxsize=1024)  # the same few people are mentioned again and again
def _mention_html(user_id: str) -> tuple[str, str] | None:
    if not _PLAIN_USER_ID.fullmatch(user_id):
        return None
    return "m", f'<a href="{_matrix_to(user_id)}">{user_id}</a>'


def _skeleton(template: str, kinds: tuple[tuple[str, str], ...]) -> str | None:
    """python-markdown's HTML of the template with a placeholder per value; None if unsafe."""
    if _TEMPLATE_UNSAFE.search(template):
        return None
    names = dict(kinds)
    try:
        for _, field_name, spec, conversion in string.Formatter().parse(template):
            if field_name is not None and (field_name not in names or spec or conversion):
                return None
    except ValueError:
        return None
    tokens = {name: ("" if kind == "e" else _TOKEN.format(i))
              for i, (name, kind) in enumerate(kinds)}
    source = template.format(**tokens)
    for name, kind in kinds:
        token = tokens[name]
        if not token:
            continue
        for match in re.finditer(re.escape(token), source):
            before = source[match.start() - 1] if match.start() else "\n"
            after = source[match.end()] if match.end() < len(source) else "\n"
            if kind == "q" and re.search(r"(?:^|\n) *$", source[:match.start()]):
                return None  # could start a block (a list number, a setext underline)
            if kind in "cm" and (before in "Z!`\\[]" or after in "M`[]("):
                return None
    skeleton = _markdown_html(source)
    if "<code" in skeleton or "<pre" in skeleton:
        return None
    for token in tokens.values():
        if token and skeleton.count(token) != source.count(token):
            return None
    return skeleton


def _fast_html(template: str, values: dict[str, object]) -> str | None:
    parts = {}
    kinds = []
    for name, value in values.items():
        found = _value_html(value)
        if found is None:
            return None
        kinds.append((name, found[0]))
        parts[name] = found[1]
    key = (template, tuple(kinds))
    try:
        skeleton = _SKELETONS[key]
    except KeyError:
        skeleton = _skeleton(template, key[1])
        if len(_SKELETONS) >= _SKELETON_LIMIT:
            _SKELETONS.clear()
        _SKELETONS[key] = skeleton
    if skeleton is None:
        return None
    by_index = [parts[name] for name, _ in kinds]
    return _TOKEN_RE.sub(lambda m: by_index[int(m.group(1))], skeleton)


def render(template: str, **values: object) -> Rendered:
    """Fill a markdown template; values are untrusted text or Mention objects."""
    mentions = tuple(dict.fromkeys(v.user_id for v in values.values() if isinstance(v, Mention)))
    body = template.format(**{k: _plain_value(v) for k, v in values.items()})
    html = _fast_html(template, values)
    if html is None:
        html = _markdown_html(template.format(**{k: _md_value(v) for k, v in values.items()}))
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
