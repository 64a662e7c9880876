"""Shift timing in plain words: `!shift add <title> <when> [at <place>] [need N]`.

Pure domain code. No I/O and no clock: every function that needs "now" takes it
as an argument, and it must be timezone-aware.

* `parse_when` reads the `<when>` part ("every other tuesday 18:00 for 2h") into a
  `ShiftWhen`: a local start time, a duration, an RFC 5545 RRULE (or None for a
  one-off), the local date of the first occurrence and an IANA time zone.
* `occurrences` / `occurrences_between` expand it. The rule is expanded on naive
  *local* wall-clock times and each one is then localised with zoneinfo, so a
  weekly Saturday 10:00 shift stays at 10:00 local across DST changes.
* `describe` is the echo the bot sends back, so the coordinator can check what
  was understood.
* `reminder_times` and `due` are the small pure pieces of reminder scheduling.

Recurrence phrases use a small grammar of our own; odd one-off date words
("5/12", "1st of january", "in 3 days") fall back to dateparser with a fixed
RELATIVE_BASE so results never depend on the wall clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulebase, rrulestr
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from bot.config import canonical_zone_name

__all__ = [
    "DEFAULT_DURATION",
    "EXAMPLES",
    "ShiftWhen",
    "WhenError",
    "describe",
    "due",
    "occurrences",
    "occurrences_between",
    "parse_when",
    "reminder_times",
    "split_shift_args",
]

DEFAULT_DURATION = timedelta(hours=2)
MAX_DURATION = timedelta(hours=24)
MAX_BETWEEN = 500  # occurrences_between never returns more than this
MAX_COUNT = 1000  # occurrences(count=...) upper bound
MAX_TEXT = 200  # longer `<when>` texts are refused outright
MAX_AHEAD_YEARS = 5  # one-off dates further ahead than this are refused

EXAMPLES: tuple[str, ...] = (
    "every saturday 10-13",
    "every other tuesday 18:00 for 2h",
    "first monday of the month 19:00",
    "weekdays 8:00-9:00",
    "saturday 10:00-13:00",
    "tomorrow 6pm",
    "2026-12-05 09:00-12:00",
)


class WhenError(ValueError):
    """The `<when>` text could not be read. The message always carries examples."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        examples = " · ".join(EXAMPLES)
        super().__init__(f"{reason}\nI can read things like: {examples}")


# --------------------------------------------------------------------------- model

_ALLOWED_FREQ = {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
_FORBIDDEN_PARTS = {"BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART"}


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"unknown time zone {tz!r}") from e


def _rule_parts(rule: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for chunk in rule.split(";"):
        if not chunk:
            continue
        key, sep, value = chunk.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"bad RRULE part {chunk!r}")
        parts[key.upper()] = value.upper()
    return parts


class ShiftWhen(BaseModel):
    """When a shift happens. Times are local to `tz`."""

    model_config = ConfigDict(frozen=True)

    start_local: time
    duration: timedelta = DEFAULT_DURATION
    rrule: str | None = None  # e.g. "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU"; None = one-off
    first_date: date  # DTSTART date, local
    tz: str  # IANA name
    # True when no end time / duration was typed and DEFAULT_DURATION was assumed;
    # only changes the echo.
    duration_assumed: bool = False

    @field_validator("start_local")
    @classmethod
    def _naive_time(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("start_local is a wall-clock time; leave tzinfo off (use tz)")
        return v.replace(second=0, microsecond=0)

    @field_validator("duration")
    @classmethod
    def _sane_duration(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0) or v > MAX_DURATION:
            raise ValueError("duration must be more than 0 and at most 24 hours")
        return v

    @field_validator("tz")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        _zone(v)
        return canonical_zone_name(v)

    @field_validator("rrule")
    @classmethod
    def _valid_rrule(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().upper()
        if v.startswith("RRULE:"):
            v = v[len("RRULE:") :]
        parts = _rule_parts(v)
        if parts.get("FREQ") not in _ALLOWED_FREQ:
            raise ValueError("FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY")
        if _FORBIDDEN_PARTS & parts.keys():
            raise ValueError("the start time lives in start_local; no BYHOUR/BYMINUTE/BYSECOND")
        try:
            rrulestr(v, dtstart=datetime(2000, 1, 1))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise ValueError(f"not a valid RRULE: {e}") from e
        return v

    @model_validator(mode="after")
    def _first_date_sane(self) -> ShiftWhen:
        if self.first_date.year >= 9999:
            raise ValueError("first_date too far ahead")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.tz)

    @property
    def end_local(self) -> time:
        return (datetime.combine(self.first_date, self.start_local) + self.duration).time()

    @property
    def crosses_midnight(self) -> bool:
        start = datetime.combine(self.first_date, self.start_local)
        next_midnight = datetime.combine(self.first_date + timedelta(days=1), time(0))
        return start + self.duration > next_midnight


# --------------------------------------------------------------------------- time helpers


def _require_aware(dt: datetime, name: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _localise(naive: datetime, zone: ZoneInfo) -> datetime:
    """Wall-clock time -> aware datetime in `zone`.

    Ambiguous (autumn fall-back) times take the first occurrence (fold=0).
    Nonexistent (spring-forward gap) times move forward by the gap, e.g.
    02:30 on the Berlin spring-forward night becomes 03:30 CEST.
    """
    aware = naive.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone)
    if back.replace(tzinfo=None) != naive:
        return back
    return aware


def _local_naive(dt: datetime, zone: ZoneInfo) -> datetime:
    return dt.astimezone(zone).replace(tzinfo=None)


# --------------------------------------------------------------------------- normalising

_WEEKDAYS: dict[str, int] = {}
for _i, _names in enumerate(
    [
        ("mon", "monday"),
        ("tue", "tues", "tuesday"),
        ("wed", "weds", "wednesday"),
        ("thu", "thur", "thurs", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
        ("sun", "sunday"),
    ]
):
    for _n in _names:
        _WEEKDAYS[_n] = _i
_WEEKDAY_PLURALS = {
    "mondays": 0,
    "tuesdays": 1,
    "wednesdays": 2,
    "thursdays": 3,
    "fridays": 4,
    "saturdays": 5,
    "sundays": 6,
}
_RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_ABBR = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip

_MONTHS: dict[str, int] = {}
for _i, _full in enumerate(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],  # fmt: skip
    start=1,
):
    _MONTHS[_full] = _i
    _MONTHS[_full[:3]] = _i
_MONTHS["sept"] = 9

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
_ORDINAL_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
_ORD_NAMES = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}

