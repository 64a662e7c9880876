"""Behaviour of bot.parsing: categories, typos, urgency, odd input, and the exact-round-trip rule."""

from __future__ import annotations

import os
import time
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.models import Category, ParsedPost, Urgency
from bot.parsing import (
    EMPTY_MESSAGE,
    MAX_TEXT_CHARS,
    MAX_WHAT_CHARS,
    ParseError,
    parse_category,
    parse_post,
    parse_post_ref,
)

EXAMPLES = int(os.environ.get("MAB_HYPOTHESIS_EXAMPLES", "500"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --------------------------------------------------------------------------------------------
# Categories

SYNONYMS = [
    # food
    ("groceries for a family of 4", Category.FOOD),
    ("grocery run", Category.FOOD),
    ("meals for the week", Category.FOOD),
    ("food bank parcel", Category.FOOD),
    ("bread and milk", Category.FOOD),
    ("fresh produce from the allotment", Category.FOOD),
    ("baby formula", Category.FOOD),
    ("cooking for an elderly neighbour", Category.FOOD),
    ("comida para mi familia", Category.FOOD),
    # transport
    ("ride to clinic tuesday", Category.TRANSPORT),
    ("a lift to the station", Category.TRANSPORT),
    ("can drive people on saturday", Category.TRANSPORT),
    ("van for a few hours", Category.TRANSPORT),
    ("car to the airport", Category.TRANSPORT),
    ("pickup from the depot", Category.TRANSPORT),
    ("drop-off at the hospital", Category.TRANSPORT),
    ("taxi fare", Category.TRANSPORT),
    # childcare
    ("babysitting friday night", Category.CHILDCARE),
    ("childcare for two", Category.CHILDCARE),
    ("nanny share", Category.CHILDCARE),
    ("school pickup on weds", Category.CHILDCARE),
    ("kids need minding", Category.CHILDCARE),
    ("after school club", Category.CHILDCARE),
    # housing
    ("rent is due", Category.HOUSING),
    ("eviction notice — need help ASAP", Category.HOUSING),
    ("housing advice", Category.HOUSING),
    ("shelter for tonight", Category.HOUSING),
    ("spare room for a month", Category.HOUSING),
    ("a bed for a few nights", Category.HOUSING),
    ("couch to sleep on", Category.HOUSING),
    ("moving boxes", Category.HOUSING),
    # medical
    ("medicine from the chemist", Category.MEDICAL),
    ("prescription collection", Category.MEDICAL),
    ("pharmacy run", Category.MEDICAL),
    ("doctor visit company", Category.MEDICAL),
    ("clinic appointment", Category.MEDICAL),
    ("meds", Category.MEDICAL),
    ("a nurse to check in", Category.MEDICAL),
    # tools
    ("drill for the weekend", Category.TOOLS),
    ("ladder to reach the gutter", Category.TOOLS),
    ("tools to borrow", Category.TOOLS),
    ("a saw", Category.TOOLS),
    ("pressure washer", Category.TOOLS),
    # skills
    ("tutoring in maths", Category.SKILLS),
    ("translation from Arabic", Category.SKILLS),
    ("repair my bike chain", Category.SKILLS),
    ("legal advice about my visa", Category.SKILLS),
    ("tax forms", Category.SKILLS),
    ("cv review", Category.SKILLS),
    # money
    ("cash for the meter", Category.MONEY),
    ("money for bills", Category.MONEY),
    ("funds for a deposit", Category.MONEY),
    ("utilities top-up", Category.MONEY),
    # no match
    ("a chat", Category.OTHER),
    ("zzzz qqqq", Category.OTHER),
]


@pytest.mark.parametrize(("text", "category"), SYNONYMS)
def test_synonyms_set_the_category(text: str, category: Category) -> None:
    assert parse_post(text).category is category


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("grocerys", Category.FOOD),
        ("  Grocerys  ", Category.FOOD),
        ("rdie to the station", Category.TRANSPORT),
        ("prescripton", Category.MEDICAL),
        ("evicton", Category.HOUSING),
        ("babysiting", Category.CHILDCARE),
        ("tranport", Category.TRANSPORT),
        ("presciption pickup", Category.MEDICAL),
    ],
)
def test_typos_are_tolerated(text: str, category: Category) -> None:
    assert parse_post(text).category is category


