"""The tool library's rules, pure: what `!lend` means, due dates, and when loan reminders fall.

No I/O and no clock. A loan is due back on a date in the pod's time zone; its borrower is reminded
at REMINDER_TIME (room-local) the day before and on the day. The scheduler records each reminder
once (`sent_reminders`), as it does for shifts, so each goes out exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_LOAN_DAYS = 7
MAX_LOAN_DAYS = 365
MAX_NAME = 80
MAX_NOTES = 300
REMINDER_TIME = time(9, 0)
DAY_BEFORE, ON_THE_DAY = "day-before", "on-the-day"
_FOR = re.compile(r"\s+for\s+(\d{1,3})\s*(day|days|d|week|weeks|w)\s*$", re.IGNORECASE)


class LendError(ValueError):
    pass


@dataclass(frozen=True)
class Lending:
    name: str
    loan_days: int
    notes: str | None


def parse_lend(text: str) -> Lending:
    """`cordless drill for 2 weeks: bring it back charged` -> name, days, notes."""
    head, colon, notes = text.partition(":")
    head = " ".join(head.split())
    days = DEFAULT_LOAN_DAYS
    found = _FOR.search(" " + head)
    if found:
        days = int(found.group(1)) * (7 if found.group(2).lower().startswith("w") else 1)
        head = (" " + head)[:found.start()].strip()
    if not head:
        raise LendError("Say what you can lend, like: cordless drill for 7 days")
    if len(head) > MAX_NAME:
        raise LendError(f"Keep the item's name under {MAX_NAME} characters; put more after a colon.")
    if not 1 <= days <= MAX_LOAN_DAYS:
        raise LendError(f"A loan can last 1 to {MAX_LOAN_DAYS} days.")
    notes = " ".join(notes.split()) if colon else ""
    if len(notes) > MAX_NOTES:
        raise LendError(f"Keep the notes under {MAX_NOTES} characters.")
    return Lending(head, days, notes or None)


def due_on(now: datetime, zone: ZoneInfo, loan_days: int) -> date:
    return now.astimezone(zone).date() + timedelta(days=loan_days)


def reminder_times(due: date, zone: ZoneInfo) -> list[tuple[str, datetime]]:
    """The two reminders of a loan due back on `due`, as aware moments."""
    def at(day: date) -> datetime:
        return datetime.combine(day, REMINDER_TIME, tzinfo=zone)

    return [(DAY_BEFORE, at(due - timedelta(days=1))), (ON_THE_DAY, at(due))]
