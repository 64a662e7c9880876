"""The tool library through the real app, storage and scheduler: lending, asking the owner,
reminders exactly once across a restart, refusals, and !forgetme."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from bot import library

from .conftest import POD, Clock
from .test_scheduler import Rig, dms

ALICE, BOB = "@alice:test", "@bob:test"
BOB_DM = "!dm-bob:test"

# The rig's clock: Sunday 22 Nov 2026, 12:00 UTC (the pod's time zone is UTC).


@pytest.fixture
async def rig(tmp_path):
    r = await Rig(tmp_path / "bot.db", Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))).start()
    yield r
    await r.stop()


async def owner_says(pod, text):
    sent = await pod.say(BOB, text, room=BOB_DM, direct=True)
    return sent


@pytest.mark.parametrize(("text", "name", "days", "notes"), [
    ("cordless drill for 7 days: bring it back charged", "cordless drill", 7, "bring it back charged"),
    ("ladder", "ladder", library.DEFAULT_LOAN_DAYS, None),
    ("tent for 2 weeks", "tent", 14, None),
    ("bike pump FOR 3 d", "bike pump", 3, None),
])
def test_lend_reads_name_days_and_notes(text, name, days, notes):
    assert library.parse_lend(text) == library.Lending(name, days, notes)


@pytest.mark.parametrize("text", ["for 3 days", "drill for 0 days", "x" * 100, "drill for 999 days"])
def test_unusable_lending_is_refused_with_a_reason(text):
    with pytest.raises(library.LendError):
        library.parse_lend(text)


async def test_lend_borrow_yes_tells_both_and_reminds_exactly_once_across_a_restart(rig):
    pod = rig.pod
    listed = await pod.reply_to(BOB, "!lend cordless drill for 3 days: bring it back charged")
    assert "Listed **item 1**: cordless drill, for up to 3 days" in listed
    assert "item 1** cordless drill (bring it back charged)" in await pod.reply_to(ALICE, "!items dril")
    assert "Nothing matching 'saw'" in await pod.reply_to(ALICE, "!items saw")
    sent = await pod.say(ALICE, "!borrow 1")
    [ask] = dms(sent, BOB)
    assert "would like to borrow your **item 1** (cordless drill)" in ask
    assert "asked the owner" in sent[-1].message.body
    assert "already lent or asked for" in await pod.reply_to(ALICE, "!borrow 1")
    sent = await owner_says(pod, "yes")
    [told] = dms(sent, ALICE)
    assert "will lend you **item 1**" in told and "due back on Wednesday 25 November" in told
    assert "due back on Wednesday 25 November" in sent[-1].message.body
    # The day before at 09:00 the borrower is reminded; once, whatever happens after.
    day_before = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert dms(await rig.run(day_before - timedelta(minutes=1)), ALICE) == []
    rig.clock.now = day_before
    await rig.scheduler.run_due()  # queued, but the bot stops before delivering
    await rig.restart()
    [reminder] = dms(await rig.run(day_before + timedelta(minutes=1)), ALICE)
    assert "**item 1** (cordless drill) is due back tomorrow" in reminder
    await rig.restart()
    assert await rig.run(day_before + timedelta(minutes=2)) == []
    [on_the_day] = dms(await rig.run(datetime(2026, 11, 25, 9, 0, tzinfo=UTC)), ALICE)
    assert "is due back today" in on_the_day
    await rig.restart()
    assert await rig.run(datetime(2026, 11, 25, 9, 30, tzinfo=UTC)) == []
    # The owner closes it; the item is available again and nothing more is sent.
    rig.pod._events = count(1000)  # the restarted pod's event ids must not repeat handled ones
    assert "back and available again" in await rig.pod.reply_to(BOB, "!returned 1")
    assert "available" in await rig.pod.reply_to(ALICE, "!items")
    async with rig.pod.storage.transaction() as tx:
        sends = await tx.shifts.scheduled_records("loan_reminder")
    assert sorted((s.offset_key, s.person, s.outcome) for s in sends) == [
        (library.DAY_BEFORE, ALICE, "sent"), (library.ON_THE_DAY, ALICE, "sent")]


async def test_a_refused_borrow_tells_the_borrower_politely_and_lends_nothing(rig):
    pod = rig.pod
    await pod.say(BOB, "!lend ladder")
    await pod.say(ALICE, "!borrow 1")
    sent = await owner_says(pod, "no")
    [told] = dms(sent, ALICE)
    assert "can't lend it this time, so nothing is lent" in told and BOB not in told
    assert "declined politely" in sent[-1].message.body
    assert "· available" in await pod.reply_to(ALICE, "!items")
    assert "not lent out" in await pod.reply_to(BOB, "!returned 1")
    # No reminder ever goes out for it.
    assert dms(await rig.run(datetime(2026, 11, 30, 9, 0, tzinfo=UTC)), ALICE) == []


async def test_only_the_owner_closes_a_loan_and_nobody_borrows_their_own(rig):
    pod = rig.pod
    await pod.say(BOB, "!lend ladder")
    assert "your own" in await pod.reply_to(BOB, "!borrow 1")
    await pod.say(ALICE, "!borrow 1")
    await owner_says(pod, "yes 1")
    assert "Only the owner" in await pod.reply_to(ALICE, "!returned 1")
    assert "no item 9" in await pod.reply_to(ALICE, "!borrow 9")
    assert "Usage: `!borrow" in await pod.reply_to(ALICE, "!borrow drill")


async def test_a_yes_in_a_dm_without_a_loan_request_is_left_to_the_private_request(rig):
    pod = rig.pod
    pod.transport.rooms[POD] = [ALICE, BOB]
    sent = await owner_says(pod, "yes")
    assert "private" in sent[-1].message.body.lower()  # the private-request conversation began


async def test_forgetme_removes_the_owners_items_and_the_names_on_loans(rig):
    pod = rig.pod
    await pod.say(BOB, "!lend tent for 2 weeks: the blue one, call me first")
    await pod.say(ALICE, "!borrow 1")
    await owner_says(pod, "yes")
    await owner_says(pod, "!forgetme")
    await owner_says(pod, "yes")
    async with pod.storage.transaction() as tx:
        named = {t: n for t, n in (await tx.privacy.table_rows_mentioning(BOB)).items() if n}
        notes = await tx.privacy.table_rows_mentioning("call me first")
    assert named == {} and notes["items"] == 0
    assert "Nothing" in await pod.reply_to(ALICE, "!items")
    # The loan is closed: no reminder for an item whose owner is gone.
    assert dms(await rig.run(datetime(2026, 12, 5, 9, 0, tzinfo=UTC)), ALICE) == []
