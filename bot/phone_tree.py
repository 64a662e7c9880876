"""Phone trees' rules, pure: hours when a member may be called, the wait before silence is
escalated, who hears about a silent member and when, how long a paced send will take, and the
messages of a call.

No I/O and no clock: every function is given the moment it decides for. The scheduler sends each
call, escalation and report once (its rows: `alert_calls`, `sent_reminders`), as it does for shifts.

Outside a member's hours an ordinary alert waits for the start of their hours (their escalation
clock starts when it reaches them); an urgent one (`!alert urgent …`) reaches everyone at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.formatting import Code, Rendered, render, shorten
from bot.shift_text import fmt_span

DEFAULT_WAIT = timedelta(minutes=10)
MIN_WAIT, MAX_WAIT = timedelta(seconds=5), timedelta(hours=2)
# An alert stops calling and escalating a day after it was sent; `!alert close` ends it sooner.
OPEN_FOR = timedelta(hours=24)
# Calls still on their way this long after the alert, at a pace that needs at least SLOW more for
# the rest (a homeserver's rate limit): the caller is told how long the rest will take.
PACE_AFTER = timedelta(seconds=10)
SLOW = timedelta(seconds=30)
MAX_ALERT = 500  # characters of an alert's text
CONFIRM = "👍"

_HOURS = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?$")
_WAIT = re.compile(r"^(\d{1,4})\s*(s|sec|secs|seconds?|m|min|mins|minutes?)?$", re.IGNORECASE)
_CONFIRMATIONS = frozenset({"ok", "okay", "k", "got it", "received", "👍", "ok 👍"})


class TreeError(ValueError):
    """Input a phone-tree command cannot use; the message says what it accepts."""


@dataclass(frozen=True)
class Hours:
    """When a member may be called, in the pod's time zone; `end` before `start` spans midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(moment: time) -> str:
    return f"{moment.hour}" if moment.minute == 0 else f"{moment.hour}:{moment.minute:02d}"


def parse_hours(text: str) -> Hours:
    """`8-22`, `8:30-21`, `22-6` (overnight)."""
    found = _HOURS.match(text.strip())
    if not found:
        raise TreeError("Give your hours like 8-22 (8:00 to 22:00), or leave them out to be "
                        "called any time.")
    sh, sm, eh, em = (int(g) if g else 0 for g in found.groups())
    if sh > 23 or eh > 24 or sm > 59 or em > 59 or (eh == 24 and em):
        raise TreeError("Hours run from 0 to 24, like 8-22.")
    start, end = time(sh, sm), time(0, 0) if eh == 24 else time(eh, em)
    if start == end:
        raise TreeError("Start and end are the same; leave the hours out to be called any time.")
    return Hours(start, end)


def in_hours(hours: Hours | None, moment: datetime, zone: ZoneInfo) -> bool:
    if hours is None:
        return True
    local = moment.astimezone(zone).time()
    if hours.start < hours.end:
        return hours.start <= local < hours.end
    return local >= hours.start or local < hours.end


def call_time(hours: Hours | None, now: datetime, zone: ZoneInfo, urgent: bool) -> datetime:
    """When an alert sent `now` reaches the member: now if urgent or within their hours,
    otherwise the next start of their hours."""
    if urgent or in_hours(hours, now, zone):
        return now
    assert hours is not None
    local = now.astimezone(zone)
    for days in range(2):  # the next start is today or tomorrow
        start = datetime.combine(local.date() + timedelta(days=days), hours.start, tzinfo=zone)
        if start > now:
            return start
    raise AssertionError("a start of the hours always falls within two days")


def parse_wait(text: str) -> timedelta:
    """`10` or `10m` (minutes), `30s` (seconds: for drills and tests)."""
    found = _WAIT.match(text.strip())
    if not found:
        raise TreeError("Give the wait in minutes like 10, or in seconds like 30s.")
    unit = (found.group(2) or "m").lower()
    wait = timedelta(seconds=int(found.group(1)) * (1 if unit.startswith("s") else 60))
    if not MIN_WAIT <= wait <= MAX_WAIT:
        raise TreeError(f"The wait can be {fmt_span(MIN_WAIT)} to {fmt_span(MAX_WAIT)}.")
    return wait


