"""Shift commands through the real app, storage and handlers, with a fake transport and clock."""

from __future__ import annotations

from datetime import date

import pytest
from icalendar import Calendar

from bot.commands.shifts import parse_date_arg

from .conftest import POD

ALICE, BOB, CAROL, COORD = "@alice:test", "@bob:test", "@carol:test", "@coord:test"

# The pod fixture's clock: Sunday 22 Nov 2026, 12:00 UTC.


@pytest.fixture
def coord(pod):
    pod.transport.power_levels[COORD] = 50
    return pod


@pytest.mark.parametrize(("when", "expected"), [
    ("every saturday 10-13", "Every Saturday 10:00-13:00 UTC, next Sat 28 Nov"),
    ("saturday 10:00-13:00", "Once: Sat 28 Nov 2026 10:00-13:00 UTC"),
    ("every other tuesday 18:00 for 2h", "Every other Tuesday 18:00-20:00 UTC, next Tue 24 Nov"),
    ("first monday of the month 19:00", "First Monday of the month 19:00-21:00 UTC, next Mon 7 Dec"),
    ("2026-12-05 09:00-12:00", "Once: Sat 5 Dec 2026 09:00-12:00 UTC"),
    ("tomorrow 6pm", "Once: Mon 23 Nov 2026 18:00-20:00 UTC"),
])
async def test_add_echoes_its_reading_of_the_time(pod, when, expected):
    body = await pod.reply_to(ALICE, f"!shift add Food run {when} need 3")
    assert "S1 Food run" in body
    assert expected in body
    assert "3 people needed" in body


async def test_only_a_repeating_shift_offers_signing_up_for_every_date(pod):
    once = await pod.reply_to(ALICE, "!shift add Food run saturday 10-13 need 2")
    assert "`!signup S1`" in once and "all" not in once.split("Sign up", 1)[1]
    repeating = await pod.reply_to(ALICE, "!shift add Food run every saturday 10-13 need 2")
    assert "`!signup S2` (next date) or `!signup S2 all` (every date)" in repeating


@pytest.mark.parametrize("alias", ["Etc/UTC", "etc/utc", "Etc/Universal"])
async def test_utc_by_any_name_is_shown_as_utc(coord, alias):
    await coord.say(COORD, f"!settings timezone {alias}")
    assert "`timezone`: **UTC**" in await coord.reply_to(ALICE, "!settings")
    body = await coord.reply_to(COORD, "!shift add Food run every saturday 10-13 need 2")
    assert "10:00-13:00 UTC" in body and "Etc/" not in body


def test_utc_aliases_in_the_config_read_as_utc():
    from bot.config import BotSettings

    assert BotSettings(timezone="Etc/UTC").timezone == "UTC"
    assert BotSettings(timezone="Europe/Berlin").timezone == "Europe/Berlin"


async def test_add_echo_uses_the_rooms_time_zone_and_place(coord):
    assert "Europe/Berlin" in await coord.reply_to(COORD, "!settings timezone europe/berlin")
    body = await coord.reply_to(
        ALICE, "!shift add Food distribution every saturday 10-13 at Community Hall need 3")
    assert ("Every Saturday 10:00-13:00 Europe/Berlin, next Sat 28 Nov, at Community Hall, "
            "3 people needed") in body


async def test_unreadable_time_gets_examples(pod):
    body = await pod.reply_to(ALICE, "!shift add Van run whenever you like")
    assert "I can read things like" in body and "every saturday 10-13" in body
    async with pod.storage.transaction() as tx:
        assert await tx.shifts.list(POD) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("!shift", "Usage: `!shift"),
    ("!shift frobnicate x", "Say what to do: add, edit or cancel"),
    ("!signup S9", "There is no shift S9"),
    ("!signup S1 31 feb", "couldn't read"),
    ("!signup S1 2026-11-29", "doesn't happen on"),
    ("!shifts sometimes", "Say week, month, all or ics"),
    ("!cover Rx", "stand-in request number"),
    ("!renew", "Usage: `!renew"),
    ("!settings colour blue", "There is no setting"),
])
async def test_bad_input_gets_a_friendly_usage_reply(pod, text, expected):
    await pod.say(ALICE, "!shift add Food run every saturday 10-13 need 2")
    assert expected in await pod.reply_to(ALICE, text)


