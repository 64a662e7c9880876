"""Scheduled sends with an injected clock: reminders, DST, exactly once, misfires, expiry, digest."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest

from bot.app import App
from bot.config import BotConfig, ShiftsConfig
from bot.models import PostStatus
from bot.scheduler import Scheduler
from bot.storage import Storage

from .conftest import POD, Clock, FakeTransport, Pod

ALICE, BOB, CAROL, COORD = "@alice:test", "@bob:test", "@carol:test", "@coord:test"


class Rig:
    """A pod plus its scheduler, restartable on the same database file."""

    def __init__(self, path, clock: Clock, shifts: ShiftsConfig | None = None) -> None:
        self.path = path
        self.clock = clock
        self.config = BotConfig(shifts=shifts or ShiftsConfig())
        self.pod: Pod | None = None
        self.scheduler: Scheduler | None = None

    async def start(self) -> Rig:
        storage = await Storage.open(self.path)
        transport = FakeTransport(power_levels={COORD: 50})
        app = App(storage, self.config, transport, clock=self.clock)
        app.ready.set()
        self.pod = Pod(app, storage, transport, self.clock)
        self.scheduler = Scheduler(app)
        return self

    async def stop(self) -> None:
        await self.pod.app.stop()
        await self.pod.storage.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def run(self, at: datetime | None = None):
        """Run what is due (at the clock's time unless given) and deliver; return what was sent."""
        if at is not None:
            self.clock.now = at
        before = len(self.pod.transport.sent)
        await self.scheduler.run_due()
        await self.pod.app.deliver_pending()
        return self.pod.transport.sent[before:]


@pytest.fixture
async def rig(tmp_path):
    r = await Rig(tmp_path / "bot.db", Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))).start()
    yield r
    await r.stop()


def dms(sent, person):
    return [o.message.body for o in sent if o.user_id == person]


def room(sent):
    return [o.message.body for o in sent if o.room_id == POD]


async def test_reminders_go_out_at_each_offset_as_dm_and_room_post(rig):
    pod = rig.pod
    await pod.say(ALICE, "!shift add Food run 2026-11-28 10:00-13:00 at Hall need 3")
    await pod.say(ALICE, "!signup S1")
    await pod.say(BOB, "!signup S1")
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert await rig.run(start - timedelta(hours=24, seconds=1)) == []
    sent = await rig.run(start - timedelta(hours=24))
    assert len(dms(sent, ALICE)) == 1 and len(dms(sent, BOB)) == 1
    assert "starts in 1 day" in dms(sent, ALICE)[0] and "!standin S1 2026-11-28" in dms(sent, ALICE)[0]
    [post] = room(sent)
    assert "On: @alice:test, @bob:test" in post and "Still needed: 1" in post
    assert post == "**S1 Food run** starts in 1 day: Sat 28 Nov 10:00-13:00 UTC at Hall. " \
        "On: @alice:test, @bob:test. Still needed: 1. Sign up with `!signup S1 2026-11-28`"
    assert await rig.run(start - timedelta(hours=3)) == []
    sent = await rig.run(start - timedelta(hours=2))
    assert "starts in 2 hours" in dms(sent, BOB)[0] and len(sent) == 3


async def test_weekly_shift_keeps_its_local_hour_across_dst(rig):
    pod = rig.pod
    rig.clock.now = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)  # Berlin switches to CEST on 28 Mar
    pod.transport.power_levels[COORD] = 50
    await pod.say(COORD, "!settings timezone Europe/Berlin")
    await pod.say(ALICE, "!shift add Food run every saturday 10:00-13:00 need 1")
    await pod.say(ALICE, "!signup S1 all")
    # 2 hours before 10:00 CET (09:00 UTC) and 10:00 CEST (08:00 UTC).
    for local_start in (datetime(2027, 3, 20, 9, 0, tzinfo=UTC), datetime(2027, 3, 27, 9, 0, tzinfo=UTC),
                        datetime(2027, 4, 3, 8, 0, tzinfo=UTC)):
        remind = local_start - timedelta(hours=2)
        assert dms(await rig.run(remind - timedelta(minutes=1)), ALICE) == []
        [dm] = dms(await rig.run(remind), ALICE)
        assert "10:00-13:00 Europe/Berlin" in dm and "starts in 2 hours" in dm


