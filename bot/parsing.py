"""Understanding what people type after `!need` / `!offer`, and small command arguments.

Pure functions. The only I/O is reading the shipped synonym table (bot/data/categories.toml) once.

Matching works on a normalised copy of the text (NFKC, case-folded, accents folded, punctuation
stripped at word edges); the text that is stored is never altered beyond trimming outer whitespace.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from bot.models import Category, ParsedPost, Urgency

MAX_TEXT_CHARS = 2000
MAX_WHAT_CHARS = 60
MAX_POST_REF = 10**9

EMPTY_MESSAGE = "Tell me what you need or offer, e.g. `!need groceries for 2`"
UNREADABLE_MESSAGE = (
    "Some characters in that message couldn't be read. Please retype it and send it again."
)


class ParseError(ValueError):
    """Input we can't use; `message` is friendly text to show the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------
# Normalisation and tokens

# Characters kept inside a word but stripped from its edges ("drop-off", "aujourd'hui", "a.s.a.p").
_JOINERS = "-'._"
# Typographic variants folded to the plain joiner before tokenising.
_FOLD = str.maketrans(
    {
        "\u2019": "'",  # right single quote
        "\u2018": "'",
        "\u02bc": "'",  # modifier letter apostrophe
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u00ad": None,  # soft hyphen
    }
)
# Invisible characters that separate words when present (zero-width space and friends).
_ZERO_WIDTH_SPACES = frozenset("\u200b\u2060\ufeff")


@lru_cache(maxsize=8192)
def _char_class(ch: str) -> int:
    """0: separator, 1: word character, 2: joiner, 3: ignore (invisible), 4: a word by itself."""
    if ch in _JOINERS:
        return 2
    if ch in _ZERO_WIDTH_SPACES:
        return 0
    cat = unicodedata.category(ch)
    if cat[0] in "LNM":
        return 1
    if cat == "Cf":
        return 3
    if cat == "So":  # emoji and pictographs: each one is a word ("🍞" can mean food)
        return 4
    return 0


