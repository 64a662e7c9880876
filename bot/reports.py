"""What a pod's records add up to: pure aggregates, small-count masking, and the ways to show them.

No I/O and no clock: storage hands over rows (`ReportRows`: posts and fulfilled exchanges already
counted per kind, category and zone, since a pod's history can be long), the caller passes `now`. The same
`Report` feeds the chart, the text table and the CSV, and each applies `shown()` to every count,
so a cell below the minimum reads "fewer than N" everywhere and nobody in a small pod can be picked
out. Zero is shown as 0: it names nobody, and a gap (no offers of childcare at all) is exactly
what a coordinator needs to see.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.models import Category, PostKind, PostStatus
from bot.schedule_rules import occurrences_between
from bot.shift_models import Shift, Signup, occurrence_key
from bot.shift_text import roster

PARENT_CHECK_SECONDS = 1.0  # how soon the drawing process notices that the bot is gone

PERIODS = {"week": 7, "month": 30, "quarter": 91, "year": 365}
DEFAULT_PERIOD = "month"
NO_ZONE = "no zone"
OLDEST_SHOWN = 5
CHART_SIZE_PX = (720, 960)  # width, height: a phone screen held upright
_CHART_DPI = 120
# Okabe-Ito: told apart by people with any common colour-vision deficiency, and in greyscale.
COLOURS = {"needs": "#D55E00", "offers": "#0072B2", "fulfilled": "#009E73"}
MEASURES = ("needs", "offers", "fulfilled")


class PeriodError(ValueError):
    pass


def parse_period(word: str) -> str:
    word = word.strip().lower() or DEFAULT_PERIOD
    if word not in PERIODS:
        raise PeriodError(f"{word!r} is not a period I know: use week, month, quarter or year.")
    return word


def period_start(period: str, now: datetime) -> datetime:
    return now - timedelta(days=PERIODS[period])


# ---- rows in ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostRow:
    number: int
    kind: PostKind
    category: Category
    zone: str | None
    status: PostStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PostCount:
    """Posts of one kind, category and zone created in the period."""

    kind: PostKind
    category: Category
    zone: str | None
    n: int


@dataclass(frozen=True, slots=True)
class LedgerCount:
    """Needs and offers of one category and zone fulfilled in the period."""

    category: Category
    zone: str | None
    n: int
    hours: float  # time-bank hours credited for them
    with_hours: int  # how many had hours


@dataclass(frozen=True, slots=True)
class Medians:
    match_seconds: float | None
    matched: int
    fulfil_seconds: float | None


@dataclass(frozen=True, slots=True)
class StandinRow:
    status: str  # "open", "covered", "withdrawn"
    created_at: datetime


@dataclass
class ReportRows:
    """Everything one pod's report is computed from."""

    posts: list[PostCount] = field(default_factory=list)  # created in the period
    ledger: list[LedgerCount] = field(default_factory=list)  # fulfilled in the period
    medians: Medians = field(default_factory=lambda: Medians(None, 0, None))
    open_needs: list[PostRow] = field(default_factory=list)  # oldest first, any age
    shifts: list[Shift] = field(default_factory=list)
    signups: list[Signup] = field(default_factory=list)
    cancelled: set[tuple[int, str]] = field(default_factory=set)
    standins: list[StandinRow] = field(default_factory=list)  # asked in the period


# ---- aggregates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    needs: int = 0
    offers: int = 0
    fulfilled: int = 0

    def get(self, measure: str) -> int:
        return getattr(self, measure)


@dataclass(frozen=True)
class Report:
    period: str
    start: datetime
    end: datetime
    by_category: dict[str, Counts]
    by_zone: dict[str, Counts]
    total: Counts
    median_match_hours: float | None
    matched: int
    median_fulfil_hours: float | None
    oldest_unmet: list[tuple[int, str, int]]  # (number, category, age in days)
    shift_dates: int
    places_needed: int
    places_filled: int
    short_dates: int
    standins_asked: int
    standins_covered: int
    timebank_hours: float
    timebank_exchanges: int  # fulfilled posts with hours: below the minimum the total is hidden


def _count(rows_by_key: dict[str, dict[str, int]], key: str, measure: str, n: int) -> None:
    rows_by_key.setdefault(key, {m: 0 for m in MEASURES})[measure] += n


def _counts(tally: dict[str, dict[str, int]], order: list[str]) -> dict[str, Counts]:
    return {key: Counts(**tally[key]) for key in order if key in tally}