async def test_signup_list_and_withdraw(pod):
    await pod.say(ALICE, "!shift add Food run every saturday 10-13 need 2")
    assert "1 of 2 signed up" in await pod.reply_to(ALICE, "!signup S1")
    assert "already on" in await pod.reply_to(ALICE, "!signup food run")
    assert "every date" in await pod.reply_to(BOB, "!signup S1 all")
    body = await pod.reply_to(CAROL, "!shifts month")
    lines = body.splitlines()
    assert "Sat 28 Nov" in lines[1] and "@alice:test, @bob:test" in lines[1] and "full" in lines[1]
    assert "Sat 5 Dec" in lines[2] and "on: @bob:test" in lines[2] and "1 more needed" in lines[2]
    assert "You're off" in await pod.reply_to(BOB, "!withdraw S1 5 dec")
    body = await pod.reply_to(CAROL, "!shifts month")
    assert "Sat 5 Dec 10:00-13:00 UTC · on: nobody yet · 2 more needed" in body
    assert "Sat 12 Dec 10:00-13:00 UTC · on: @bob:test" in body
    assert "all dates" in await pod.reply_to(BOB, "!withdraw S1")
    assert "@bob:test" not in await pod.reply_to(CAROL, "!shifts month")


async def test_standin_and_cover_hand_over_and_tell_the_requester(pod):
    await pod.say(ALICE, "!shift add Food run every saturday 10-13 need 2")
    await pod.say(ALICE, "!signup S1 all")
    assert "aren't on" in await pod.reply_to(BOB, "!standin S1 28 nov")
    body = await pod.reply_to(ALICE, "!standin S1 28 nov")
    assert "needs a stand-in" in body and "`!cover R1`" in body
    assert "your own request" in await pod.reply_to(ALICE, "!cover R1")
    sent = await pod.say(BOB, "!cover R1")
    room = [o for o in sent if o.room_id == POD]
    dms = [o for o in sent if o.user_id == ALICE]
    assert len(room) == 1 and "in place of @alice:test" in room[0].message.body
    assert len(dms) == 1 and "released" in dms[0].message.body and "@bob:test" in dms[0].message.body
    assert "already covered" in await pod.reply_to(CAROL, "!cover R1")
    body = await pod.reply_to(CAROL, "!shifts month")
    first, second = body.splitlines()[1:3]
    assert "Sat 28 Nov" in first and "on: @bob:test ·" in first
    assert "Sat 5 Dec" in second and "on: @alice:test ·" in second


async def test_coordinator_only_commands_refuse_others_clearly(coord):
    await coord.say(ALICE, "!shift add Food run every saturday 10-13 need 2")
    for text in ("!shift cancel S1", "!shift edit S1 need 5", "!noshow @bob:test S1 28 nov",
                 "!settings timezone Europe/Berlin"):
        assert "A coordinator is needed" in await coord.reply_to(ALICE, text), text
    assert "4 people needed" in await coord.reply_to(COORD, "!shift edit S1 need 4")
    assert "1 no-show" in await coord.reply_to(COORD, "!noshow @bob:test S1 28 nov")
    await coord.say(BOB, "!signup S1 5 dec")
    sent = await coord.say(COORD, "!shift cancel S1 5 dec")
    assert "cancelled" in sent[0].message.body and sent[0].message.mentions == (BOB,)
    assert "Sat 5 Dec" not in await coord.reply_to(BOB, "!shifts month")
    assert "all dates" in await coord.reply_to(COORD, "!shift cancel S1")
    assert "No shifts here yet" in await coord.reply_to(BOB, "!shifts")


