"""Shifts: add, list, sign up, withdraw, stand-ins, no-shows, calendar export; and !renew for posts.

Times are read and shown in the room's time zone (`!settings timezone`). An occurrence of a shift
is named by its start in UTC (`occurrence_key`), so a date typed in any form finds the same one.
After every change the scheduler is told to re-derive its next wake-up from the database.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from bot import room_settings
from bot.commands import Arg, UsageError, command, intake, is_coordinator, require_coordinator
from bot.context import Attachment, Context
from bot.formatting import Code, Mention, Rendered, join, render, shorten
from bot.models import Post, PostStatus
from bot.parsing import parse_post_ref
from bot.schedule_rules import (
    MAX_AHEAD_YEARS,
    WhenError,
    describe,
    occurrences,
    occurrences_between,
    parse_when,
    split_shift_args,
)
from bot.shift_models import ALL_DATES, Shift, Signup, StandinRequest, occurrence_key
from bot.shift_text import fmt_occurrence, roster

GROUP = "Shifts"
_LIST_LIMIT = 40
_WINDOWS = {"week": timedelta(days=7), "month": timedelta(days=31), "all": timedelta(days=92)}
_ICS_DAYS = 92



async def room_tz(ctx: Context) -> str:
    stored = await ctx.tx.settings.room(ctx.room_id)
    return room_settings.value("timezone", stored, ctx.config)


async def _in_room(ctx: Context) -> bool:
    if ctx.is_direct:
        await ctx.reply("Shifts belong to a pod room; please send this in the pod room.")
        return False
    return True


# ---- reading arguments ------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_WEEKDAY_WORDS = {w: i for i, names in enumerate((
    ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"),
    ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"),
)) for w in names}
_REF = re.compile(r"^[sS#]?(\d{1,6})$")
_HEAD_COUNT = re.compile(r"\d{1,3}")  # \d: decimal digits of any script, which int() reads


def parse_date_arg(text: str, today: date) -> date | None:
    """A date as people type it: 2026-11-28, 28 nov, nov 28, 28.11., saturday, today, tomorrow.

    Without a year, the date closest to `today` is meant (so last week's date works for !noshow).
    """
    t = " ".join(text.lower().replace(",", " ").split())
    if not t:
        return None
    if t == "today":
        return today
    if t == "tomorrow":
        return today + timedelta(days=1)
    if t in _WEEKDAY_WORDS:
        return today + timedelta(days=(_WEEKDAY_WORDS[t] - today.weekday()) % 7)
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", t)
    if m:
        return _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = re.fullmatch(r"(?:[a-z]{3,9} )?(\d{1,2})[./](\d{1,2})\.?(?:[./](\d{2,4}))?", t)
    day_month: tuple[int, int] | None = None
    year: int | None = None
    if m:
        day_month = (int(m.group(1)), int(m.group(2)))
        year = _year(m.group(3))
    else:
        m = re.fullmatch(r"(?:[a-z]{3,9} )?(\d{1,2})(?:st|nd|rd|th)? ([a-z]{3,9})\.?(?: (\d{4}))?", t)
        if m and m.group(2)[:3] in _MONTHS:
            day_month, year = (int(m.group(1)), _MONTHS[m.group(2)[:3]]), _year(m.group(3))
        else:
            m = re.fullmatch(r"(?:[a-z]{3,9} )?([a-z]{3,9})\.? (\d{1,2})(?:st|nd|rd|th)?(?: (\d{4}))?", t)
            if m and m.group(1)[:3] in _MONTHS:
                day_month, year = (int(m.group(2)), _MONTHS[m.group(1)[:3]]), _year(m.group(3))
    if day_month is None:
        return None
    day, month = day_month
    if year is not None:
        return _safe_date(year, month, day)
    candidates = [d for y in (today.year - 1, today.year, today.year + 1)
                  if (d := _safe_date(y, month, day)) is not None]
    return min(candidates, key=lambda d: abs((d - today).days), default=None)


def _year(text: str | None) -> int | None:
    if not text:
        return None
    return int(text) + (2000 if len(text) == 2 else 0)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


async def _resolve_shift(ctx: Context, rest: str) -> tuple[Shift, str]:
    """The shift named at the start of `rest` (S3, 3, #3 or its title) and the words after it."""
    words = rest.split()
    if not words:
        raise UsageError("Which shift? Give its number like S1 (see !shifts) or its title.")
    m = _REF.match(words[0])
    if m:
        shift = await ctx.tx.shifts.by_number(ctx.room_id, int(m.group(1)))
        if shift is None or not shift.active:
            raise UsageError(f"There is no shift S{int(m.group(1))} in this room. See !shifts.")
        return shift, " ".join(words[1:])
    shifts = await ctx.tx.shifts.list(ctx.room_id)
    # A title is at most a few words, so only that many leading words can name one: the work
    # stays linear in the message, however many words follow.
    longest = max((len(s.title.split()) for s in shifts), default=0)
    for n in range(min(len(words), longest), 0, -1):
        wanted = " ".join(words[:n]).lower()
        exact = [s for s in shifts if s.title.lower() == wanted]
        if len(exact) == 1:
            return exact[0], " ".join(words[n:])
    for n in range(min(len(words), longest), 0, -1):
        wanted = " ".join(words[:n]).lower()
        starts = [s for s in shifts if s.title.lower().startswith(wanted)]
        if len(starts) == 1:
            return starts[0], " ".join(words[n:])
        if len(starts) > 1 and n == 1:
            names = ", ".join(f"S{s.number} {s.title}" for s in starts[:5])
            raise UsageError(f"More than one shift matches {words[0]!r}: {names}. Use the number.")
    raise UsageError(f"I can't find a shift called {shorten(rest, 40)!r} here. See !shifts.")


async def _cancelled(ctx: Context, shifts: list[Shift]) -> set[tuple[int, str]]:
    return await ctx.tx.shifts.cancelled_occurrences([s.id for s in shifts])


def _upcoming(shift: Shift, now: datetime, cancelled: set[tuple[int, str]], count: int = 1,
              ) -> list[datetime]:
    found = []
    after = now
    while len(found) < count:
        batch = occurrences(shift.when, after, count)
        if not batch:
            break
        for start in batch:
            if (shift.id, occurrence_key(start)) not in cancelled:
                found.append(start)
        after = batch[-1]
        if len(batch) < count:
            break
    return found[:count]


async def _occurrence(ctx: Context, shift: Shift, text: str, *, allow_past: bool = False,
                      person: str | None = None) -> datetime:
    """The occurrence `text` names (a date); without a date, the next one (for `person`, if given)."""
    cancelled = await _cancelled(ctx, [shift])
    zone = shift.when.zone
    if not text.strip() or text.strip().lower() == "next":
        if person is not None:
            signups = await ctx.tx.shifts.signups([shift.id])
            for start in _upcoming(shift, ctx.now, cancelled, 60):
                if person in roster(shift.id, occurrence_key(start), signups):
                    return start
            raise UsageError(f"You aren't signed up for any coming date of {shift.label}.")
        upcoming = _upcoming(shift, ctx.now, cancelled)
        if not upcoming:
            raise UsageError(f"{shift.label} has no more dates.")
        return upcoming[0]
    today = ctx.now.astimezone(zone).date()
    day = parse_date_arg(text, today)
    if day is None:
        raise UsageError(f"I couldn't read {shorten(text, 30)!r} as a date. "
                         "Try 2026-11-28, 28 nov or saturday.")
    if abs(day.year - today.year) > MAX_AHEAD_YEARS:
        raise UsageError(f"{day.isoformat()} is too far away: give a date within "
                         f"{MAX_AHEAD_YEARS} years of today.")
    start_of_day = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    found = [s for s in occurrences_between(shift.when, start_of_day, start_of_day + timedelta(days=1))
             if (shift.id, occurrence_key(s)) not in cancelled]
    if not found:
        nxt = _upcoming(shift, ctx.now, cancelled, 3)
        dates = ", ".join(fmt_occurrence(shift, s) for s in nxt) or "none"
        raise UsageError(f"{shift.label} doesn't happen on {day:%a %d %b %Y}. Coming dates: {dates}.")
    start = found[0]
    if not allow_past and start <= ctx.now:
        raise UsageError(f"{shift.label} on {fmt_occurrence(shift, start)} has already started.")
    return start


def _when_text(shift: Shift, start: datetime) -> str:
    return f"{fmt_occurrence(shift, start)} {shift.when.tz}"


def _people(n: int) -> str:
    return f"{n} {'person' if n == 1 else 'people'}"


# ---- !shift add / cancel / edit -------------------------------------------------------------


def _examples(prefix: str) -> str:
    return " · ".join(f"{prefix}shift add Food run {e}" for e in
                      ("every saturday 10-13 need 3", "tomorrow 6pm", "first monday of the month 19:00"))


def echo(shift: Shift, now: datetime, lead: str = "") -> Rendered:
    reading = describe(shift.when, now)
    parts = [reading]
    if shift.place:
        parts.append(f"at {shift.place}")
    parts.append(f"{_people(shift.needed)} needed")
    return render(lead + "**{label} {title}**: {reading}", label=shift.label, title=shift.title,
                  reading=", ".join(parts))


@command("shift", help="Add, edit or cancel a shift (edit/cancel: coordinators).",
         args=(Arg("add|edit|cancel"), Arg("details", many=True)),
         examples=("shift add Food distribution every saturday 10-13 at Community Hall need 3",
                   "shift add Van run tomorrow 6pm",
                   "shift edit S1 need 4",
                   "shift cancel S1 2026-12-05"),
         group=GROUP)
async def shift_command(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    sub, _, args = rest.partition(" ")
    sub = sub.lower()
    if sub in ("add", "new"):
        await _shift_add(ctx, args.strip())
    elif sub == "edit":
        await _shift_edit(ctx, args.strip())
    elif sub in ("cancel", "delete", "remove"):
        await _shift_cancel(ctx, args.strip())
    elif sub in ("list", "ls"):
        await shifts_command(ctx, args.strip())
    else:
        raise UsageError("Say what to do: add, edit or cancel.")


async def _member_may_add(ctx: Context) -> bool:
    """Coordinators always; other members while the room has fewer open shifts added by members
    than the configured cap (every shift brings reminders and alerts: nobody may flood a pod)."""
    if is_coordinator(ctx):
        return True
    cap = ctx.config.shifts.member_open_shifts_per_room
    by_members = [s for s in await ctx.tx.shifts.list(ctx.room_id)
                  if not is_coordinator(ctx, s.created_by) and occurrences(s.when, ctx.now, 1)]
    if len(by_members) < cap:
        return True
    await ctx.reply("This room already has {n} open shifts added by members who aren't "
                    "coordinators, the most it allows. A coordinator can add this one, or cancel "
                    "one that is no longer needed (see {shifts}).",
                    n=len(by_members), shifts=Code(f"{ctx.config.command_prefix}shifts all"))
    return False


async def _shift_add(ctx: Context, args: str) -> None:
    p = ctx.config.command_prefix
    if not await _member_may_add(ctx):
        return
    tz = await room_tz(ctx)
    try:
        title, when_text, place, needed = split_shift_args(args)
        when = parse_when(when_text, ctx.now, tz)
    except WhenError as exc:
        await ctx.reply("{reason}\nI can read things like: {examples}",
                        reason=exc.reason, examples=_examples(p))
        return
    shift = await ctx.tx.shifts.create(ctx.room_id, shorten(title, 80), place, needed or 1, when,
                                           ctx.sender, ctx.now)
    ctx.schedule_changed = True
    if shift.when.rrule is None:  # one date: "every date" would mean nothing
        how = render("Sign up with {next}.", next=Code(f"{p}signup {shift.label}"))
    else:
        how = render("Sign up with {next} (next date) or {all} (every date).",
                     next=Code(f"{p}signup {shift.label}"), all=Code(f"{p}signup {shift.label} all"))
    await ctx.reply(join([echo(shift, ctx.now, "Added shift "), how]))


async def _shift_edit(ctx: Context, args: str) -> None:
    if not await require_coordinator(ctx, "edit a shift"):
        return
    shift, rest = await _resolve_shift(ctx, args)
    field_name, _, value = rest.partition(" ")
    field_name, value = field_name.lower(), value.strip()
    if not value:
        raise UsageError("Say what to change: title, when, place or need, and the new value.")
    if field_name == "title":
        shift = await ctx.tx.shifts.update(shift, ctx.now, title=shorten(value, 80))
    elif field_name in ("when", "time"):
        try:
            when = parse_when(value, ctx.now, shift.when.tz)
        except WhenError as exc:
            await ctx.reply("{reason}\nI can read things like: {examples}",
                            reason=exc.reason, examples=_examples(ctx.config.command_prefix))
            return
        shift = await ctx.tx.shifts.update(shift, ctx.now, when=when)
    elif field_name in ("place", "at", "where"):
        shift = await ctx.tx.shifts.update(shift, ctx.now, place=shorten(value, 80))
    elif field_name in ("need", "needed", "people"):
        if not _HEAD_COUNT.fullmatch(value) or not 1 <= int(value) <= 999:
            raise UsageError("need takes a number of people from 1 to 999.")
        shift = await ctx.tx.shifts.update(shift, ctx.now, needed=int(value))
    else:
        raise UsageError("I can change title, when, place or need.")
    ctx.schedule_changed = True
    await ctx.reply(echo(shift, ctx.now, "Updated "))


async def _shift_cancel(ctx: Context, args: str) -> None:
    if not await require_coordinator(ctx, "cancel a shift"):
        return
    shift, rest = await _resolve_shift(ctx, args)
    signups = await ctx.tx.shifts.signups([shift.id])
    if rest.strip() and rest.strip().lower() not in ("all", "every", "series"):
        start = await _occurrence(ctx, shift, rest)
        key = occurrence_key(start)
        await ctx.tx.shifts.cancel_occurrence(shift.id, key, ctx.now)
        people = roster(shift.id, key, signups)
        ctx.schedule_changed = True
        await _announce_cancel(ctx, shift, f"on {_when_text(shift, start)} is cancelled", people)
        return
    await ctx.tx.shifts.update(shift, ctx.now, active=False)
    people: list[str] = []
    for s in signups:
        if s.present and s.person not in people:
            people.append(s.person)
    ctx.schedule_changed = True
    await _announce_cancel(ctx, shift, "is cancelled (all dates)", people)


async def _announce_cancel(ctx: Context, shift: Shift, what: str, people: list[str]) -> None:
    if not people:
        await ctx.reply("**{label} {title}** {what}.", label=shift.label, title=shift.title, what=what)
        return
    template = "**{label} {title}** {what}. Signed up: " + ", ".join(
        f"{{p{i}}}" for i in range(len(people))) + "."
    await ctx.reply(template, label=shift.label, title=shift.title, what=what,
                    **{f"p{i}": Mention(person) for i, person in enumerate(people)})


# ---- !shifts --------------------------------------------------------------------------------


@command("shifts", help="Coming shifts with who is on and how many are still needed; "
                        "'ics' for a calendar file.",
         args=(Arg("week|month|all|ics", optional=True),),
         examples=("shifts", "shifts month", "shifts ics"), group=GROUP)
async def shifts_command(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    word = rest.strip().lower() or "week"
    if word in ("ics", "ical", "calendar"):
        await _shifts_ics(ctx)
        return
    if word not in _WINDOWS:
        raise UsageError("Say week, month, all or ics.")
    p = ctx.config.command_prefix
    shifts = await ctx.tx.shifts.list(ctx.room_id)
    if not shifts:
        await ctx.reply("No shifts here yet. Add one: {example}",
                        example=Code(f"{p}shift add Food run every saturday 10-13 need 3"))
        return
    signups = await ctx.tx.shifts.signups([s.id for s in shifts])
    cancelled = await _cancelled(ctx, shifts)
    rows = _rows(shifts, signups, cancelled, ctx.now, ctx.now + _WINDOWS[word])
    lines = [render("**Shifts, coming {span}**", span="week" if word == "week" else
                    ("month" if word == "month" else "3 months"))]
    if not rows:
        lines.append(render("Nothing in this window. Try {more}.", more=Code(f"{p}shifts all")))
    for shift, start, people in rows[:_LIST_LIMIT]:
        lines.append(_line(shift, start, people))
    if len(rows) > _LIST_LIMIT:
        lines.append(render("…and {n} more.", n=len(rows) - _LIST_LIMIT))
    lines.append(render("Sign up: {signup} · can't make it: {standin}",
                        signup=Code(f"{p}signup S1 <date>"), standin=Code(f"{p}standin S1 <date>")))
    await ctx.reply(join(lines))


def _rows(shifts: list[Shift], signups: list[Signup], cancelled: set[tuple[int, str]],
          start: datetime, end: datetime) -> list[tuple[Shift, datetime, list[str]]]:
    rows = []
    for shift in shifts:
        for occ in occurrences_between(shift.when, start, end):
            key = occurrence_key(occ)
            if (shift.id, key) not in cancelled:
                rows.append((shift, occ, roster(shift.id, key, signups)))
    rows.sort(key=lambda r: (r[1].astimezone(UTC), r[0].number))
    return rows


def _line(shift: Shift, start: datetime, people: list[str]) -> Rendered:
    left = shift.needed - len(people)
    status = f"{left} more needed" if left > 0 else "full"
    return render("**{label}** {title} · {when}{place} · on: {on} · {status}",
                  label=shift.label, title=shift.title, when=_when_text(shift, start),
                  place=f" · at {shift.place}" if shift.place else "",
                  on=", ".join(people) if people else "nobody yet", status=status)


async def _shifts_ics(ctx: Context) -> None:
    shifts = await ctx.tx.shifts.list(ctx.room_id)
    signups = await ctx.tx.shifts.signups([s.id for s in shifts])
    cancelled = await _cancelled(ctx, shifts)
    rows = _rows(shifts, signups, cancelled, ctx.now, ctx.now + timedelta(days=_ICS_DAYS))
    data = build_ics(rows, ctx.now, ctx.room_id)
    await ctx.attach(Attachment("shifts.ics", "text/calendar", data),
                     f"Shifts for the next {_ICS_DAYS} days ({len(rows)} dates), as a calendar file.")


def build_ics(rows: list[tuple[Shift, datetime, list[str]]], now: datetime, room_id: str) -> bytes:
    cal = Calendar()
    cal.add("prodid", "-//mutual-aid-bot//shifts//EN")
    cal.add("version", "2.0")
    cal.add("x-wr-calname", "Pod shifts")
    for shift, start, people in rows:
        event = Event()
        start_utc = start.astimezone(UTC)
        event.add("uid", f"shift-{shift.id}-{start_utc:%Y%m%dT%H%M%SZ}@mutual-aid-bot")
        event.add("dtstamp", now.astimezone(UTC))
        event.add("dtstart", start_utc)
        event.add("dtend", start_utc + shift.when.duration)
        event.add("summary", f"{shift.label} {shift.title}")
        if shift.place:
            event.add("location", shift.place)
        event.add("description", f"Signed up: {', '.join(people) or 'nobody yet'}. "
                                 f"Needed: {shift.needed}. Times in {shift.when.tz}.")
        cal.add_component(event)
    return cal.to_ical()


# ---- !signup / !withdraw --------------------------------------------------------------------


@command("signup", help="Sign up for a shift: the next date, a date, or all dates.",
         args=(Arg("shift"), Arg("date|all", optional=True)),
         aliases=("sign-up",), examples=("signup S1", "signup S1 2026-11-28", "signup S1 all"),
         group=GROUP)
async def signup(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    shift, date_text = await _resolve_shift(ctx, rest)
    if date_text.strip().lower() in ("all", "every", "always"):
        await ctx.tx.shifts.set_signup(shift.id, ALL_DATES, ctx.sender, True, ctx.now)
        ctx.schedule_changed = True
        cancelled = await _cancelled(ctx, [shift])
        nxt = _upcoming(shift, ctx.now, cancelled)
        await ctx.reply("You're on **{label} {title}** for every date{next}. Thank you!",
                        label=shift.label, title=shift.title,
                        next=f", next {_when_text(shift, nxt[0])}" if nxt else "")
        return
    start = await _occurrence(ctx, shift, date_text)
    key = occurrence_key(start)
    signups = await ctx.tx.shifts.signups([shift.id])
    if ctx.sender in roster(shift.id, key, signups):
        await ctx.reply("You're already on **{label} {title}** {when}.", label=shift.label,
                        title=shift.title, when=_when_text(shift, start))
        return
    await ctx.tx.shifts.set_signup(shift.id, key, ctx.sender, True, ctx.now)
    ctx.schedule_changed = True
    people = roster(shift.id, key, await ctx.tx.shifts.signups([shift.id]))
    await ctx.reply("You're on **{label} {title}** {when}. {have} of {need} signed up. Thank you!",
                    label=shift.label, title=shift.title, when=_when_text(shift, start),
                    have=len(people), need=shift.needed)


@command("withdraw", help="Take yourself off a shift (one date, or all dates).",
         args=(Arg("shift"), Arg("date|all", optional=True)),
         examples=("withdraw S1 2026-11-28", "withdraw S1 all"), group=GROUP)
async def withdraw(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    shift, date_text = await _resolve_shift(ctx, rest)
    signups = await ctx.tx.shifts.signups([shift.id])
    standing = any(s.occurrence == ALL_DATES and s.person == ctx.sender and s.present
                   for s in signups)
    if date_text.strip().lower() in ("all", "every") or (standing and not date_text.strip()):
        removed = 0
        for s in signups:
            if s.person == ctx.sender and s.present:
                removed += await ctx.tx.shifts.remove_signup(shift.id, s.occurrence, ctx.sender)
        ctx.schedule_changed = True
        if not removed:
            await ctx.reply("You weren't signed up for {label}.", label=shift.label)
            return
        await ctx.reply("You're off **{label} {title}** for all dates.", label=shift.label,
                        title=shift.title)
        return
    start = await _occurrence(ctx, shift, date_text, person=ctx.sender)
    key = occurrence_key(start)
    if ctx.sender not in roster(shift.id, key, signups):
        await ctx.reply("You weren't on **{label}** {when}.", label=shift.label,
                        when=_when_text(shift, start))
        return
    await _take_off(ctx, shift, key, ctx.sender, signups)
    ctx.schedule_changed = True
    left = shift.needed - len(roster(shift.id, key, await ctx.tx.shifts.signups([shift.id])))
    await ctx.reply("You're off **{label} {title}** {when}.{left}", label=shift.label,
                    title=shift.title, when=_when_text(shift, start),
                    left=f" It now needs {left} more." if left > 0 else "")


async def _take_off(ctx: Context, shift: Shift, key: str, person: str, signups: list[Signup]) -> None:
    standing = any(s.occurrence == ALL_DATES and s.person == person and s.present for s in signups)
    if standing:
        await ctx.tx.shifts.set_signup(shift.id, key, person, False, ctx.now)
    else:
        await ctx.tx.shifts.remove_signup(shift.id, key, person)


# ---- !standin / !cover ----------------------------------------------------------------------


@command("standin", help="Ask the pod for someone to take your place on a shift date.",
         args=(Arg("shift"), Arg("date", optional=True)), aliases=("stand-in",),
         examples=("standin S1 2026-11-28",), group=GROUP)
async def standin(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    shift, date_text = await _resolve_shift(ctx, rest)
    start = await _occurrence(ctx, shift, date_text, person=ctx.sender if not date_text else None)
    key = occurrence_key(start)
    if ctx.sender not in roster(shift.id, key, await ctx.tx.shifts.signups([shift.id])):
        await ctx.reply("You aren't on **{label}** {when}, so there is nothing to hand over.",
                        label=shift.label, when=_when_text(shift, start))
        return
    request = await ctx.tx.shifts.open_standin_for(shift.id, key, ctx.sender)
    if request is None:
        request = await ctx.tx.shifts.create_standin(shift, key, ctx.sender, ctx.now)
    await ctx.reply(
        "{who} needs a stand-in for **{label} {title}** {when}{place}. Can you take it? Send {cover}",
        who=ctx.sender, label=shift.label, title=shift.title, when=_when_text(shift, start),
        place=f" at {shift.place}" if shift.place else "",
        cover=Code(f"{ctx.config.command_prefix}cover R{request.number}"),
    )


async def _find_request(ctx: Context, rest: str) -> StandinRequest:
    m = re.match(r"^[rR#]?(\d{1,6})$", rest.split()[0]) if rest.split() else None
    if m is None:
        raise UsageError("Give the stand-in request number, like R2.")
    request = await ctx.tx.shifts.standin(ctx.room_id, int(m.group(1)))
    if request is None:
        raise UsageError(f"There is no stand-in request R{int(m.group(1))} here.")
    return request


@command("cover", help="Take someone's place on a shift they asked a stand-in for.",
         args=(Arg("request"),), examples=("cover R1",), group=GROUP)
async def cover(ctx: Context, rest: str) -> None:
    if not await _in_room(ctx):
        return
    request = await _find_request(ctx, rest)
    shift = await ctx.tx.shifts.by_id(request.shift_id)
    start = datetime.fromisoformat(request.occurrence)
    if request.status != "open":
        await ctx.reply("R{number} is already {status}.", number=request.number,
                        status="covered" if request.status == "covered" else "closed")
        return
    if request.requester == ctx.sender:
        await ctx.reply("That's your own request. To drop the date anyway: {withdraw}",
                        withdraw=Code(f"{ctx.config.command_prefix}withdraw {shift.label} "
                                      f"{start.astimezone(shift.when.zone).date().isoformat()}"))
        return
    cancelled = (shift.id, request.occurrence) in await _cancelled(ctx, [shift])
    if not shift.active or cancelled or start <= ctx.now:
        await ctx.tx.shifts.set_standin_status(request, "closed", ctx.now)
        await ctx.reply("R{number} is no longer needed: that shift date has passed or was cancelled.",
                        number=request.number)
        return
    signups = await ctx.tx.shifts.signups([shift.id])
    if ctx.sender in roster(shift.id, request.occurrence, signups):
        await ctx.reply("You're already on **{label}** {when}.", label=shift.label,
                        when=_when_text(shift, start))
        return
    await _take_off(ctx, shift, request.occurrence, request.requester, signups)
    await ctx.tx.shifts.set_signup(shift.id, request.occurrence, ctx.sender, True, ctx.now)
    await ctx.tx.shifts.set_standin_status(request, "covered", ctx.now, covered_by=ctx.sender)
    ctx.schedule_changed = True
    await ctx.reply("Thank you, {coverer}! You're on **{label} {title}** {when} in place of {who}.",
                    coverer=ctx.sender, label=shift.label, title=shift.title,
                    when=_when_text(shift, start), who=request.requester)
    await ctx.dm(request.requester,
                 "{coverer} is covering **{label} {title}** {when} for you: you're released from "
                 "that date.", coverer=ctx.sender, label=shift.label, title=shift.title,
                 when=_when_text(shift, start))


# ---- !noshow --------------------------------------------------------------------------------


@command("noshow", help="Coordinators: note that someone didn't come to a shift.",
         args=(Arg("person"), Arg("shift"), Arg("date")), aliases=("no-show",),
         examples=("noshow @sam:example.org S1 2026-11-21",), group=GROUP)
async def noshow(ctx: Context, rest: str) -> None:
    if not await require_coordinator(ctx, "record a no-show"):
        return
    person, _, rest = rest.strip().partition(" ")
    if not person.startswith("@") or ":" not in person:
        raise UsageError("Name the person by their full id, like @sam:example.org.")
    shift, date_text = await _resolve_shift(ctx, rest)
    if not date_text.strip():
        raise UsageError("Which date? e.g. 2026-11-21")
    start = await _occurrence(ctx, shift, date_text, allow_past=True)
    await ctx.tx.shifts.record_noshow(shift.id, occurrence_key(start), person, ctx.sender, ctx.now)
    total = await ctx.tx.shifts.noshow_count(ctx.room_id, person)
    await ctx.reply("Noted: {person} didn't come to **{label}** {when} ({total} no-show{s} "
                    "recorded here).", person=person, label=shift.label,
                    when=_when_text(shift, start), total=total, s="" if total == 1 else "s")


# ---- !renew (posts) -------------------------------------------------------------------------


@command("renew", help="Keep your need or offer listed for another expiry period.",
         args=(Arg("#id"),), examples=("renew #12",), group="Posts")
async def renew(ctx: Context, rest: str) -> None:
    number = parse_post_ref(rest.split()[0]) if rest.split() else None
    if number is None:
        raise UsageError("Give the post number, like #12.")
    post: Post | None
    if ctx.is_direct:
        mine = [p for p in await ctx.tx.posts.list(
                    author=ctx.sender, statuses=(PostStatus.OPEN, PostStatus.EXPIRED), limit=500)
                if p.number == number]
        # Private requests were made here, in the DM: they are what a number here means first
        # (and asking "in the room where you posted it" would point at the pod).
        mine = [p for p in mine if p.private] or mine
        if len(mine) > 1:
            await ctx.reply("You have more than one #{number} (in different rooms); send "
                            "{renew} in the room where you posted it.", number=number,
                            renew=Code(f"{ctx.config.command_prefix}renew #{number}"))
            return
        post = mine[0] if mine else None
    else:
        post = await ctx.tx.posts.by_number(ctx.room_id, number)
    if post is None:
        raise UsageError(f"There is no post #{number} of yours here.")
    await intake.answer_privately_if_anonymous(ctx, post, _renew(ctx, post))


async def _renew(ctx: Context, post: Post) -> None:
    masked = intake.acting_as_member(ctx, post)
    if masked and not is_coordinator(ctx):
        await intake.tell_requester_privately(ctx, post, "renew")
        return
    if post.author != ctx.sender and not is_coordinator(ctx):
        await ctx.reply("Only the person who posted **#{number}** or a coordinator can renew it.",
                        number=post.number)
        return
    if post.status not in (PostStatus.OPEN, PostStatus.EXPIRED):
        await ctx.reply("**#{number}** is {status}; only open or expired posts can be renewed.",
                        number=post.number, status=post.status.value)
        return
    post = await ctx.tx.posts.renew(post, ctx.now)
    ctx.schedule_changed = True
    stored = await ctx.tx.settings.room(post.room_id)
    zone = ZoneInfo(room_settings.value("timezone", stored, ctx.config))
    until = (ctx.now + timedelta(days=ctx.config.shifts.post_expiry_days)).astimezone(zone)
    await ctx.reply("**#{number}** renewed: it stays listed until {until}.", number=post.number,
                    until=f"{until:%a %d %b}")