def aggregate(rows: ReportRows, period: str, now: datetime) -> Report:
    start = period_start(period, now)
    by_category: dict[str, dict[str, int]] = {}
    by_zone: dict[str, dict[str, int]] = {}
    for posted in rows.posts:
        measure = "needs" if posted.kind is PostKind.NEED else "offers"
        _count(by_category, posted.category.value, measure, posted.n)
        _count(by_zone, posted.zone or NO_ZONE, measure, posted.n)
    for done in rows.ledger:
        _count(by_category, done.category.value, "fulfilled", done.n)
        _count(by_zone, done.zone or NO_ZONE, "fulfilled", done.n)
    medians = rows.medians
    zones = sorted(k for k in by_zone if k != NO_ZONE) + ([NO_ZONE] if NO_ZONE in by_zone else [])
    total = Counts(*(sum(c[m] for c in by_category.values()) for m in MEASURES))
    dates, needed, filled, short = _shift_totals(rows, start, now)
    standins = [s for s in rows.standins if start <= s.created_at <= now]
    return Report(
        period=period, start=start, end=now,
        by_category=_counts(by_category, [c.value for c in Category]),
        by_zone=_counts(by_zone, zones), total=total,
        median_match_hours=_in_hours(medians.match_seconds), matched=medians.matched,
        median_fulfil_hours=_in_hours(medians.fulfil_seconds),
        oldest_unmet=[(p.number, p.category.value, (now - p.created_at).days)
                      for p in rows.open_needs[:OLDEST_SHOWN]],
        shift_dates=dates, places_needed=needed, places_filled=filled, short_dates=short,
        standins_asked=len(standins),
        standins_covered=sum(1 for s in standins if s.status == "covered"),
        timebank_hours=sum(done.hours for done in rows.ledger),
        timebank_exchanges=sum(done.with_hours for done in rows.ledger),
    )