@pytest.mark.parametrize("text", ["cat", "bas", "cra", "fod", "meds2"])
def test_short_words_are_not_fuzzed(text: str) -> None:
    # "cat" is one letter from "car", "fod" from "food": 3-letter words match exactly or not at all.
    assert parse_post(text).category is Category.OTHER


def test_four_letter_words_allow_one_typo() -> None:
    assert parse_post("rnet").category is Category.HOUSING  # transposed "rent"
    assert parse_post("rdie").category is Category.TRANSPORT


def test_typo_distance_limits() -> None:
    # 4-7 letters: one edit; two edits is too many.
    assert parse_post("evictn").category is Category.HOUSING
    assert parse_post("evctn").category is Category.OTHER
    # 8+ letters: two edits allowed.
    assert parse_post("presciptin").category is Category.MEDICAL


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("back pain", Category.MEDICAL),  # "back" is one letter from "bank"
        ("life advice", Category.SKILLS),  # "life" is one letter from "lift"
        ("need help with rent", Category.HOUSING),  # "need" is not "feed"
        ("look after my cat", Category.OTHER),  # "look" is not "cook"
    ],
)
def test_common_words_are_not_mistaken_for_typos(text: str, category: Category) -> None:
    assert parse_post(text).category is category


def test_phrases_beat_their_single_words() -> None:
    assert parse_post("school pickup at 3").category is Category.CHILDCARE
    assert parse_post("pickup at 3").category is Category.TRANSPORT


def test_first_words_are_preferred_but_any_word_counts() -> None:
    assert parse_post("ride to the clinic").category is Category.TRANSPORT
    assert parse_post("clinic ride").category is Category.MEDICAL
    assert parse_post("could someone help, it's about my rent").category is Category.HOUSING


def test_other_words_do_not_hide_a_real_category() -> None:
    assert parse_post("misc: groceries").category is Category.FOOD


# --------------------------------------------------------------------------------------------
# Urgency


@pytest.mark.parametrize(
    ("text", "urgency"),
    [
        ("groceries for a family of 4, urgent", Urgency.TODAY),
        ("eviction notice — need help ASAP", Urgency.TODAY),
        ("ride today", Urgency.TODAY),
        ("a bed tonight", Urgency.TODAY),
        ("medical emergency", Urgency.TODAY),
        ("drill now please", Urgency.TODAY),
        ("immediately", Urgency.TODAY),
        ("meds right away", Urgency.TODAY),
        ("ride to clinic tuesday", Urgency.THIS_WEEK),
        ("cash this week", Urgency.THIS_WEEK),
        ("ladder soon", Urgency.THIS_WEEK),
        ("babysitting tomorrow", Urgency.THIS_WEEK),
        ("tax forms by friday", Urgency.THIS_WEEK),
        ("groceries", Urgency.WHENEVER),
        ("a drill, not urgent", Urgency.WHENEVER),
        ("no rush on the ladder", Urgency.WHENEVER),
        ("URGENT!!!", Urgency.TODAY),
        ("tomorrow, or today if possible", Urgency.TODAY),
    ],
)
def test_urgency(text: str, urgency: Urgency) -> None:
    assert parse_post(text).urgency is urgency


@pytest.mark.parametrize("text", ["urgnet groceries", "nowhere to go", "knowledge share", "asapx"])
def test_urgency_needs_whole_words_without_typos(text: str) -> None:
    assert parse_post(text).urgency is Urgency.WHENEVER