_SIMPLE = {
    "every": "EVERY",
    "each": "EVERY",
    "day": "DAY",
    "days": "DAYS",
    "daily": "DAILY",
    "week": "WEEK",
    "weeks": "WEEKS",
    "weekly": "WEEKLY",
    "fortnight": "FORTNIGHT",
    "fortnightly": "FORTNIGHTLY",
    "biweekly": "FORTNIGHTLY",
    "month": "MONTH",
    "months": "MONTHS",
    "monthly": "MONTHLY",
    "weekday": "WEEKDAY",
    "weekdays": "WEEKDAYS",
    "workday": "WEEKDAY",
    "workdays": "WEEKDAYS",
    "weekend": "WEEKEND",
    "weekends": "WEEKENDS",
    "other": "OTHER",
    "alternate": "OTHER",
    "today": "TODAY",
    "tonight": "TODAY",
    "tomorrow": "TOMORROW",
    "tmrw": "TOMORROW",
    "after": "AFTER",
    "this": "THIS",
    "next": "NEXT",
    "coming": "NEXT",
    "in": "IN",
}
_FILLERS = {"on", "the", "of", "at", "from", "and", "&", "+", "starting", "a"}
# words that make a phrase recurring; one-off fallbacks are never tried on these
_RECURRING_TOKENS = {
    "EVERY", "DAILY", "WEEKLY", "FORTNIGHTLY", "MONTHLY", "WEEKDAYS", "WEEKENDS", "MONTH",
}  # fmt: skip


def _normalise(text: str) -> str:
    t = text.lower()
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t)  # unicode dashes / minus
    t = re.sub(r"\b([ap])\.m\.?", r"\1m", t)  # a.m. -> am
    t = t.replace(",", " ").replace(";", " ")
    t = re.sub(r"\s+", " ", t).strip()
    t = t.rstrip(".!?").strip()
    return t


# --------------------------------------------------------------------------- time of day

_T = r"(?:\d{1,2}(?:[:.]\d{2})?(?:\s*(?:am|pm))?|noon|midday|midnight)"
_SEP = r"(?:\s*-\s*|\s+(?:to|until|till|til|through)\s+)"
_DUR = (
    r"(?:an?\s+hour(?:\s+and\s+a\s+half)?|half\s+an\s+hour"
    r"|\d+(?:\.\d+)?\s*(?:h|hrs?|hours?)(?:\s*(?:and\s+)?\d+\s*(?:m|mins?|minutes?)?)?"
    r"|\d+\s*(?:m|mins?|minutes?)"
    r"|\d{1,2}:\d{2}\s*(?:h|hrs?|hours?)?)"
)
_CLAUSE = (
    rf"(?:(?P<between>between)\s+(?P<bt1>{_T})\s+and\s+(?P<bt2>{_T})"
    rf"|(?:(?P<lead>at|from|starting at|starts at)\s+)?(?P<t1>{_T})"
    rf"(?:{_SEP}(?P<t2>{_T})|\s+for\s+(?P<dur>{_DUR}))?)"
)
_CLAUSE_END = re.compile(rf"(?:^|\s){_CLAUSE}$")
_CLAUSE_START = re.compile(rf"^{_CLAUSE}(?=\s)")
_TIME_TOKEN = re.compile(rf"^{_T}$")

_TIME_PARTS = re.compile(r"^(?P<h>\d{1,2})(?:[:.](?P<m>\d{2}))?\s*(?P<ap>am|pm)?$")


class _ClockTime:
    """A typed time of day, before am/pm inference."""

    def __init__(self, raw: str) -> None:
        raw = raw.strip()
        self.raw = raw
        self.named = raw in ("noon", "midday", "midnight")
        if self.named:
            self.hour, self.minute, self.meridiem = (0 if raw == "midnight" else 12), 0, None
            self.bare = False
            self.leading_zero = False
            return
        m = _TIME_PARTS.match(raw)
        if not m:
            raise WhenError(f"I couldn't read {raw!r} as a time of day.")
        self.hour = int(m.group("h"))
        self.minute = int(m.group("m") or 0)
        self.meridiem = m.group("ap")
        self.bare = m.group("m") is None and self.meridiem is None
        self.leading_zero = m.group("h").startswith("0") and len(m.group("h")) == 2
        if self.minute > 59:
            raise WhenError(f"{raw!r} isn't a time: minutes go up to 59.")
        if self.meridiem is not None and not 1 <= self.hour <= 12:
            raise WhenError(f"{raw!r} isn't a time: with am/pm the hour is 1 to 12.")
        if self.meridiem is None and self.hour > 24:
            raise WhenError(f"{raw!r} isn't a time: hours go up to 23.")

    def minutes(self, meridiem: str | None = None) -> int:
        """Minutes after midnight (24:00 -> 1440)."""
        ap = self.meridiem or meridiem
        h = self.hour
        if ap is not None and not self.named:
            h = h % 12 + (12 if ap == "pm" else 0)
        return h * 60 + self.minute