def _in_hours(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3600


def median_offsets(n: int) -> tuple[int, int]:
    """Where the median of `n` sorted values lies: the mean of the values at these offsets."""
    return (n - 1) // 2, n // 2


def _shift_totals(rows: ReportRows, start: datetime, now: datetime) -> tuple[int, int, int, int]:
    """Shift dates that began in the period: how many, places needed and filled, dates short."""
    dates = needed = filled = short = 0
    for shift in rows.shifts:
        for begin in occurrences_between(shift.when, start, now):
            key = occurrence_key(begin)
            if (shift.id, key) in rows.cancelled or begin < shift.created_at:
                continue
            on = min(len(roster(shift.id, key, rows.signups)), shift.needed)
            dates += 1
            needed += shift.needed
            filled += on
            short += on < shift.needed
    return dates, needed, filled, short


# ---- showing it ---------------------------------------------------------------------------------


def shown(n: int, minimum: int) -> str:
    """A count as people see it: below the minimum (but not zero) it is only "fewer than N"."""
    return f"fewer than {minimum}" if 0 < n < minimum else str(n)


def masked(n: int, minimum: int) -> int | None:
    """A count as the chart plots it: None where it may not be shown."""
    return None if 0 < n < minimum else n


def _hours(hours: float) -> str:
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"


def period_label(report: Report) -> str:
    return (f"the last {PERIODS[report.period]} days "
            f"({report.start:%d %b} to {report.end:%d %b %Y})")


def text_lines(report: Report, minimum: int, timebank: bool) -> list[str]:
    """The text table, one fact a line, for screen readers and for anyone the image fails."""
    def s(n: int) -> str:
        return shown(n, minimum)

    lines = [f"Report for {period_label(report)}",
             f"Total: {s(report.total.needs)} needs, {s(report.total.offers)} offers, "
             f"{s(report.total.fulfilled)} fulfilled",
             "By category (needs / offers / fulfilled):"]
    lines += [f"- {key}: {s(c.needs)} / {s(c.offers)} / {s(c.fulfilled)}"
              for key, c in report.by_category.items()] or ["- nothing posted"]
    if set(report.by_zone) - {NO_ZONE}:
        lines.append("By zone (needs / offers / fulfilled):")
        lines += [f"- {key}: {s(c.needs)} / {s(c.offers)} / {s(c.fulfilled)}"
                  for key, c in report.by_zone.items()]
    if report.median_match_hours is None or report.matched < minimum:
        lines.append(f"Median time to match: not shown ({s(report.matched)} matched)")
    else:
        lines.append(f"Median time to match: {_hours(report.median_match_hours)} "
                     f"({report.matched} matched)")
    if report.oldest_unmet:
        lines.append("Oldest unmet needs: " + ", ".join(
            f"#{n} {cat} ({age} days)" for n, cat, age in report.oldest_unmet))
    else:
        lines.append("Oldest unmet needs: none")
    lines.append(f"Shifts: {report.places_filled} of {report.places_needed} places filled on "
                 f"{report.shift_dates} dates ({report.short_dates} short)")
    lines.append(f"Stand-ins: {s(report.standins_asked)} asked, "
                 f"{s(report.standins_covered)} covered")
    if timebank and 0 < report.timebank_exchanges < minimum:
        lines.append(f"Time bank: hours not shown (fewer than {minimum} exchanges with hours)")
    elif timebank:
        lines.append(f"Time bank: {report.timebank_hours:g} hours given in the pod")
    return lines


def chart_numbers(report: Report, minimum: int) -> dict[str, dict[str, dict[str, int | None]]]:
    """Exactly what the chart plots: panel -> group -> measure -> count (None: masked)."""
    return {panel: {key: {m: masked(c.get(m), minimum) for m in MEASURES}
                    for key, c in groups.items()}
            for panel, groups in (("category", report.by_category), ("zone", report.by_zone))}


CSV_HEADER = ("pod", "period", "from", "to", "measure", "dimension", "group", "value")


def csv_bytes(report: Report, pod: str, minimum: int) -> bytes:
    """The same aggregates as the report, long format: one value a row, masked the same way."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    head = (pod, report.period, report.start.date().isoformat(), report.end.date().isoformat())
    for dimension, groups in (("category", report.by_category), ("zone", report.by_zone),
                              ("total", {"all": report.total})):
        for key, counts in groups.items():
            for measure in MEASURES:
                writer.writerow((*head, measure, dimension, key, shown(counts.get(measure), minimum)))
    match = (f"{report.median_match_hours:.2f}" if report.median_match_hours is not None
             and report.matched >= minimum else "")
    for measure, value in (("median_match_hours", match),
                           ("shift_places_needed", report.places_needed),
                           ("shift_places_filled", report.places_filled),
                           ("shift_dates_short", report.short_dates),
                           ("standins_asked", shown(report.standins_asked, minimum)),
                           ("standins_covered", shown(report.standins_covered, minimum)),
                           ("timebank_hours", _timebank_cell(report, minimum))):
        writer.writerow((*head, measure, "total", "all", value))
    return out.getvalue().encode()


def _timebank_cell(report: Report, minimum: int) -> str:
    if 0 < report.timebank_exchanges < minimum:
        return f"fewer than {minimum} exchanges"
    return f"{report.timebank_hours:g}"


def start_drawing_process(niceness: int) -> None:
    """The drawing process's start (its pool's initializer): niced, as background work, and
    ending with the bot. A bot killed outright (`kill -9`, the OOM killer) cannot stop its pool,
    and the process, waiting for work that never comes, would outlive it for good."""
    os.nice(niceness)
    bot_pid = os.getppid()

    def end_with_the_bot() -> None:
        while os.getppid() == bot_pid:  # reparented once the bot is gone
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=end_with_the_bot, name="end with the bot", daemon=True).start()


def prepare_drawing() -> None:
    """Import matplotlib ahead of the first chart (in the drawing process)."""
    import matplotlib.figure  # noqa: F401


def render_chart(report: Report, minimum: int) -> bytes:
    """A PNG of CHART_SIZE_PX: needs, offers and fulfilled by category and by zone.

    CPU-bound (about a tenth of a second): call it off the event loop. The plotted numbers are
    stored in the PNG's "Description" text chunk as JSON, so what the picture shows can be checked.
    Uses a bare `Figure` (Agg), never pyplot, which keeps global state and is not thread-safe.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    numbers = chart_numbers(report, minimum)
    width, height = CHART_SIZE_PX
    fig = Figure(figsize=(width / _CHART_DPI, height / _CHART_DPI), dpi=_CHART_DPI,
                 layout="constrained")
    fig.suptitle(f"Last {PERIODS[report.period]} days, to {report.end:%d %b %Y}", fontsize=13)
    axes = fig.subplots(2, 1, height_ratios=[3, 2])
    for ax, (panel, title) in zip(axes, (("category", "By category"), ("zone", "By zone")),
                                  strict=True):
        _panel(ax, numbers[panel], title, minimum)
    handles = [Patch(color=COLOURS[m], label=m) for m in MEASURES]
    fig.legend(handles=handles, ncols=3, loc="outside lower center", fontsize=11, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_CHART_DPI,
                metadata={"Description": json.dumps(numbers, sort_keys=True)})
    return buffer.getvalue()


def _panel(ax: object, groups: dict[str, dict[str, int | None]], title: str, minimum: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=12, loc="left")
    ax.set_xlabel("posts in the period", fontsize=11)
    if not groups:
        ax.text(0.5, 0.5, "nothing posted", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    names = list(groups)
    bar = 0.8 / len(MEASURES)
    top = max([v for g in groups.values() for v in g.values() if v is not None] + [minimum])
    for i, measure in enumerate(MEASURES):
        positions = [row + (i - 1) * bar for row in range(len(names))]
        values = [groups[name][measure] for name in names]
        ax.barh(positions, [v or 0 for v in values], height=bar, color=COLOURS[measure])
        for y, value in zip(positions, values, strict=True):
            label = f"fewer than {minimum}" if value is None else str(value)
            ax.text((value or 0) + top * 0.01, y, label, va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=11)
    ax.invert_yaxis()
    ax.set_ylabel(title.removeprefix("By "), fontsize=11)
    ax.set_xlim(0, top * 1.35)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
