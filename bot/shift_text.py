"""Shifts as people read them: who is on, when, how long. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.shift_models import ALL_DATES, Shift, Signup

_DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def roster(shift_id: int, occurrence: str, signups: list[Signup]) -> list[str]:
    """Who is on for one occurrence, in sign-up order: standing or dated sign-ups, minus opt-outs."""
    out = {s.person for s in signups
           if s.shift_id == shift_id and s.occurrence == occurrence and not s.present}
    people: list[str] = []
    for s in signups:
        if (s.shift_id == shift_id and s.present and s.occurrence in (ALL_DATES, occurrence)
                and s.person not in out and s.person not in people):
            people.append(s.person)
    return people


def fmt_occurrence(shift: Shift, start: datetime) -> str:
    """'Sat 28 Nov 10:00-13:00' in the shift's own time zone."""
    local = start.astimezone(shift.when.zone)
    end = (local + shift.when.duration).astimezone(shift.when.zone)
    return (f"{_DAY_ABBR[local.weekday()]} {local.day} {_MONTH_ABBR[local.month - 1]} "
            f"{local:%H:%M}-{end:%H:%M}")


def fmt_span(delta: timedelta) -> str:
    """'2 hours', '1 day', '45 minutes', '20 seconds'."""
    seconds = max(0, round(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and (seconds % size == 0 or seconds >= 3 * size or unit == "minute"):
            n = round(seconds / size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