def _to_time(minutes: int) -> time:
    minutes %= 24 * 60
    return time(minutes // 60, minutes % 60)


def _parse_duration(raw: str) -> timedelta:
    s = re.sub(r"\s+", " ", raw.strip())
    if s in ("an hour", "a hour"):
        return timedelta(hours=1)
    if s.startswith("an hour and a half") or s.startswith("a hour and a half"):
        return timedelta(minutes=90)
    if s == "half an hour":
        return timedelta(minutes=30)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})\s*(?:h|hrs?|hours?)?", s)
    if m:
        return timedelta(hours=int(m.group(1)), minutes=int(m.group(2)))
    m = re.fullmatch(
        r"(\d+(?:\.\d+)?)\s*(?:h|hrs?|hours?)(?:\s*(?:and\s+)?(\d+)\s*(?:m|mins?|minutes?)?)?", s
    )
    if m:
        hours = float(m.group(1)[:8])
        if hours > 48:
            raise WhenError(f"{raw!r} is too long for one shift (24 hours at most).")
        return timedelta(hours=hours, minutes=int((m.group(2) or "0")[:6]))
    m = re.fullmatch(r"(\d+)\s*(?:m|mins?|minutes?)", s)
    if m:
        return timedelta(minutes=int(m.group(1)[:6]))
    raise WhenError(f"I couldn't read {raw!r} as a duration (try 'for 2h' or 'for 90 min').")


def _resolve_times(m: re.Match[str]) -> tuple[time, timedelta, bool]:
    """(start, duration, duration_assumed) from a clause match."""
    if m.group("between"):
        t1_raw, t2_raw, dur_raw, lead = m.group("bt1"), m.group("bt2"), None, None
    else:
        t1_raw, t2_raw, dur_raw, lead = (
            m.group("t1"),
            m.group("t2"),
            m.group("dur"),
            m.group("lead"),
        )
    t1 = _ClockTime(t1_raw)
    if t2_raw is None:
        if t1.bare and lead is None:
            raise WhenError(
                f"Is {t1_raw!r} a time? Write it as '{t1.hour}:00', '{t1.hour}am' or 'at {t1.hour}'."
            )
        if t1.meridiem is None and t1.hour == 24:
            raise WhenError("24:00 can only end a shift; start it at 0:00 instead.")
        start = t1.minutes()
        if dur_raw is None:
            return _to_time(start), DEFAULT_DURATION, True
        duration = _parse_duration(dur_raw)
        if duration <= timedelta(0) or duration > MAX_DURATION:
            raise WhenError("A shift has to last more than 0 minutes and at most 24 hours.")
        return _to_time(start), duration, False

    t2 = _ClockTime(t2_raw)
    if t1.meridiem is None and t1.hour == 24:
        raise WhenError("24:00 can only end a shift; start it at 0:00 instead.")
    end = t2.minutes()
    if t1.meridiem is None and t2.meridiem is not None and not t1.named and 1 <= t1.hour <= 12:
        # "6-9pm": the start borrows the end's am/pm if that keeps it before the end,
        # otherwise the other one ("11-1pm" is 11:00-13:00).
        same = t1.minutes(t2.meridiem)
        other = t1.minutes("am" if t2.meridiem == "pm" else "pm")
        start = same if same < end else (other if other < end else same)
    else:
        start = t1.minutes()
    if (
        end < start
        and t1.meridiem is None
        and t2.meridiem is None
        and not t1.named
        and not t2.named
        and 1 <= t1.hour <= 12
        and 1 <= t2.hour <= 11
        and not t2.leading_zero
        and end + 12 * 60 > start
    ):
        # "10-1", "9-5": a 12-hour clock without am/pm, the end is in the afternoon.
        end += 12 * 60
    if end == start or (end % (24 * 60)) == start % (24 * 60):
        raise WhenError(f"{t1_raw}-{t2_raw} ends when it starts.")
    if end < start:  # crosses midnight
        end += 24 * 60
    return _to_time(start), timedelta(minutes=end - start), False


def _split_time_clause(s: str) -> tuple[str, re.Match[str] | None]:
    m = _CLAUSE_END.search(s)
    if m:
        return s[: m.start()].strip(), m
    m = _CLAUSE_START.match(s)
    if m:
        return s[m.end() :].strip(), m
    return s, None


# --------------------------------------------------------------------------- day grammar


def _tokens(s: str) -> list[str]:
    """Canonical tokens for the day/recurrence part."""
    out: list[str] = []
    for word in re.split(r"[\s/]+", s):
        word = word.strip(".")
        if not word or word in _FILLERS:
            continue
        if word in _WEEKDAYS:
            out.append(f"D:{_WEEKDAYS[word]}")
        elif word in _WEEKDAY_PLURALS:
            out.append(f"DS:{_WEEKDAY_PLURALS[word]}")
        elif word in _SIMPLE:
            out.append(_SIMPLE[word])
        elif word in _MONTHS:
            out.append(f"MON:{_MONTHS[word]}")
        elif word in _ORDINAL_WORDS:
            out.append(f"ORD:{_ORDINAL_WORDS[word]}")
        elif word in _NUMBER_WORDS:
            out.append(f"NUM:{_NUMBER_WORDS[word]}")
        elif m := re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)", word):
            out.append(f"ORD:{int(m.group(1))}")
        elif re.fullmatch(r"\d{4}", word):
            out.append(f"YEAR:{word}")
        elif re.fullmatch(r"\d{1,3}", word):
            out.append(f"NUM:{int(word)}")
        elif m := re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", word):
            out.append(f"DATE:{m.group(1)}-{m.group(2)}-{m.group(3)}")
        else:
            out.append(f"?:{word}")
    return out


