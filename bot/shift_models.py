"""Plain data for shifts, sign-ups, stand-in requests and scheduled sends. No I/O here."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from bot.schedule_rules import ShiftWhen

# A sign-up row with this occurrence key means "every date" (a standing sign-up).
ALL_DATES = "*"


def occurrence_key(start: datetime) -> str:
    """The stable name of one occurrence: its start in UTC, ISO format."""
    return start.astimezone(UTC).isoformat(timespec="seconds")


class Shift(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    room_id: str
    number: int  # per room, shown as S3
    title: str
    place: str | None
    needed: int
    when: ShiftWhen
    active: bool
    created_by: str
    created_at: datetime

    @property
    def label(self) -> str:
        return f"S{self.number}"


class Signup(BaseModel):
    model_config = ConfigDict(frozen=True)

    shift_id: int
    occurrence: str  # occurrence_key(...) or ALL_DATES
    person: str
    present: bool  # False: withdrawn from this one date of a standing sign-up


class StandinRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    room_id: str
    number: int  # per room, shown as R2
    shift_id: int
    occurrence: str
    requester: str
    status: str  # open, covered, withdrawn
    covered_by: str | None = None