async def test_settings_list_change_and_reset(coord):
    body = await coord.reply_to(ALICE, "!settings")
    assert "`timezone`: **UTC** (default)" in body
    assert "not a time zone" in await coord.reply_to(COORD, "!settings timezone Mars/Olympus")
    await coord.say(COORD, "!settings digest off")
    body = await coord.reply_to(ALICE, "!settings digest")
    assert "**off**" in body and "(default)" not in body
    assert "**on**" in await coord.reply_to(COORD, "!settings digest default")
    async with coord.storage.transaction() as tx:
        assert "digest" not in await tx.settings.room(POD)


async def test_ics_attachment_parses_with_the_expected_events(pod):
    await pod.say(ALICE, "!shift add Food run every saturday 10-13 at Hall need 2")
    await pod.say(BOB, "!signup S1")
    sent = await pod.say(ALICE, "!shifts ics")
    assert len(sent) == 1 and sent[0].attachment is not None
    assert sent[0].attachment.mimetype == "text/calendar"
    cal = Calendar.from_ical(sent[0].attachment.data)
    events = [c for c in cal.walk("VEVENT")]
    assert len(events) == 13  # Saturdays in the next 92 days
    first = min(events, key=lambda e: e.decoded("dtstart"))
    assert str(first["summary"]) == "S1 Food run" and str(first["location"]) == "Hall"
    assert first.decoded("dtstart").isoformat() == "2026-11-28T10:00:00+00:00"
    assert first.decoded("dtend").isoformat() == "2026-11-28T13:00:00+00:00"
    assert "@bob:test" in str(first["description"])


def test_dates_as_people_type_them():
    today = date(2026, 11, 22)  # a Sunday
    assert parse_date_arg("2026-12-05", today) == date(2026, 12, 5)
    assert parse_date_arg("5 dec", today) == date(2026, 12, 5)
    assert parse_date_arg("Dec 5th", today) == date(2026, 12, 5)
    assert parse_date_arg("5.12.", today) == date(2026, 12, 5)
    assert parse_date_arg("saturday", today) == date(2026, 11, 28)
    assert parse_date_arg("Sat 28 Nov", today) == date(2026, 11, 28)
    assert parse_date_arg("tomorrow", today) == date(2026, 11, 23)
    assert parse_date_arg("3 jan", today) == date(2027, 1, 3)  # closest to today
    assert parse_date_arg("15 nov", today) == date(2026, 11, 15)  # last week, for !noshow
    assert parse_date_arg("31 feb", today) is None
    assert parse_date_arg("soon", today) is None


async def test_a_standin_for_a_cancelled_date_cannot_be_covered(coord):
    await coord.say(ALICE, "!shift add Food run every saturday 10-13 need 2")
    await coord.say(ALICE, "!signup S1 28 nov")
    await coord.say(ALICE, "!standin S1 28 nov")
    await coord.say(COORD, "!shift cancel S1 28 nov")
    assert "no longer needed" in await coord.reply_to(BOB, "!cover R1")
    assert "already closed" in await coord.reply_to(CAROL, "!cover R1")


async def test_members_can_add_only_a_few_open_shifts_per_room(coord):
    cap = coord.app.config.shifts.member_open_shifts_per_room
    assert cap == 5
    assert "Added shift" in await coord.reply_to(ALICE, "!shift add Pick-up tomorrow 6pm")
    coord.clock.advance(days=2)  # a one-off whose date has passed is no longer open
    for n in range(cap):
        assert "Added shift" in await coord.reply_to(ALICE if n % 2 else BOB, f"!shift add Run {n} "
                                                     "every saturday 10-13")
    refused = await coord.reply_to(CAROL, "!shift add One too many every sunday 10-13")
    assert "already has 5 open shifts" in refused and "A coordinator can add this one" in refused
    assert "One too many" not in await coord.reply_to(CAROL, "!shifts all")
    # Coordinators are not limited, and a cancelled shift frees a place.
    assert "Added shift" in await coord.reply_to(COORD, "!shift add Coordinated every monday 9-10")
    await coord.say(COORD, "!shift cancel S2")
    assert "Added shift" in await coord.reply_to(CAROL, "!shift add Now it fits every sunday 10-13")