async def test_reminders_are_sent_exactly_once_across_a_restart(rig):
    pod = rig.pod
    await pod.say(ALICE, "!shift add Food run 2026-11-28 10:00-13:00 need 1")
    await pod.say(ALICE, "!signup S1")
    due_at = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    rig.clock.now = due_at
    await rig.scheduler.run_due()  # recorded and queued, but the bot dies before delivering
    await rig.restart()
    sent = await rig.run(due_at + timedelta(minutes=1))  # new app and scheduler, same database
    assert len(dms(sent, ALICE)) == 1 and len(room(sent)) == 1
    await rig.restart()
    assert await rig.run(due_at + timedelta(minutes=2)) == []
    async with rig.pod.storage.transaction() as tx:
        records = await tx.shifts.scheduled_records()
    keys = [(r.kind, r.offset_key, r.person) for r in records]
    assert sorted(keys) == sorted([("shift_room", "7200", ""), ("shift_dm", "7200", ALICE)])


async def test_a_missed_reminder_is_sent_late_within_the_grace_period(rig):
    pod = rig.pod
    await pod.say(ALICE, "!shift add Food run 2026-11-28 10:00-13:00 need 1")
    await pod.say(ALICE, "!signup S1")
    await rig.run(datetime(2026, 11, 28, 7, 0, tzinfo=UTC))  # last run before going down
    await rig.restart()
    sent = await rig.run(datetime(2026, 11, 28, 8, 40, tzinfo=UTC))  # 40 min late, grace 60
    [dm] = dms(sent, ALICE)
    assert "starts in 80 minutes" in dm


async def test_a_reminder_missed_by_more_than_the_grace_is_skipped_and_logged(rig, caplog):
    pod = rig.pod
    await pod.say(ALICE, "!shift add Food run 2026-11-28 10:00-13:00 need 1")
    await pod.say(ALICE, "!signup S1")
    await rig.run(datetime(2026, 11, 27, 10, 0, tzinfo=UTC))  # the 24h reminder went out
    await rig.restart()
    caplog.set_level(logging.WARNING, logger="bot.scheduler")
    sent = await rig.run(datetime(2026, 11, 28, 9, 30, tzinfo=UTC))  # 2h reminder 90 min late
    assert sent == []
    assert any("skipped shift_dm" in r.getMessage() for r in caplog.records)
    async with rig.pod.storage.transaction() as tx:
        outcomes = {(r.kind, r.offset_key): r.outcome for r in await tx.shifts.scheduled_records()}
    assert outcomes[("shift_dm", "7200")] == "skip" and outcomes[("shift_dm", "86400")] == "sent"
    assert await rig.run(datetime(2026, 11, 28, 9, 31, tzinfo=UTC)) == []


async def test_reminder_times_before_the_shift_existed_are_skipped_quietly(rig, caplog):
    caplog.set_level(logging.WARNING, logger="bot.scheduler")
    await rig.pod.say(ALICE, "!shift add Van run tomorrow 10:00")  # 22h ahead: no 24h reminder
    await rig.pod.say(ALICE, "!signup S1")
    assert await rig.run(datetime(2026, 11, 22, 12, 5, tzinfo=UTC)) == []
    assert not caplog.records


async def test_understaffed_alert_48h_before(rig):
    await rig.pod.say(ALICE, "!shift add Food run 2026-11-28 10:00-13:00 need 3")
    await rig.pod.say(ALICE, "!shift add Van run 2026-11-28 15:00-16:00 need 1")
    await rig.pod.say(BOB, "!signup S1")
    await rig.pod.say(BOB, "!signup S2")
    sent = await rig.run(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    [alert] = room(sent)
    assert "S1 Food run" in alert and "still needs 2 more" in alert and "1 of 3" in alert
    assert room(await rig.run(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))) == []  # S2 is staffed