# --------------------------------------------------------------------------------------------
# Odd spacing and unicode


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("GROCERIES!!!", Category.FOOD),
        ("\u00a0groceries\u00a0please", Category.FOOD),  # NBSP
        ("ｇｒｏｃｅｒｉｅｓ", Category.FOOD),  # full-width
        ("gro\u200bceries", Category.OTHER),  # a zero-width space splits the word
        ("groc\u00aderies", Category.FOOD),  # soft hyphen is invisible
        ("\u202egroceries", Category.FOOD),  # bidi override
        ("🍞🍞", Category.FOOD),
        ("🚗 to the station", Category.TRANSPORT),
        ("🎉🎉🎉", Category.OTHER),
        ("Médecin", Category.MEDICAL),
        ("medecin", Category.MEDICAL),
        ("«groceries»", Category.FOOD),
        ("(ride)", Category.TRANSPORT),
        ("groceries\n\nand a ride", Category.FOOD),
        ("groceries\tplease", Category.FOOD),
    ],
)
def test_odd_input_still_matches(text: str, category: Category) -> None:
    assert parse_post(text).category is category


@pytest.mark.parametrize(
    "text",
    [
        "groceries for a family of 4, urgent",
        "  Grocerys  ",
        "\u00a0ride\u00a0",
        "eviction notice — need help ASAP",
        "line one\nline two",
        "tabs\tinside\tkept",
        "a  double  space",
        "emoji 🍞 and\u200dzwj",
        "nul\x00inside",
        "\u202eoverride",
    ],
)
def test_text_round_trips_exactly(text: str) -> None:
    assert parse_post(text).text == text.strip()


@pytest.mark.parametrize("text", ["", " ", "\n\t ", "\u00a0\u3000", "\u200b", "\u202e\u200b "])
def test_empty_input_is_a_friendly_error(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_post(text)
    assert str(err.value) == EMPTY_MESSAGE
    assert err.value.message == EMPTY_MESSAGE


def test_too_long_input_is_a_friendly_error() -> None:
    parse_post("a" * MAX_TEXT_CHARS)  # exactly at the limit is fine
    parse_post("  " + "a" * MAX_TEXT_CHARS + "  ")  # outer whitespace does not count
    with pytest.raises(ParseError) as err:
        parse_post("a" * (MAX_TEXT_CHARS + 1))
    assert "2,000" in err.value.message


def test_lone_surrogates_are_a_friendly_error() -> None:
    with pytest.raises(ParseError):
        parse_post("groceries \ud800")


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(ParseError, ValueError)


# --------------------------------------------------------------------------------------------
# `what`


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("groceries for a family of 4, urgent", "groceries for a family of 4"),
        ("eviction notice — need help ASAP", "eviction notice"),
        ("  Grocerys  ", "Grocerys"),
        ("GROCERIES!!!", "GROCERIES"),
        ("ride to clinic tuesday", "ride to clinic tuesday"),
        ("groceries\nfor two", "groceries"),
        ("!!! groceries", "!!! groceries"),
        ("🍞🍞", "🍞🍞"),
        ("\u202egroceries, today", "groceries"),
    ],
)
def test_what_is_the_first_phrase_as_typed(text: str, what: str) -> None:
    assert parse_post(text).what == what


def test_what_is_bounded() -> None:
    what = parse_post("word " * 100).what
    assert len(what) <= MAX_WHAT_CHARS
    assert what.endswith("\u2026")
    assert len(parse_post("x" * 500).what) <= MAX_WHAT_CHARS


# --------------------------------------------------------------------------------------------
# parse_category


@pytest.mark.parametrize(
    ("word", "category"),
    [
        ("food", Category.FOOD),
        ("FOOD", Category.FOOD),
        ("groceries", Category.FOOD),
        ("grocerys", Category.FOOD),
        ("transport", Category.TRANSPORT),
        ("rides", Category.TRANSPORT),
        ("childcare", Category.CHILDCARE),
        ("housing", Category.HOUSING),
        ("medical", Category.MEDICAL),
        ("medcal", Category.MEDICAL),
        ("tools", Category.TOOLS),
        ("skills", Category.SKILLS),
        ("money", Category.MONEY),
        ("other", Category.OTHER),
        ("misc", Category.OTHER),
        ("food bank", Category.FOOD),
        (" #food ", Category.FOOD),
        ("", None),
        ("   ", None),
        ("zzzz", None),
        ("cat", None),
        ("x" * 10_000, None),
    ],
)
def test_parse_category(word: str, category: Category | None) -> None:
    assert parse_category(word) is category


