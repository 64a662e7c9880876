"""Whatever people type, every message the bot sends carries only the markup of its own templates.

A property over every registered command, in a pod room and in a direct chat: random text (biased
towards line breaks of every kind, markdown, HTML and links) is put after a command word, or after
the first words of one of the command's own examples so that the deeper templates are reached.
Every message the handler sends (reply, direct message, room notice) is parsed with an HTML parser:
its tags must be among those the bot's templates use, and the only attribute allowed is the
`href` of a mention link the bot built itself (matrix.to, for a person in `m.mentions`).

Each command gets `MAB_HYPOTHESIS_EXAMPLES // 200` examples (at least 20; 50 by default), which
keeps this file to well under a minute in CI.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.commands import build_registry
from bot.formatting import Code, Mention, render

from .test_hostile_input import ALICE, ROOM, Harness

REGISTRY = build_registry()

PER_COMMAND = max(20, int(os.environ.get("MAB_HYPOTHESIS_EXAMPLES", "10000")) // 200)
BOB = "@bob:test"
DM_ROOM = "!dm-alice:test"

# Every tag the bot's templates produce: paragraphs and line breaks, **bold**, `code`, mention
# links, and the "- " lists of match announcements. Anything else came from typed text.
TEMPLATE_TAGS = {"p", "br", "strong", "em", "code", "a", "ul", "li"}

# Line breaks of every kind, each followed by something that means markup at a line start or
# anywhere; then arguments the commands understand, so that their deeper templates are reached.
BREAKS = ["", "\r", "\r\r", "\r\n\r\n", "\n", "\n\n", "\u2028", "\u2029\u2029", "\x85\x85",
          "\x0b", "\x0c\x0c", "\t", "\n    ", "\r\r    "]
MARKUP = [
    "[pwn](https://ev.il/a)", "![img](https://ev.il/i.png)", "<img src=x onerror=alert(1)>",
    "<a href='https://ev.il'>x</a>", "<https://ev.il>", "https://ev.il/x", "a@ev.il", "===", "---",
    "# h", "> q", "1. i", "* i", "+ i", "`", "```", "~~~", "**b**", "_e_", "\\", "&lt;", "&#60;",
    "|a|b|", "[x]: https://ev.il/ref", "[x][x]", "@room", "@bob:test", "\x00", "\u202e",
]
WORDS = ["S1", "R1", "#1", "1", "2", "all", "next", "tomorrow", "2026-12-05", "saturday", "need 2",
         "title", "place", "when", "digest", "timezone", "food", "yes", "no"]
hostile_text = st.lists(
    st.tuples(st.sampled_from(BREAKS), st.sampled_from(MARKUP),
              st.one_of(st.sampled_from(WORDS), st.text(max_size=8))).map("".join),
    min_size=1, max_size=6).map(" ".join)


class MarkupCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]

    handle_startendtag = handle_starttag


def markup_of(html: str) -> MarkupCollector:
    parser = MarkupCollector()
    parser.feed(html)
    parser.close()
    return parser


def mention_href(user_id: str) -> str:
    return markup_of(render("{m}", m=Mention(user_id)).html).attrs[0][2] or ""


def assert_only_template_markup(html: str, mentions: tuple[str, ...]) -> None:
    found = markup_of(html)
    assert found.tags <= TEMPLATE_TAGS, (found.tags - TEMPLATE_TAGS, html)
    built = {mention_href(m) for m in mentions}
    for tag, name, value in found.attrs:
        assert (tag, name) == ("a", "href") and value in built, (tag, name, value, html)


def test_the_checker_catches_what_it_is_for():
    assert_only_template_markup(render("Hi {m}, see {c}", m=Mention(BOB), c=Code("!help")).html,
                                (BOB,))
    with pytest.raises(AssertionError):
        assert_only_template_markup('<p><a href="https://ev.il/a">x</a></p>', ())
    with pytest.raises(AssertionError):
        assert_only_template_markup("<h1>x</h1>", ())
    with pytest.raises(AssertionError):
        assert_only_template_markup('<p><img src="https://ev.il/i.png"></p>', ())


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A pod with a shift, a need, an offer and a stand-in request, alice a coordinator."""
    h = Harness(tmp_path_factory.mktemp("markup") / "bot.db")
    h.transport.rooms[ROOM] = [ALICE, BOB]
    h.transport.rooms[DM_ROOM] = [ALICE]
    h.transport.power_levels[ALICE] = 100
    for sender, text in [(ALICE, "!shift add Food run every saturday 10-13 need 3"),
                         (BOB, "!need groceries for 2"), (ALICE, "!offer soup for 4"),
                         (BOB, "!signup S1"), (BOB, "!standin S1")]:
        h.say(text, sender=sender)
    yield h
    h.close()


def example_prefixes(name: str) -> list[str]:
    """The command word alone, a typo of it, and each of its examples cut after each word."""
    cmd = REGISTRY.commands[name]
    prefixes = {name, name + "x"}
    for example in cmd.examples:
        words = example.split()
        prefixes.update(" ".join(words[:n]) for n in range(1, len(words) + 1))
    return sorted(prefixes)


@pytest.mark.parametrize("name", sorted(REGISTRY.commands))
def test_replies_carry_only_template_markup_whatever_is_typed(seeded, name):
    @settings(max_examples=PER_COMMAND, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(prefix=st.sampled_from(example_prefixes(name)), text=hostile_text,
           direct=st.booleans(), sender=st.sampled_from([ALICE, BOB]))
    def check(prefix, text, direct, sender):
        room = DM_ROOM if direct else ROOM
        _, sent = seeded.dispatch(f"!{prefix} {text}", sender=sender, room=room, direct=direct)
        for out in sent:
            assert_only_template_markup(out.message.html, out.message.mentions)

    check()