def _fold(text: str) -> str:
    """Case-folded, compatibility-normalised, accent-free copy of text for matching only."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    decomposed = unicodedata.normalize("NFD", folded)
    no_marks = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return unicodedata.normalize("NFC", no_marks)


def _tokens(text: str) -> list[str]:
    """Words of text, normalised, with punctuation stripped at their edges."""
    out: list[str] = []
    buf: list[str] = []
    for ch in _fold(text):
        kind = _char_class(ch)
        if kind == 3:
            continue
        if kind == 0 or kind == 4:
            if buf:
                out.append("".join(buf))
                buf = []
            if kind == 4:
                out.append(ch)
            continue
        buf.append(ch)
    if buf:
        out.append("".join(buf))
    words = (t.strip(_JOINERS) for t in out)
    return [w for w in words if w]


# ---------------------------------------------------------------------------------------------
# The synonym table


def _fuzz_limit(length: int) -> int:
    """How many typos a word of this length may have: none up to 3 letters, 1 up to 7, else 2."""
    if length <= 3:
        return 0
    if length <= 7:
        return 1
    return 2


def _deletions(word: str, depth: int) -> set[str]:
    """word with up to `depth` characters deleted (including word itself)."""
    found = {word}
    frontier = {word}
    for _ in range(depth):
        nxt: set[str] = set()
        for w in frontier:
            for i in range(len(w)):
                nxt.add(w[:i] + w[i + 1 :])
        nxt -= found
        found |= nxt
        frontier = nxt
    return found


def _osa_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, or limit + 1 if it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        row_min = i
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            best = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, prev2[j - 2] + 1)
            cur[j] = best
            row_min = min(row_min, best)
        if row_min > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= limit else limit + 1


Phrase = tuple[str, ...]


@dataclass(frozen=True)
class _Table:
    words: dict[str, Category]  # single normalised word -> category
    phrases: dict[str, list[tuple[Phrase, Category]]]  # first word -> phrases, longest first
    deletions: dict[str, frozenset[str]]  # deletion variant -> vocabulary words it came from
    longest_word: int
    urgency_phrases: dict[str, list[tuple[Phrase, Urgency | None]]]  # None: "not urgent" etc.
    never_fuzz: frozenset[str]


_URGENCY_LEVELS: dict[str, Urgency | None] = {
    "today": Urgency.TODAY,
    "this_week": Urgency.THIS_WEEK,
    "whenever": None,
}


def _add_phrase(
    index: dict[str, list[tuple[Phrase, object]]], phrase: Phrase, value: object
) -> None:
    entries = index.setdefault(phrase[0], [])
    if all(p != phrase for p, _ in entries):
        entries.append((phrase, value))
        entries.sort(key=lambda e: -len(e[0]))


def prepare() -> None:
    """Build the vocabulary now (100-300 ms): at start-up, not on the loop at the first post."""
    _table()


@cache
def _table() -> _Table:
    raw = tomllib.loads(
        resources.files("bot").joinpath("data/categories.toml").read_text(encoding="utf-8")
    )
    words: dict[str, Category] = {}
    phrases: dict[str, list[tuple[Phrase, Category]]] = {}
    for cat in Category:
        entries = [cat.value, *raw.get("categories", {}).get(cat.value, [])]
        for entry in entries:
            toks = tuple(_tokens(entry))
            if not toks:
                continue
            if len(toks) == 1:
                words.setdefault(toks[0], cat)
            else:
                _add_phrase(phrases, toks, cat)  # type: ignore[arg-type]

    deletions: dict[str, set[str]] = {}
    for word in words:
        for variant in _deletions(word, _fuzz_limit(len(word))):
            deletions.setdefault(variant, set()).add(word)

    urgency_phrases: dict[str, list[tuple[Phrase, Urgency | None]]] = {}
    urgency_words: set[str] = set()
    for key, level in _URGENCY_LEVELS.items():
        for entry in raw.get("urgency", {}).get(key, []):
            toks = tuple(_tokens(entry))
            if toks:
                _add_phrase(urgency_phrases, toks, level)  # type: ignore[arg-type]
                urgency_words.update(toks)

    fuzzy = raw.get("fuzzy", {})
    never = {t for key in ("never", "common") for e in fuzzy.get(key, []) for t in _tokens(e)}
    return _Table(
        words=words,
        phrases=phrases,
        deletions={k: frozenset(v) for k, v in deletions.items()},
        longest_word=max((len(w) for w in words), default=0),
        urgency_phrases=urgency_phrases,
        never_fuzz=frozenset(never | urgency_words),
    )


@lru_cache(maxsize=4096)
def _fuzzy_category(token: str) -> Category | None:
    """The category of the vocabulary word within typo distance of token, if exactly one fits."""
    table = _table()
    limit = _fuzz_limit(len(token))
    if (
        limit == 0
        or token in table.never_fuzz
        or len(token) > table.longest_word + 2
        or not token.isalpha()
    ):
        return None
    candidates: set[str] = set()
    for variant in _deletions(token, limit):
        candidates.update(table.deletions.get(variant, ()))
    best = limit + 1
    cats: set[Category] = set()
    for word in candidates:
        allowed = _fuzz_limit(min(len(word), len(token)))
        if allowed == 0:
            continue
        dist = _osa_distance(token, word, allowed)
        if dist > allowed:
            continue
        if dist < best:
            best, cats = dist, {table.words[word]}
        elif dist == best:
            cats.add(table.words[word])
    return cats.pop() if len(cats) == 1 else None


def _category_at(tokens: list[str], i: int) -> Category | None:
    """Category named by the phrase or word starting at tokens[i]: phrases, then words, then typos."""
    table = _table()
    tok = tokens[i]
    for phrase, cat in table.phrases.get(tok, ()):
        if tuple(tokens[i : i + len(phrase)]) == phrase:
            return cat
    exact = table.words.get(tok)
    if exact is not None:
        return exact
    return _fuzzy_category(tok)


def _category_of(tokens: list[str]) -> Category:
    # Earlier words win: "ride to the clinic" is transport, "prescription pickup" is medical.
    # OTHER's own words ("misc") never stop the search for a real category.
    for i in range(len(tokens)):
        cat = _category_at(tokens, i)
        if cat is not None and cat is not Category.OTHER:
            return cat
    return Category.OTHER


def _urgency_of(tokens: list[str]) -> Urgency:
    table = _table()
    found = Urgency.WHENEVER
    i = 0
    while i < len(tokens):
        step = 1
        for phrase, level in table.urgency_phrases.get(tokens[i], ()):
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                step = len(phrase)
                if level is not None and level > found:
                    found = level
                break
        i += step
    return found


# ---------------------------------------------------------------------------------------------
# `what`: the first phrase as typed, for display

# Where the first phrase ends: clause punctuation, a spaced dash, a line break.
_CLAUSE_END = re.compile(r"[,;:\n\r()\[\]]|[.!?]+(?=\s|$)|\s[-\u2013\u2014]+\s|[\u2013\u2014]")
# Controls and bidi overrides never belong in a display label.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")


def _what_of(text: str) -> str:
    first = _CLAUSE_END.split(text, maxsplit=1)[0]
    label = " ".join(_UNSAFE.sub(" ", first).split())
    if not label:
        label = " ".join(_UNSAFE.sub(" ", text).split())
    if len(label) > MAX_WHAT_CHARS:
        cut = label[: MAX_WHAT_CHARS - 1]
        space = cut.rfind(" ")
        if space >= MAX_WHAT_CHARS // 2:
            cut = cut[:space]
        label = cut.rstrip() + "\u2026"
    return label


# ---------------------------------------------------------------------------------------------
# Public API


def parse_post(text: str) -> ParsedPost:
    """Category, urgency and a short label for the text after `!need` / `!offer`.

    Raises ParseError (and nothing else) for text that can't become a post.
    """
    if not isinstance(text, str):
        raise ParseError(EMPTY_MESSAGE)
    # Cheap length check before any heavy work: only outer whitespace could bring it under.
    if len(text) > MAX_TEXT_CHARS and len(text.strip()) > MAX_TEXT_CHARS:
        raise ParseError(_too_long(len(text.strip())))
    stripped = text.strip()
    if not stripped or not _tokens_or_visible(stripped):
        raise ParseError(EMPTY_MESSAGE)
    try:
        stripped.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(UNREADABLE_MESSAGE) from None
    tokens = _tokens(stripped)
    return ParsedPost(
        category=_category_of(tokens),
        urgency=_urgency_of(tokens),
        what=_what_of(stripped) or stripped[:MAX_WHAT_CHARS],
        text=stripped,
    )


def parse_category(word: str) -> Category | None:
    """A category from a filter argument (`!needs food`, `!offers grocerys`), or None."""
    if not isinstance(word, str) or len(word) > 100:
        return None
    tokens = _tokens(word)
    if not tokens:
        return None
    for i in range(len(tokens)):
        cat = _category_at(tokens, i)
        if cat is not None:
            return cat
    return None


_POST_REF = re.compile(r"#?([0-9]{1,10})")


def parse_post_ref(text: str) -> int | None:
    """A post number from "#12", "12" or " #12 "; None for anything else."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    match = _POST_REF.fullmatch(unicodedata.normalize("NFKC", text).strip())
    if match is None:
        return None
    number = int(match.group(1))
    return number if 1 <= number <= MAX_POST_REF else None


def _too_long(length: int) -> str:
    return (
        f"That's a bit long ({length:,} characters) - please keep it under "
        f"{MAX_TEXT_CHARS:,}. Put the key details first; the rest can go in a reply."
    )


def _tokens_or_visible(text: str) -> bool:
    """Whether text has anything visible (not only zero-width or control characters)."""
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] not in "CZ" or cat == "Co":
            return True
    return False