async def test_post_expiry_warning_renewal_and_expiry(rig):
    pod = rig.pod
    await pod.say(ALICE, "!need groceries")
    assert await rig.run(datetime(2026, 12, 4, 11, 0, tzinfo=UTC)) == []
    sent = await rig.run(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))  # 12 days: two days left
    [warning] = dms(sent, ALICE)
    assert "expires in 2 days" in warning and "`!renew #1`" in warning
    assert dms(await rig.run(datetime(2026, 12, 4, 13, 0, tzinfo=UTC)), ALICE) == []  # once
    body = await pod.reply_to(ALICE, "!renew #1", room="!dm-alice:test", direct=True)
    assert "#1** renewed" in body and "Fri 18 Dec" in body
    assert dms(await rig.run(datetime(2026, 12, 7, 12, 0, tzinfo=UTC)), ALICE) == []
    assert dms(await rig.run(datetime(2026, 12, 16, 12, 59, tzinfo=UTC)), ALICE) == []
    [warning] = dms(await rig.run(datetime(2026, 12, 16, 13, 0, tzinfo=UTC)), ALICE)
    sent = await rig.run(datetime(2026, 12, 18, 13, 0, tzinfo=UTC))
    [expired] = dms(sent, ALICE)
    assert "has expired" in expired
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.EXPIRED
    assert "No open needs" in await pod.reply_to(BOB, "!needs")
    assert "renewed" in await pod.reply_to(ALICE, "!renew 1")
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.OPEN


async def test_only_the_poster_or_a_coordinator_may_renew(rig):
    await rig.pod.say(ALICE, "!need groceries")
    assert "Only the person who posted" in await rig.pod.reply_to(BOB, "!renew #1")
    assert "renewed" in await rig.pod.reply_to(COORD, "!renew #1")


async def test_weekly_digest_of_open_needs_and_room_switch(rig):
    pod = rig.pod
    await pod.say(ALICE, "!need groceries")
    await pod.say(BOB, "!need ride to clinic")
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert room(await rig.run(monday - timedelta(minutes=1))) == []
    [digest] = room(await rig.run(monday))
    assert "Open needs this week" in digest and "groceries" in digest and "ride to clinic" in digest
    assert room(await rig.run(monday + timedelta(minutes=5))) == []
    await pod.say(COORD, "!settings digest off")
    assert room(await rig.run(monday + timedelta(days=7))) == []


async def test_next_wake_is_the_next_reminder(rig):
    await rig.pod.say(ALICE, "!shift add Food run 2026-11-23 10:00-13:00 need 1")
    await rig.pod.say(ALICE, "!signup S1")
    rig.clock.now = datetime(2026, 11, 23, 7, 55, tzinfo=UTC)
    assert await rig.scheduler.next_wake() == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    rig.clock.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert await rig.scheduler.next_wake() == rig.clock.now + timedelta(minutes=10)


class RealClock(Clock):
    def __call__(self) -> datetime:
        return datetime.now(UTC)


async def test_apscheduler_wakes_up_and_sends_after_ready(tmp_path):
    """The real APScheduler job with the real clock: a reminder 2 seconds from now."""
    now = datetime.now(UTC)
    start = (now + timedelta(seconds=70)).replace(second=0, microsecond=0)
    offset = start - (now + timedelta(seconds=2))
    rig = Rig(tmp_path / "bot.db", RealClock(now),
              ShiftsConfig(reminder_offsets_hours=[offset.total_seconds() / 3600],
                           understaffed_alert_hours=0))
    await rig.start()
    app = rig.pod.app
    app.ready.clear()
    try:
        await rig.pod.say(ALICE, f"!shift add Quick one {start:%Y-%m-%d %H:%M} need 1")
        await rig.pod.say(ALICE, "!signup S1")
        app.start()
        rig.scheduler.start()
        await asyncio.sleep(0.3)
        assert rig.scheduler.runs == 0  # nothing before the first sync
        app.ready.set()
        async with asyncio.timeout(10):
            while not dms(rig.pod.transport.sent, ALICE):  # noqa: ASYNC110 - polls a fake
                await asyncio.sleep(0.05)
        assert datetime.now(UTC) >= now + timedelta(seconds=2)
        [dm] = dms(rig.pod.transport.sent, ALICE)
        assert "Quick one" in dm
        assert len(room(rig.pod.transport.sent)) >= 1
        # Having run, it planned its next wake-up, and the metric shows when.
        async with asyncio.timeout(10):
            while app.metrics.next_scheduled_wake is None:  # noqa: ASYNC110 - polls a field
                await asyncio.sleep(0.05)
        exposed = generate_latest(app.metrics.registry).decode()
        (line,) = [x for x in exposed.splitlines()
                   if x.startswith("mab_scheduler_next_wake_timestamp_seconds ")]
        assert float(line.split()[1]) > now.timestamp()
    finally:
        await rig.scheduler.shutdown()
        await rig.stop()