class _DaySpec:
    """What the day part says, before it is resolved against `now`."""

    def __init__(
        self,
        *,
        rule: str | None = None,
        on: date | None = None,
        weekday: int | None = None,
        skip_today: bool = False,
        relative_days: int | None = None,
        month_day: tuple[int, int, int | None] | None = None,
        check_weekday: int | None = None,
    ) -> None:
        self.rule = rule
        self.on = on
        self.weekday = weekday
        self.skip_today = skip_today
        self.relative_days = relative_days
        self.month_day = month_day
        self.check_weekday = check_weekday


def _num(tok: str) -> int:
    return int(tok.split(":", 1)[1])


def _byday(days: list[int]) -> str:
    seen: list[int] = []
    for d in days:
        if d not in seen:
            seen.append(d)
    return ",".join(_RRULE_DAYS[d] for d in sorted(seen))


def _interval_part(n: int) -> str:
    return "" if n == 1 else f";INTERVAL={n}"


_DAY_LIST = r"(?:DS?:\d(?: |$))+"


def _weekday_list(s: str) -> list[int]:
    return [int(x) for x in re.findall(r"DS?:(\d)", s)]


def _interval_from(tok: str | None, limit: int, what: str) -> int:
    if tok is None:
        return 1
    if tok in ("OTHER", "ORD:2"):
        return 2
    n = _num(tok)
    if not 1 <= n <= limit:
        raise WhenError(f"Every {n} {what} is more than I can schedule (up to {limit}).")
    return n


def _parse_day_part(part: str) -> _DaySpec:
    toks = _tokens(part)
    if not toks:
        raise WhenError("Which day? Add a day, e.g. 'every saturday' or 'tomorrow'.")
    unknown = [t[2:] for t in toks if t.startswith("?:")]
    s = " ".join(toks) + " "

    def full(pattern: str) -> re.Match[str] | None:
        return re.fullmatch(pattern, s)

    # ---- daily
    if full(r"(?:EVERY DAY |DAILY |EVERY DAILY )"):
        return _DaySpec(rule="FREQ=DAILY")
    if m := full(r"EVERY (OTHER|NUM:\d+|ORD:2) DAYS? "):
        return _DaySpec(rule="FREQ=DAILY" + _interval_part(_interval_from(m.group(1), 365, "days")))
    # ---- weekdays / weekends
    if full(r"(?:EVERY )?(?:WEEKDAYS?|WEEK DAY) "):
        return _DaySpec(rule="FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR")
    if full(r"(?:EVERY )?WEEKENDS? (?:DAY )?"):
        return _DaySpec(rule="FREQ=WEEKLY;BYDAY=SA,SU")
    # ---- weekly on named days
    if m := full(rf"EVERY (?:(OTHER|ORD:2|NUM:\d+) )?({_DAY_LIST})"):
        n = _interval_from(m.group(1), 52, "weeks")
        return _DaySpec(
            rule=f"FREQ=WEEKLY{_interval_part(n)};BYDAY={_byday(_weekday_list(m.group(2)))}"
        )
    week_marker = (
        r"(?:EVERY (?P<iv>OTHER|NUM:\d+|ORD:2) WEEKS? |EVERY WEEK |WEEKLY "
        r"|(?P<fn>FORTNIGHTLY |EVERY FORTNIGHT ))"
    )
    days_g = rf"(?P<days>{_DAY_LIST})"
    for pattern in (week_marker + days_g, days_g + week_marker):
        if m := full(pattern):
            n = 2 if m.group("fn") else _interval_from(m.group("iv"), 52, "weeks")
            byday = _byday(_weekday_list(m.group("days")))
            return _DaySpec(rule=f"FREQ=WEEKLY{_interval_part(n)};BYDAY={byday}")
    if full(r"(?:DS:\d )+"):  # "saturdays", "mondays thursdays"
        return _DaySpec(rule=f"FREQ=WEEKLY;BYDAY={_byday(_weekday_list(s))}")
    if full(r"(?:EVERY (?:OTHER |NUM:\d+ |ORD:2 )?WEEKS?|WEEKLY|FORTNIGHTLY|EVERY FORTNIGHT) "):
        raise WhenError("On which day of the week? e.g. 'every 2 weeks on thursday'.")
    # ---- monthly
    month_marker = r"(?:EVERY (?P<iv>OTHER|NUM:\d+) MONTHS? |EVERY MONTH |MONTHLY |MONTH |EVERY )"
    ords = r"(?P<ords>(?:ORD:-?\d+ )+)"
    day1 = r"(?P<day>DS?:\d )"
    for pattern in (
        rf"(?:EVERY )?{ords}{day1}{month_marker}",  # first monday of the month
        rf"{month_marker}{ords}{day1}",  # every month on the first monday
        rf"EVERY {ords}{day1}",  # every first monday
    ):
        if m := full(pattern):
            nth = [int(x) for x in re.findall(r"ORD:(-?\d+)", m.group("ords"))]
            if any(not (1 <= k <= 5 or k == -1) for k in nth):
                raise WhenError("Use first, second, third, fourth, fifth or last with a weekday.")
            wd = _RRULE_DAYS[_weekday_list(m.group("day"))[0]]
            byday = ",".join(f"{k}{wd}" for k in sorted(set(nth), key=lambda k: (k < 0, k)))
            n = _interval_from(m.groupdict().get("iv"), 12, "months")
            return _DaySpec(rule=f"FREQ=MONTHLY{_interval_part(n)};BYDAY={byday}")
    for pattern in (
        rf"(?:EVERY )?(?:ORD|NUM):(?P<k>-?\d+) (?:DAY )?{month_marker}",  # the 5th of every month
        rf"{month_marker}(?:DAY )?(?:ORD|NUM):(?P<k>-?\d+) ",  # every month on the 5th
    ):
        if m := full(pattern):
            k = int(m.group("k"))
            if not (1 <= k <= 31 or k == -1):
                raise WhenError(f"A month has no day {k}.")
            n = _interval_from(m.group("iv"), 12, "months")
            return _DaySpec(rule=f"FREQ=MONTHLY{_interval_part(n)};BYMONTHDAY={k}")
    if m := full(rf"(?:EVERY )?ORD:-1 DAY {month_marker}"):
        n = _interval_from(m.group("iv"), 12, "months")
        return _DaySpec(rule=f"FREQ=MONTHLY{_interval_part(n)};BYMONTHDAY=-1")

    # ---- one-offs
    if full(r"TODAY "):
        return _DaySpec(relative_days=0)
    if full(r"TOMORROW "):
        return _DaySpec(relative_days=1)
    if full(r"DAY AFTER TOMORROW "):
        return _DaySpec(relative_days=2)
    if m := full(r"IN (NUM:\d+) (DAYS?|WEEKS?) "):
        n = _num(m.group(1)) * (7 if m.group(2).startswith("WEEK") else 1)
        if n > 366:
            raise WhenError("That's too far ahead; give a date instead.")
        return _DaySpec(relative_days=n)
    if m := full(r"(THIS |NEXT )?D:(\d) "):
        return _DaySpec(weekday=int(m.group(2)), skip_today=m.group(1) == "NEXT ")
    if m := full(r"(?:D:(\d) )?DATE:(\d{4})-(\d{1,2})-(\d{1,2}) "):
        y, mo, d = int(m.group(2)), int(m.group(3)), int(m.group(4))
        try:
            on = date(y, mo, d)
        except ValueError as e:
            raise WhenError(f"{y}-{mo:02d}-{d:02d} isn't a date.") from e
        check = int(m.group(1)) if m.group(1) else None
        return _DaySpec(on=on, check_weekday=check)
    for pattern, order in (
        (r"(?:D:(\d) )?MON:(\d+) (?:NUM|ORD):(\d+) (?:YEAR:(\d{4}) )?", "md"),
        (r"(?:D:(\d) )?(?:NUM|ORD):(\d+) MON:(\d+) (?:YEAR:(\d{4}) )?", "dm"),
    ):
        if m := full(pattern):
            a, b = int(m.group(2)), int(m.group(3))
            month, day = (a, b) if order == "md" else (b, a)
            year = int(m.group(4)) if m.group(4) else None
            check = int(m.group(1)) if m.group(1) else None
            return _DaySpec(month_day=(month, day, year), check_weekday=check)

    if unknown:
        raise WhenError(f"I don't know the word {unknown[0]!r} in {part!r}.")
    if any(t in _RECURRING_TOKENS or t.startswith("DS:") for t in toks):
        raise WhenError(f"I couldn't read {part!r} as a repeating day.")
    raise WhenError(f"I couldn't read {part!r} as a day.")


