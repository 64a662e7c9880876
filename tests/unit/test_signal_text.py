"""The bot's replies as Signal text: styles and mentions at the right UTF-16 ranges, no markdown."""

from __future__ import annotations

import html
import re

from hypothesis import given
from hypothesis import strategies as st

from bot.formatting import Code, Mention, join, render
from bot.signal_text import MENTION_PLACEHOLDER, person_id, to_signal, utf16_len, uuid_of
from bot.transport.signal import text_with_mentions

ALICE = "a11ce000-0000-4000-8000-00000000000a"
BOB = "b0b00000-0000-4000-8000-00000000000b"


def covered(text: str, start: int, length: int) -> str:
    units = text.encode("utf-16-le")
    return units[start * 2:(start + length) * 2].decode("utf-16-le")


def styled(message) -> list[tuple[str, str]]:
    signal = to_signal(message)
    return [(covered(signal.text, s, n), style) for s, n, style in signal.styles]


def test_bold_italic_and_code_become_styles_without_markdown_characters():
    message = render("**Added** shift *{title}*: reply {cmd}", title="Food run",
                     cmd=Code("!signup S1"))
    signal = to_signal(message)
    assert signal.text == "Added shift Food run: reply !signup S1"
    assert styled(message) == [("Added", "BOLD"), ("Food run", "ITALIC"),
                               ("!signup S1", "MONOSPACE")]


def test_ranges_count_utf16_units_after_emoji_and_accents():
    message = render("🥕 {who} · **#{n}** {cmd}", who="Zoë 👩‍👧", n=7, cmd=Code("!claim 7"))
    signal = to_signal(message)
    assert styled(message) == [("#7", "BOLD"), ("!claim 7", "MONOSPACE")]
    start = signal.styles[0][0]
    assert start == utf16_len("🥕 Zoë 👩‍👧 · ") and start > len("🥕 Zoë 👩‍👧 · ")


def test_mentions_of_signal_people_become_mentions_and_others_stay_text():
    message = render("Match for {a}: {b} offers, and {m} too", a=Mention(person_id(ALICE)),
                     b=Mention(person_id(BOB)), m=Mention("@carol:matrix.example"))
    signal = to_signal(message)
    assert signal.text == (f"Match for {MENTION_PLACEHOLDER}: {MENTION_PLACEHOLDER} offers, "
                           "and @carol:matrix.example too")
    assert [(covered(signal.text, s, n), u) for s, n, u in signal.mentions] == [
        (MENTION_PLACEHOLDER, ALICE), (MENTION_PLACEHOLDER, BOB)]
    assert signal.mention_params()[0] == f"10:1:{ALICE}"


def test_a_signal_person_named_in_plain_text_is_a_mention_too():
    signal = to_signal(render("Noted: {person} didn't come", person=person_id(BOB)))
    assert signal.text == f"Noted: {MENTION_PLACEHOLDER} didn't come"
    assert signal.mentions == ((7, 1, BOB),)


def test_lists_paragraphs_and_line_breaks_read_as_plain_text():
    message = join([render("**Shifts**"), render("{a}", a="S1 Food"), render("{b}", b="S2 Van")])
    assert to_signal(message).text == "Shifts\nS1 Food\nS2 Van"
    listing = render("Matches:\n\n- one\n- two\n\n1. first\n2. second\n\nBye")
    assert to_signal(listing).text == "Matches:\n- one\n- two\n\n1. first\n2. second\n\nBye"


def test_typed_markup_and_html_in_values_stay_literal_text():
    signal = to_signal(render("Need: {what}", what="<b>bold</b> **not bold** & more"))
    assert signal.text == "Need: <b>bold</b> **not bold** & more"
    assert signal.styles == ()


def test_links_keep_their_address():
    signal = to_signal(render("See [the guide](https://example.org/guide)"))
    assert signal.text == "See the guide (https://example.org/guide)"


@given(st.text(min_size=1, max_size=40))
def test_every_range_lies_inside_the_text_for_any_value(value):
    message = render("**{v}** and {c} for {p}", v=value, c=Code(value), p=Mention(person_id(ALICE)))
    signal = to_signal(message)
    length = utf16_len(signal.text)
    for start, size, _ in (*signal.styles, *signal.mentions):
        assert 0 <= start and size > 0 and start + size <= length
    # No markup of its own: what is shown as `*` or a backtick is what HTML clients show too.
    shown = html.unescape(re.sub(r"<[^>]*>", "", message.html))
    assert (signal.text.count("*"), signal.text.count("`")) == (shown.count("*"), shown.count("`"))


def test_person_ids_round_trip_and_reject_others():
    assert uuid_of(person_id(ALICE.upper())) == ALICE
    assert uuid_of("@alice:example.org") is None and uuid_of("@signal:+15550100101") is None


def test_incoming_mentions_become_person_ids_at_utf16_offsets():
    text = f"!noshow 🥕{MENTION_PLACEHOLDER} S1"
    mentions = [{"uuid": BOB, "start": utf16_len("!noshow 🥕"), "length": 1, "number": "+15550100102"}]
    assert text_with_mentions(text, mentions) == f"!noshow 🥕{person_id(BOB)} S1"
    # Out-of-range or malformed mentions leave the text alone.
    assert text_with_mentions("hi", [{"uuid": BOB, "start": 9, "length": 1}, "x"]) == "hi"
