"""The bot's rendered replies as Signal message text: plain text plus style and mention ranges.

Replies are written as markdown and rendered to HTML once (bot/formatting.py). Signal has no HTML:
a message is plain text with ranges that are bold, italic, monospace, ... and ranges that are
mentions of a person. This module turns the rendered HTML into that shape, so a Signal user sees
bold where Matrix shows bold and never a raw `**`. Ranges count UTF-16 code units, as Signal does
(an emoji outside the Basic Multilingual Plane counts 2).

It also owns how a Signal person is named inside the bot: `@signal:<ACI uuid>`. That looks like a
Matrix id on purpose (commands such as `!noshow` take a person as `@name:server`) and never holds a
phone number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from bot.formatting import Rendered

PERSON_PREFIX = "@signal:"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
UUID_RE = re.compile(_UUID)
_PERSON_IN_TEXT = re.compile(re.escape(PERSON_PREFIX) + "(" + _UUID + ")")
_MATRIX_TO = "https://matrix.to/#/"
# What official Signal clients put in the text where a mention goes; the app shows the name.
MENTION_PLACEHOLDER = "\ufffc"

_STYLE_TAGS = {"strong": "BOLD", "b": "BOLD", "em": "ITALIC", "i": "ITALIC", "code": "MONOSPACE",
               "pre": "MONOSPACE", "del": "STRIKETHROUGH", "s": "STRIKETHROUGH",
               "h1": "BOLD", "h2": "BOLD", "h3": "BOLD", "h4": "BOLD", "h5": "BOLD", "h6": "BOLD"}
_BLOCK_TAGS = {"p", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}


def person_id(uuid: str) -> str:
    """The bot's id for the Signal person with this ACI."""
    return PERSON_PREFIX + uuid.lower()


def uuid_of(person: str) -> str | None:
    """The ACI of a bot id made by `person_id`, None for anyone else (e.g. a Matrix user)."""
    if person.startswith(PERSON_PREFIX) and UUID_RE.fullmatch(person[len(PERSON_PREFIX):]):
        return person[len(PERSON_PREFIX):]
    return None


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class SignalText:
    text: str
    # (start, length, STYLE) and (start, length, uuid), in UTF-16 code units.
    styles: tuple[tuple[int, int, str], ...] = ()
    mentions: tuple[tuple[int, int, str], ...] = ()

    def style_params(self) -> list[str]:
        return [f"{start}:{length}:{style}" for start, length, style in self.styles]

    def mention_params(self) -> list[str]:
        return [f"{start}:{length}:{uuid}" for start, length, uuid in self.mentions]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0  # UTF-16 units written so far
        self.styles: list[tuple[int, int, str]] = []
        self.mentions: list[tuple[int, int, str]] = []
        self.open_styles: list[tuple[str, str, int]] = []  # (tag, style, start)
        self.lists: list[list[int]] = []  # per open list: [next number], or [] if bulleted
        self.link: tuple[str, int] | None = None  # (href, characters before it) of an open <a>
        self.link_mention: str | None = None
        self.pending_space = False
        self.verbatim = 0  # inside <pre>: keep the text's own whitespace

    # ---- writing --------------------------------------------------------------------------

    def _at_line_start(self) -> bool:
        return not self.parts or self.parts[-1].endswith("\n")

    def _flush_space(self) -> None:
        """A space between words is written only once a word follows on the same line."""
        if self.pending_space and not self._at_line_start():
            self.parts.append(" ")
            self.length += 1
        self.pending_space = False

    def _write(self, text: str) -> None:
        if not text:
            return
        self._flush_space()
        self.parts.append(text)
        self.length += utf16_len(text)

    def _newlines(self, count: int) -> None:
        """End the line; with count 2 leave a blank line. Nothing at the very start."""
        self.pending_space = False
        if not self.parts:
            return
        tail = "".join(self.parts[-2:])
        have = len(tail) - len(tail.rstrip("\n"))
        if have < count:
            self.parts.append("\n" * (count - have))
            self.length += count - have

    def _text(self, data: str) -> None:
        if self.link_mention is not None:
            return  # a mention's text is the placeholder, written at <a>
        if self.verbatim:
            self._write(data)
            return
        pos = 0
        for match in _PERSON_IN_TEXT.finditer(data):
            self._words(data[pos:match.start()])
            self._mention(match.group(1))
            pos = match.end()
        self._words(data[pos:])

    def _words(self, data: str) -> None:
        words = data.split()
        if not words:
            if data:
                self.pending_space = True
            return
        if data[0].isspace():
            self.pending_space = True
        self._write(" ".join(words))
        if data[-1].isspace():
            self.pending_space = True

    def _mention(self, uuid: str) -> None:
        self._flush_space()
        self.mentions.append((self.length, 1, uuid.lower()))
        self.parts.append(MENTION_PLACEHOLDER)
        self.length += 1

    # ---- HTMLParser callbacks ---------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._newlines(2)
        if tag == "br":
            self._newlines(1)
        elif tag in ("ul", "ol"):
            self._newlines(1)
            self.lists.append([1] if tag == "ol" else [])
        elif tag == "li":
            self._newlines(1)
            numbering = self.lists[-1] if self.lists else []
            indent = "  " * max(0, len(self.lists) - 1)
            if numbering:
                self._write(f"{indent}{numbering[0]}. ")
                numbering[0] += 1
            else:
                self._write(f"{indent}- ")
        elif tag == "blockquote":
            self._write("> ")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            target = href[len(_MATRIX_TO):] if href.startswith(_MATRIX_TO) else ""
            uuid = uuid_of(target)
            if uuid is not None:
                self._mention(uuid)
                self.link_mention = uuid
            else:
                self.link = (href, len("".join(self.parts)))
        if tag == "pre":
            self.verbatim += 1
        style = _STYLE_TAGS.get(tag)
        if style is not None:
            self._flush_space()  # the space before a styled word is not styled
            self.open_styles.append((tag, style, self.length))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.open_styles) - 1, -1, -1):
            open_tag, style, start = self.open_styles[index]
            if open_tag == tag:
                del self.open_styles[index]
                if self.length > start:
                    self.styles.append((start, self.length - start, style))
                break
        if tag == "pre":
            self.verbatim = max(0, self.verbatim - 1)
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            if not self.lists:
                self._newlines(2)  # what follows a list starts a paragraph of its own
        if tag == "a":
            if self.link_mention is not None:
                self.link_mention = None
            elif self.link is not None:
                href, at = self.link
                self.link = None
                shown = "".join(self.parts)[at:].strip()
                if href and href != shown and not href.startswith(_MATRIX_TO):
                    self._write(f" ({href})")
        if tag in _BLOCK_TAGS:
            self.pending_space = False

    def handle_data(self, data: str) -> None:
        self._text(data)

    def result(self) -> SignalText:
        text = "".join(self.parts)
        stripped = text.rstrip()
        end = utf16_len(stripped)
        styles = tuple(sorted((s, min(n, end - s), st) for s, n, st in self.styles if s < end))
        return SignalText(stripped, styles, tuple(self.mentions))


def to_signal(message: Rendered) -> SignalText:
    """The message as Signal text: styles for bold/italic/code, mentions for people on Signal."""
    builder = _Builder()
    builder.feed(message.html)
    builder.close()
    return builder.result()