# dateparser is the fallback for date words outside the grammar; only phrases that
# look like a date are handed to it (it happily reads "a" as the 1st of the month).
_DATEISH = re.compile(
    r"^(?:\d{1,2}[./]\d{1,2}(?:[./]\d{2,4})?"
    r"|(?:[a-z]+ )?\d{1,2}(?:st|nd|rd|th)? (?:of )?[a-z]+(?: \d{4})?"
    r"|[a-z]+ \d{1,2}(?:st|nd|rd|th)?(?: \d{4})?)$"
)


def _dateparser_date(part: str, today: date, tz: str) -> date | None:
    if len(part) > 40 or not _DATEISH.match(part):
        return None
    if not any(w in _MONTHS for w in re.findall(r"[a-z]+", part)) and not re.search(
        r"\d[./]\d", part
    ):
        return None
    try:
        from dateparser.date import DateDataParser

        order = "MDY" if tz.startswith(("America/", "US/")) else "DMY"
        parser = DateDataParser(
            languages=["en"],
            settings={
                "RELATIVE_BASE": datetime.combine(today, time(12, 0)),
                "PREFER_DATES_FROM": "future",
                "DATE_ORDER": order,
                "RETURN_AS_TIMEZONE_AWARE": False,
                "REQUIRE_PARTS": ["day", "month"],
            },
        )
        data = parser.get_date_data(part)
    except Exception:  # dateparser can raise on odd input; treat as unreadable
        return None
    if data is None or data.date_obj is None or data.period != "day":
        return None
    return data.date_obj.date()


# --------------------------------------------------------------------------- parse_when


def _first_after(rule: str, start: time, today: date, now: datetime, zone: ZoneInfo) -> date | None:
    """Date of the first occurrence of `rule` (ignoring INTERVAL) strictly after now."""
    parts = _rule_parts(rule)
    parts.pop("INTERVAL", None)
    plain = ";".join(f"{k}={v}" for k, v in parts.items())
    r = rrulestr(plain, dtstart=datetime.combine(today, start))
    assert isinstance(r, rrulebase)
    for i, naive in enumerate(r):
        if _localise(naive, zone) > now:
            return naive.date()
        if i > 400:
            break
    return None


def parse_when(text: str, now: datetime, tz: str) -> ShiftWhen:
    """Read `<when>` words into a ShiftWhen.

    `now` must be timezone-aware; `tz` is the pod's IANA time zone. Recurring
    shifts start at their first occurrence strictly after `now`. One-offs in the
    past are refused. Without an end time or duration, 2 hours is assumed
    (`duration_assumed=True`, and the echo says so).

    Raises WhenError (a ValueError) with examples for anything it can't read.
    """
    return _parse_when(text, now, tz, check_range=True)