def format_wait(wait: timedelta) -> str:
    seconds = int(wait.total_seconds())
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def fmt_took(span: timedelta) -> str:
    """`4.2 s`, `3 min 10 s`, `2 h 5 min`: how long a tree took, to the caller (tenths of a
    second count here, unlike in reminders' `fmt_span`)."""
    seconds = max(0.0, span.total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(whole // 60, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def is_confirmation(text: str) -> bool:
    return " ".join(text.lower().replace("!", " ").replace(".", " ").split()) in _CONFIRMATIONS


def escalation_chain(person: str, backup: str | None, caller: str | None) -> list[str]:
    """Who hears about a silent member, in order: their backup, then the caller."""
    chain = []
    for who in (backup, caller):
        if who and who != person and who not in chain:
            chain.append(who)
    return chain


def escalation_times(reached: datetime, wait: timedelta, steps: int,
                     unreachable: bool = False) -> list[datetime]:
    """When each step of the chain is due: a wait after the member was reached, then a wait
    after each step. A member who could not be reached at all is escalated at once."""
    first = reached if unreachable else reached + wait
    return [first + wait * step for step in range(steps)]


def pace_estimate(remaining: int, reached: Sequence[datetime], started: datetime,
                  now: datetime) -> timedelta | None:
    """How long `remaining` calls take at the pace of the second half of the time since
    `started` (a rate limit lets a burst through first, then paces); None when nothing got
    through in it, so there is no pace to go by."""
    window = (now - started) / 2
    recent = sum(at >= now - window for at in reached)
    if recent == 0 or window <= timedelta(0):
        return None
    return window * remaining / recent


def is_slow(estimate: timedelta | None) -> bool:
    return estimate is None or estimate >= SLOW


# ---- messages -------------------------------------------------------------------------------


def sent_by(caller: str | None, origin: str | None) -> str:
    """Who an alert is from: the pod that forwarded it through a network, else its caller."""
    if origin:
        return f"the {origin} pod (through the network)"
    return caller or "a coordinator"


def alert_message(caller: str | None, text: str, prefix: str,
                  origin: str | None = None) -> Rendered:
    return render("🚨 **Phone tree alert** from {caller}:\n\n{text}\n\nReply {ok} here, or react "
                  "{thumb} to this message, so the {who} knows you got it.",
                  caller=sent_by(caller, origin), text=text, ok=Code("ok"), thumb=CONFIRM,
                  who="pod's coordinator" if origin else "caller")


def backup_message(person: str, caller: str | None, text: str, waited: timedelta,
                   origin: str | None = None) -> Rendered:
    return render("**Phone tree:** {person}, who named you as their backup, has not confirmed an "
                  "alert from {caller} after {waited}. Please try to reach them. The alert:\n\n"
                  "{text}", person=person, caller=sent_by(caller, origin),
                  waited=fmt_span(waited), text=shorten(text, 300))


def whose(origin: str | None) -> str:
    """How the caller's reports name the alert: the coordinator standing in for the caller of an
    alert another pod forwarded (`origin`) did not send it."""
    return f"the alert from the {origin} pod" if origin else "your alert"


def _heading(origin: str | None) -> str:
    return f"**Phone tree** ({whose(origin)}):" if origin else "**Phone tree:**"


def caller_message(person: str, backup: str | None, waited: timedelta,
                   unreachable: bool, origin: str | None = None) -> Rendered:
    alert = whose(origin)
    if unreachable:
        what = "could not be reached: I cannot write to them"
    else:
        what = f"has not confirmed {alert} after {fmt_span(waited)}"
    return render("**Phone tree:** {person} {what}{told}. Please reach them another way if you "
                  "can.", person=person, what=what,
                  told=f" (I told their backup, {backup})" if backup else "")


def reached_message(count: int, took: timedelta, unreachable: Sequence[str],
                    held: int, origin: str | None = None) -> Rendered:
    parts = ["{heading} all {count} people reached in {took}." if not unreachable else
             "{heading} {reached} of {count} people reached in {took}. I could not write "
             "to {missing}; their backups and you hear about them."]
    if held:
        parts.append(" {held} more are called when their hours begin.")
    return render("".join(parts), heading=_heading(origin), count=count,
                  reached=count - len(unreachable), took=fmt_took(took),
                  missing=", ".join(unreachable), held=held)


def paced_message(reached: int, total: int, estimate: timedelta | None,
                  origin: str | None = None) -> Rendered:
    rest = (f"at this pace the rest take about {fmt_took(estimate)}" if estimate is not None
            else "I keep trying and will reach everyone, but it may take several minutes")
    return render("{heading} sending is slow (the homeserver seems to limit how fast I may "
                  "send). {reached} of {total} reached so far; {rest}. (Whoever runs the bot can "
                  "lift the limit: see its README.)", heading=_heading(origin), reached=reached,
                  total=total, rest=rest)


def all_confirmed_message(count: int, reached: timedelta | None,
                          confirmed: timedelta, origin: str | None = None) -> Rendered:
    return render("**Phone tree:** everyone confirmed {alert}: {count} people{reached}, all "
                  "confirmed within {confirmed}.", alert=whose(origin), count=count,
                  reached=f", all reached within {fmt_took(reached)}" if reached is not None else "",
                  confirmed=fmt_took(confirmed))
