"""Shifts on a real Synapse in an encrypted room: reminders (DM + room post), .ics, stand-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar
from nio.crypto.attachments import decrypt_attachment

from .botproc import BotProcess
from .people import contains
from .test_bot_basics import ask, pod_with

OFFSET_S = 20  # reminder this many seconds before the shift starts

SHIFTS = f"""
[shifts]
reminder_offsets_hours = [{OFFSET_S / 3600!r}]
understaffed_alert_hours = 0
late_grace_minutes = 5
"""


@pytest.fixture
async def bot(synapse, tmp_path):
    proc = await BotProcess.create(synapse, tmp_path / "bot", f"bot-{tmp_path.name[-12:]}",
                                   extra_sections=SHIFTS)
    await proc.start()
    yield proc
    await proc.stop()


def is_file(event) -> bool:
    return event.source.get("content", {}).get("msgtype") == "m.file"


async def open_dm_with_bot(person, bot):
    """A direct chat the person opens with the bot; the bot then uses it for its DMs to them."""
    dm = await person.create_room("", invite=[bot.user_id], is_direct=True)
    await person._sync_until(lambda: bot.user_id in person.client.rooms[dm].users, 30, "bot join")
    await ask(person, dm, "!help", bot)
    return dm


async def test_reminders_ics_and_standin_in_an_encrypted_room(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    dm = await open_dm_with_bot(alice, bot)

    # A shift starting in well under two minutes; its reminder is OFFSET_S seconds before.
    start = (datetime.now(UTC) + timedelta(seconds=OFFSET_S + 40)).replace(second=0, microsecond=0) \
        + timedelta(minutes=1)
    end = start + timedelta(hours=1)
    reply = await ask(alice, room, f"!shift add Quick check {start:%Y-%m-%d %H:%M}-{end:%H:%M} "
                                   "at Hall need 1", bot)
    assert "S1 Quick check" in reply.body and "1 person needed" in reply.body
    assert "You're on" in (await ask(alice, room, "!signup S1", bot)).body

    # A later shift for the stand-in hand-over.
    later = start + timedelta(days=1)
    await ask(alice, room, f"!shift add Van run {later:%Y-%m-%d} 10:00-12:00 need 1", bot)
    await ask(alice, room, f"!signup S2 {later:%Y-%m-%d}", bot)
    asked = await ask(alice, room, f"!standin S2 {later:%Y-%m-%d}", bot)
    assert "!cover R1" in asked.body
    covered = await ask(bob, room, "!cover R1", bot)
    assert "in place of" in covered.body
    released = await alice.wait_for(dm, contains("released"), 60, sender=bot.user_id)
    assert bob.user_id in released.body and released.decrypted

    # The calendar file: uploaded encrypted, downloads and decrypts to the two shifts.
    await alice.send(room, "!shifts ics")
    file_event = await alice.wait_for(room, is_file, 60, sender=bot.user_id)
    info = file_event.source["content"]["file"]
    download = await alice.client.download(mxc=info["url"])
    data = decrypt_attachment(download.body, info["key"]["k"], info["hashes"]["sha256"], info["iv"])
    events = sorted(Calendar.from_ical(data).walk("VEVENT"), key=lambda e: e.decoded("dtstart"))
    assert [str(e["summary"]) for e in events] == ["S1 Quick check", "S2 Van run"]
    assert events[0].decoded("dtstart") == start
    assert str(events[0]["location"]) == "Hall"
    assert bob.user_id in str(events[1]["description"])  # the stand-in took the place

    # The reminders: a DM to the person signed up and a post in the room, both decrypted.
    wait = (start - datetime.now(UTC)).total_seconds() + 30
    reminder = await alice.wait_for(dm, contains("Quick check"), wait, sender=bot.user_id)
    assert reminder.body.startswith("Reminder:") and "starts in" in reminder.body
    assert reminder.decrypted
    post = await bob.wait_for(room, contains("S1 Quick check** starts in"), 30, sender=bot.user_id)
    assert alice.user_id in post.body and post.decrypted
    raw = await bob.raw_event(room, post.event_id)
    assert raw["type"] == "m.room.encrypted"
    assert datetime.now(UTC) >= start - timedelta(seconds=OFFSET_S + 2)
    assert "scheduled shift_dm" in bot.log_text()