def _parse_when(text: str, now: datetime, tz: str, *, check_range: bool) -> ShiftWhen:
    _require_aware(now, "now")
    zone = _zone(tz)
    if not isinstance(text, str):
        raise WhenError("Say when the shift is.")
    if len(text) > MAX_TEXT:
        raise WhenError("That's too long to be a time; keep it short.")
    s = _normalise(text)
    if not s:
        raise WhenError("Say when the shift is.")

    day_part, clause = _split_time_clause(s)
    if clause is None:
        raise WhenError("What time? Add a start time, e.g. '10:00', '6pm' or '10-13'.")
    start, duration, assumed = _resolve_times(clause)
    day_part = re.sub(r"^(?:on|at|from)\s+|\s+(?:at|from|on)$", "", day_part).strip()

    local_now = now.astimezone(zone)
    today = local_now.date()

    try:
        spec = _parse_day_part(day_part)
    except WhenError:
        fallback = _dateparser_date(day_part, today, tz) if day_part else None
        if fallback is None:
            raise
        spec = _DaySpec(on=fallback)

    def build(rule: str | None, first: date) -> ShiftWhen:
        try:
            return ShiftWhen(
                start_local=start,
                duration=duration,
                rrule=rule,
                first_date=first,
                tz=tz,
                duration_assumed=assumed,
            )
        except ValidationError as e:
            raise WhenError("I can't schedule that.") from e

    if spec.rule is not None:
        first = _first_after(spec.rule, start, today, now, zone)
        if first is None:
            raise WhenError(f"{day_part!r} never happens.")
        return build(spec.rule, first)

    if spec.relative_days is not None:
        on = today + timedelta(days=spec.relative_days)
    elif spec.weekday is not None:
        ahead = (spec.weekday - today.weekday()) % 7
        on = today + timedelta(days=ahead)
        if spec.skip_today and ahead == 0:
            on += timedelta(days=7)
        elif ahead == 0 and _localise(datetime.combine(on, start), zone) <= now:
            on += timedelta(days=7)  # "saturday 10:00" said on Saturday at noon
    elif spec.month_day is not None:
        month, day, year = spec.month_day
        if not 1 <= month <= 12:
            raise WhenError(f"There's no month {month}.")
        on = None
        for y in (
            [year]
            if year
            else [today.year, today.year + 1, today.year + 2, today.year + 3, today.year + 4]
        ):
            try:
                candidate = date(y, month, day)
            except ValueError:
                continue
            if year or _localise(datetime.combine(candidate, start), zone) > now:
                on = candidate
                break
        if on is None:
            raise WhenError(f"{_MONTH_ABBR[month - 1]} {day} isn't a date.")
    else:
        assert spec.on is not None
        on = spec.on

    if spec.check_weekday is not None and on.weekday() != spec.check_weekday:
        raise WhenError(
            f"{_fmt_date(on, with_year=True)} is a {_DAY_NAMES[on.weekday()]}, "
            f"not a {_DAY_NAMES[spec.check_weekday]}."
        )
    if not check_range:
        pass
    elif on.year > today.year + MAX_AHEAD_YEARS:
        raise WhenError("That's too far ahead.")
    elif _localise(datetime.combine(on, start), zone) <= now:
        raise WhenError(f"{_fmt_date(on, with_year=True)} {start:%H:%M} has already passed.")
    return build(None, on)


# --------------------------------------------------------------------------- split_shift_args

_NEED = re.compile(
    r"(?:^|\s)needs?\s+(\d{1,4})(?:\s+(?:people|persons|volunteers|helpers|hands))?(?=\s|$)",
    re.IGNORECASE,
)
_QUOTED = re.compile(
    r'^\s*(["\u201c\u201d\u2018\u2019\'])(?P<title>.*?)(["\u201c\u201d\u2018\u2019\'])(?:\s+|$)'
)
_STARTERS = (
    set(_WEEKDAYS)
    | set(_WEEKDAY_PLURALS)
    | set(_MONTHS)
    | set(_ORDINAL_WORDS)
    | {
        "every", "each", "daily", "weekly", "fortnightly", "biweekly", "monthly",
        "weekdays", "weekday", "weekends", "weekend", "workdays", "today", "tonight",
        "tomorrow", "tmrw", "next", "this", "coming", "on", "in", "between",
        "1st", "2nd", "3rd", "4th", "5th",
    }
)  # fmt: skip
_PROBE_NOW = datetime(2000, 1, 1, 0, 0, tzinfo=UTC)


def _starts_when(word: str) -> bool:
    w = word.lower().strip(".,")
    if w in _STARTERS:
        return True
    if re.fullmatch(
        r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}(?:st|nd|rd|th)|\d{1,2}[./]\d{1,2}(?:[./]\d{2,4})?", w
    ):
        return True
    return bool(_TIME_TOKEN.match(w)) and bool(re.search(r"[:.]|am|pm", w))


def _split_place(words: list[str]) -> tuple[list[str], str | None]:
    """Cut `at <place>` off the end of the when words ('at 10am' is a time)."""
    for k, w in enumerate(words):
        if w.lower() != "at" and not w.startswith("@"):
            continue
        if w.startswith("@") and len(w) > 1:
            place = " ".join([w[1:], *words[k + 1 :]]).strip()
            return words[:k], place or None
        nxt = " ".join(words[k + 1 : k + 3]).lower()
        if k + 1 < len(words) and (
            _TIME_TOKEN.match(words[k + 1].lower()) or re.match(rf"^{_CLAUSE}(?:\s|$)", nxt)
        ):
            continue
        place = " ".join(words[k + 1 :]).strip()
        if not place:
            raise WhenError("'at' needs a place after it, e.g. 'at Community Hall'.")
        return words[:k], place
    return words, None