# --------------------------------------------------------------------------------------------
# parse_post_ref


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("#12", 12),
        ("12", 12),
        (" #12 ", 12),
        ("#1", 1),
        ("007", 7),
        ("１２", 12),  # full-width digits
        ("1000000000", 10**9),
        ("1000000001", None),
        ("99999999999999999999", None),
        ("#0", None),
        ("0", None),
        ("-3", None),
        ("#", None),
        ("", None),
        ("# 12", None),
        ("##12", None),
        ("12a", None),
        ("twelve", None),
        ("1 2", None),
        ("١٢", None),  # Arabic-Indic digits are not post numbers
        ("12" + " " * 100, None),
    ],
)
def test_parse_post_ref(text: str, number: int | None) -> None:
    assert parse_post_ref(text) == number


# --------------------------------------------------------------------------------------------
# Speed


def test_long_input_is_rejected_fast() -> None:
    big = "groceries " * 6554  # ~64 KiB
    start = time.perf_counter()
    for _ in range(10):
        with pytest.raises(ParseError):
            parse_post(big)
    assert (time.perf_counter() - start) / 10 < 0.05


def test_worst_case_accepted_input_is_fast() -> None:
    # Up to the limit, made of distinct long words that each need a typo search.
    words = [f"{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}qzxwvkjyplm" for i in range(200)]
    text = " ".join(words)[:MAX_TEXT_CHARS]
    start = time.perf_counter()
    result = parse_post(text)
    assert time.perf_counter() - start < 0.25  # generous for slow CI; typically ~10 ms
    assert result.category is Category.OTHER


# --------------------------------------------------------------------------------------------
# Properties

any_text = st.text(alphabet=st.characters(codec=None), max_size=300)
_TRICKY_PIECES = [
    *"ab groceries ride, urgent!#12\n\t",
    *["\x00", "\u00a0", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\u00ad"],
    *["🍞", "ｇ", "é", "e\u0301", "\u3000", "ß", "İ", "\U0001f468\u200d\U0001f469", "\ud800"],
    *["rdie", "grocerys", " not urgent ", "school pickup", "-", "'", "..."],
]
tricky_text = st.lists(st.sampled_from(_TRICKY_PIECES), max_size=80).map("".join)


@PROPERTY
@given(st.one_of(any_text, tricky_text))
def test_parse_post_only_raises_parse_error_and_round_trips(text: str) -> None:
    try:
        result = parse_post(text)
    except ParseError as err:
        assert err.message
        return
    assert isinstance(result, ParsedPost)
    assert result.text == text.strip()
    assert result.what
    assert len(result.what) <= MAX_WHAT_CHARS
    assert isinstance(result.category, Category)
    assert isinstance(result.urgency, Urgency)


def _visible(ch: str) -> bool:
    # Letters, marks, numbers, punctuation, symbols, and private-use glyphs (custom emoji).
    cat = unicodedata.category(ch)
    return cat[0] not in "CZ" or cat == "Co"


@PROPERTY
@given(st.text(max_size=MAX_TEXT_CHARS))
def test_text_with_anything_visible_always_parses(text: str) -> None:
    if any(_visible(ch) for ch in text):
        assert parse_post(text).text == text.strip()
    else:
        with pytest.raises(ParseError):
            parse_post(text)


@PROPERTY
@given(st.text(max_size=3000))
def test_length_limit_applies_to_stripped_text(text: str) -> None:
    try:
        parse_post(text)
    except ParseError:
        return
    assert len(text.strip()) <= MAX_TEXT_CHARS


@PROPERTY
@given(st.one_of(st.text(max_size=100), st.from_regex(r"\s*#?[0-9]{1,12}\s*", fullmatch=True)))
def test_parse_post_ref_never_raises(text: str) -> None:
    number = parse_post_ref(text)
    assert number is None or 1 <= number <= 10**9


@PROPERTY
@given(st.integers(min_value=1, max_value=10**9), st.booleans())
def test_parse_post_ref_reads_numbers(number: int, hashed: bool) -> None:
    assert parse_post_ref(("#" if hashed else "") + str(number)) == number


@PROPERTY
@given(any_text)
def test_parse_category_never_raises(text: str) -> None:
    result = parse_category(text)
    assert result is None or isinstance(result, Category)