def split_shift_args(text: str) -> tuple[str, str, str | None, int | None]:
    """Split `!shift add` arguments into (title, when_text, place, needed).

    `Food distribution every saturday 10-13 at Community Hall need 3`
    -> ("Food distribution", "every saturday 10-13", "Community Hall", 3).

    The title may be quoted; otherwise it is the words before the first word that
    starts a readable when-phrase. `at <place>` after the when is the place
    ('at 10am' stays part of the when) and `need N` anywhere is the head count.
    Raises WhenError when the title or the when is missing.
    """
    if not isinstance(text, str) or not text.strip():
        raise WhenError("Give the shift a title and a time, e.g. 'Food run every saturday 10-13'.")
    if len(text) > 1000:
        raise WhenError("That's too long; keep the title and time short.")
    rest = text.strip()

    needed: int | None = None
    needs = list(_NEED.finditer(rest))
    if needs:
        m = needs[-1]
        needed = int(m.group(1))
        if not 1 <= needed <= 999:
            raise WhenError("'need N' takes a number of people from 1 to 999.")
        rest = (rest[: m.start()] + " " + rest[m.end() :]).strip()

    quoted = _QUOTED.match(rest)
    if quoted:
        title = quoted.group("title").strip()
        if not title:
            raise WhenError("The shift needs a title, e.g. '\"Van run\" tomorrow 6pm'.")
        words = rest[quoted.end() :].split()
        when_words, place = _split_place(words)
        when_text = " ".join(when_words)
        if not when_text:
            raise WhenError(f"When is {title!r}? Add a time after the title.")
        return title, when_text, place, needed

    words = rest.split()
    if _probe_ok(words):
        raise WhenError("The shift needs a title first, e.g. 'Food run every saturday 10-13'.")
    first_error: WhenError | None = None
    for i, word in enumerate(words):
        if i == 0:
            continue  # the first word is always part of the title
        lead_in = word.lower() in ("at", "from", "between") and i + 1 < len(words)
        if not (_starts_when(word) or (lead_in and _TIME_TOKEN.match(words[i + 1].lower()))):
            continue
        try:
            when_words, place = _split_place(words[i:])
        except WhenError as e:
            first_error = first_error or e
            continue
        when_text = " ".join(when_words)
        try:
            _parse_when(when_text, _PROBE_NOW, "UTC", check_range=False)
        except WhenError as e:
            first_error = first_error or e
            continue
        return " ".join(words[:i]), when_text, place, needed

    if first_error is not None:
        raise first_error
    raise WhenError(f"When is {rest!r}? Add a time after the title, e.g. 'every saturday 10-13'.")


def _probe_ok(words: list[str]) -> bool:
    try:
        when_words, _ = _split_place(words)
        _parse_when(" ".join(when_words), _PROBE_NOW, "UTC", check_range=False)
    except WhenError:
        return False
    return True


# --------------------------------------------------------------------------- occurrences


def _rule(when: ShiftWhen) -> rrulebase:
    return _parsed_rule(when.rrule or "", datetime.combine(when.first_date, when.start_local))


@functools.lru_cache(maxsize=1024)
def _parsed_rule(text: str, dtstart: datetime) -> rrulebase:
    """A rule is parsed once, and remembers the dates it has expanded (`cache=True`): dateutil
    expands from the first date on every query, so without it a rota's every look at "now"
    would cost its whole history. Same text and start, same dates: safe to share."""
    r = rrulestr(text, dtstart=dtstart, cache=True)
    assert isinstance(r, rrulebase)
    return r


def _iter_from(when: ShiftWhen, after_naive: datetime) -> Iterator[datetime]:
    """Naive local starts from a little before `after_naive` (DST slack)."""
    if when.rrule is None:
        yield datetime.combine(when.first_date, when.start_local)
        return
    slack = after_naive - timedelta(days=2)
    dtstart = datetime.combine(when.first_date, when.start_local)
    rule = _rule(when)
    if slack < dtstart:
        yield from rule
    else:
        yield from rule.xafter(slack, inc=True)


def rota_starts(when: ShiftWhen) -> Iterator[datetime]:
    """A rota's naive local starts from its first, in order (none for a one-off shift). The ones
    walked are remembered by its parsed rule, so no later query expands them again."""
    return iter(_rule(when)) if when.rrule is not None else iter(())


def occurrences(when: ShiftWhen, after: datetime, count: int) -> list[datetime]:
    """The next `count` starts strictly after `after`, aware, in the shift's tz.

    Expanded on local wall-clock times, so a weekly 10:00 shift stays at 10:00
    local across DST. Nonexistent local times move forward by the DST gap;
    ambiguous ones take the first occurrence. `count` is capped at 1000.
    """
    _require_aware(after, "after")
    if count <= 0:
        return []
    count = min(count, MAX_COUNT)
    zone = when.zone
    after_naive = _local_naive(after, zone)
    out: list[datetime] = []
    for i, naive in enumerate(_iter_from(when, after_naive)):
        if i > count + 800:  # rules we did not write could be sparse; stay bounded
            break
        aware = _localise(naive, zone)
        if aware > after:
            out.append(aware)
            if len(out) >= count:
                break
    return out


def occurrences_between(
    when: ShiftWhen, start: datetime, end: datetime, limit: int = MAX_BETWEEN
) -> list[datetime]:
    """Starts with start <= t < end (aware, shift tz); at most `limit` (<= 500)."""
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end <= start:
        return []
    limit = max(0, min(limit, MAX_BETWEEN))
    zone = when.zone
    start_naive = _local_naive(start, zone)
    end_naive = _local_naive(end, zone)
    out: list[datetime] = []
    for i, naive in enumerate(_iter_from(when, start_naive)):
        if len(out) >= limit or i > limit + 800 or naive > end_naive + timedelta(days=2):
            break
        aware = _localise(naive, zone)
        if aware >= end:
            if naive > end_naive:
                break
            continue
        if aware >= start:
            out.append(aware)
    return out


# --------------------------------------------------------------------------- describe


def _fmt_date(d: date, *, with_year: bool) -> str:
    s = f"{_DAY_ABBR[d.weekday()]} {d.day} {_MONTH_ABBR[d.month - 1]}"
    return f"{s} {d.year}" if with_year else s


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _rule_text(when: ShiftWhen) -> str:
    assert when.rrule is not None
    try:
        parts = _rule_parts(when.rrule)
        freq = parts.get("FREQ")
        n = int(parts.get("INTERVAL", "1"))
        known = {"FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "WKST"}
        if set(parts) - known:
            raise ValueError
        byday = [d for d in parts.get("BYDAY", "").split(",") if d]
        if freq == "DAILY" and not byday and "BYMONTHDAY" not in parts:
            return {1: "Every day", 2: "Every other day"}.get(n, f"Every {n} days")
        if freq == "WEEKLY" and "BYMONTHDAY" not in parts:
            codes = byday or [_RRULE_DAYS[when.first_date.weekday()]]
            idx = sorted(_RRULE_DAYS.index(c) for c in codes)
            if idx == [0, 1, 2, 3, 4]:
                days = "weekday (Mon-Fri)"
            elif idx == [5, 6]:
                days = "Saturday and Sunday"
            else:
                days = _join([_DAY_NAMES[i] for i in idx])
            if n == 1:
                return f"Every {days}"
            if n == 2:
                return f"Every other {days}" if len(idx) == 1 else f"Every other week on {days}"
            return f"Every {n} weeks on {days}"
        if freq == "MONTHLY":
            every = {1: "the month", 2: "every other month"}.get(n, f"every {n} months")
            each = "every month" if n == 1 else every
            if byday and "BYMONTHDAY" not in parts:
                pairs = [re.fullmatch(r"([+-]?\d)([A-Z]{2})", c) for c in byday]
                if not all(pairs):
                    raise ValueError
                weekdays = {p.group(2) for p in pairs if p}
                if len(weekdays) != 1:
                    raise ValueError
                nth = [_ORD_NAMES[int(p.group(1))] for p in pairs if p]
                day = _DAY_NAMES[_RRULE_DAYS.index(weekdays.pop())]
                text = f"{_join(nth)} {day} of {every}"
                return text[0].upper() + text[1:]
            if "BYMONTHDAY" in parts and not byday:
                days_m = [int(x) for x in parts["BYMONTHDAY"].split(",")]
                if days_m == [-1]:
                    return f"Last day of {every}"
                if any(d < 1 for d in days_m):
                    raise ValueError
                return f"The {_join([_ordinal(d) for d in days_m])} of {each}"
    except (ValueError, KeyError, IndexError):
        pass
    return f"Repeating ({when.rrule})"


def _time_range(when: ShiftWhen) -> str:
    s = f"{when.start_local:%H:%M}-{when.end_local:%H:%M}"
    if when.crosses_midnight:
        s += " (ends next day)"
    return s


def _assumed_note(when: ShiftWhen) -> str:
    if not when.duration_assumed:
        return ""
    hours = when.duration.total_seconds() / 3600
    return f" ({hours:g}h assumed: no end time given)"


def describe(when: ShiftWhen, now: datetime) -> str:
    """The echo, e.g. "Every Saturday 10:00-13:00 Europe/Berlin, next Sat 28 Nov"."""
    _require_aware(now, "now")
    times = _time_range(when)
    if when.rrule is None:
        text = f"Once: {_fmt_date(when.first_date, with_year=True)} {times} {when.tz}"
        start = _localise(datetime.combine(when.first_date, when.start_local), when.zone)
        return text + (" (already past)" if start <= now else "") + _assumed_note(when)
    text = f"{_rule_text(when)} {times} {when.tz}"
    upcoming = occurrences(when, now, 1)
    if not upcoming:
        return text + ", no more dates" + _assumed_note(when)
    nxt = upcoming[0]
    this_year = now.astimezone(when.zone).year
    text += f", next {_fmt_date(nxt.date(), with_year=nxt.year != this_year)}"
    return text + _assumed_note(when)


# --------------------------------------------------------------------------- reminders


def reminder_times(start: datetime, offsets: list[timedelta]) -> list[datetime]:
    """When to remind for a shift starting at `start`: start - offset for each offset.

    Offsets are elapsed time (a 2h reminder is 2 real hours before, also across a
    DST change). Results keep start's tz, come earliest first, without duplicates.
    Negative offsets (after the start) are refused.
    """
    _require_aware(start, "start")
    tz = start.tzinfo
    start_utc = start.astimezone(UTC)
    seen: set[datetime] = set()
    for off in offsets:
        if off < timedelta(0):
            raise ValueError("reminder offsets must not be negative")
        seen.add(start_utc - off)
    return [t.astimezone(tz) for t in sorted(seen)]


def due(scheduled: datetime, now: datetime, grace: timedelta) -> Literal["wait", "send", "skip"]:
    """'wait' before `scheduled`; 'send' up to `grace` after it; 'skip' when later."""
    _require_aware(scheduled, "scheduled")
    _require_aware(now, "now")
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    if now < scheduled:
        return "wait"
    if now - scheduled <= grace:
        return "send"
    return "skip"
