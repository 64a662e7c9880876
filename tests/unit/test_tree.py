"""The phone tree through the real app, storage and scheduler: joining with hours and a backup,
alerts by DM, confirmations by `ok` and 👍, silence escalated to the backup then the caller
exactly once across a restart, status for the caller only, held and urgent calls, the caller's
reports, and the pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot import phone_tree
from bot.config import BotConfig
from bot.messages import Reaction
from bot.scheduler import TREE_PACED, TREE_REACHED, _tree_due, messages_for
from bot.store.tree import Alert, Call

from .conftest import POD, Clock
from .test_scheduler import Rig, dms

ALICE, BOB, CAROL, DAVE, COORD = "@alice:test", "@bob:test", "@carol:test", "@dave:test", "@coord:test"
UTC_ZONE = ZoneInfo("UTC")
NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
_reactions = count(1)


@pytest.fixture
async def rig(tmp_path):
    r = await Rig(tmp_path / "bot.db", Clock(NOON)).start()
    r.pod.transport.rooms[POD] = [ALICE, BOB, CAROL, DAVE, COORD]
    yield r
    await r.stop()


async def react(pod, sender, event_id, key, room=POD, direct=False):
    return await pod.receive(Reaction(f"$re{next(_reactions)}", room, sender, event_id, key,
                                      direct, pod.clock()))


def event_of(pod, out):
    """The event id the fake transport gave a message it sent."""
    return f"$sent{pod.transport.sent.index(out) + 1}"


async def dm(pod, person, text):
    return await pod.say(person, text, room=f"!dm-{person}", direct=True)


async def tree_of_three(rig):
    """alice, bob (backup: carol) and carol on the tree; the coordinator alerts them all."""
    pod = rig.pod
    for person in (ALICE, BOB, CAROL):
        assert "on the phone tree" in await pod.reply_to(person, "!tree join")
    assert "asked to reach you first" in await pod.reply_to(BOB, f"!tree backup {CAROL}")
    started = await pod.reply_to(COORD, "!alert Eviction at 14 Elm St at 8am, come if you can")
    assert "Calling 3 people" in started and "10 minutes" in started
    return await rig.run()


async def test_alert_reaches_everyone_on_the_tree_once_and_tells_the_caller(rig):
    sent = await tree_of_three(rig)
    for person in (ALICE, BOB, CAROL):
        [call] = dms(sent, person)
        assert "Phone tree alert** from @coord:test" in call and "14 Elm St" in call
    assert not dms(sent, COORD) and not [o for o in sent if o.room_id == POD]
    [reached] = dms(await rig.run(), COORD)
    assert "all 3 people reached in 0.0 s" in reached
    assert await rig.run() == []


async def test_silence_goes_to_the_backup_then_the_caller_exactly_once_across_a_restart(rig):
    pod = rig.pod
    sent = await tree_of_three(rig)
    await rig.run()
    assert "Thank you" in dms(await dm(pod, ALICE, "OK"), ALICE)[0]
    [carol_call] = [o for o in sent if o.user_id == CAROL]
    assert "Thank you" in dms(await react(pod, CAROL, event_of(pod, carol_call), "👍🏽",
                                          room=f"!dm-{CAROL}", direct=True), CAROL)[0]
    assert await rig.run(NOON + timedelta(minutes=9)) == []
    [to_backup] = dms(await rig.run(NOON + timedelta(minutes=10)), CAROL)
    assert "@bob:test, who named you as their backup, has not confirmed" in to_backup
    await rig.restart()
    assert await rig.run() == []
    [to_caller] = dms(await rig.run(NOON + timedelta(minutes=20)), COORD)
    assert "@bob:test has not confirmed your alert after 20 minutes" in to_caller
    assert "told their backup, @carol:test" in to_caller
    await rig.restart()
    assert await rig.run(NOON + timedelta(hours=1)) == []
    pod = rig.pod
    pod._events = count(100)  # event ids the first run of the pod has not used

    refused = await pod.reply_to(BOB, "!alert status")
    assert "A coordinator is needed" in refused and "alice" not in refused
    status = await pod.say(COORD, "!alert status")
    assert [o.message.body for o in status if o.room_id == POD] == [
        "I have sent you the status privately."]
    [text] = dms(status, COORD)
    assert "2 of 3 confirmed" in text
    assert "Confirmed: @alice:test, @carol:test" in text
    assert "Escalated (silent; backup or you told): @bob:test" in text

    late = await dm(pod, BOB, "ok")
    [now_confirmed, everyone] = dms(late, COORD)
    assert "@bob:test has now confirmed" in now_confirmed
    assert "everyone confirmed your alert: 3 people, all reached within 0.0 s" in everyone
    assert "all confirmed within 1 h" in everyone
    assert "(closed)" in dms(await pod.say(COORD, "!alert status"), COORD)[0]


async def test_a_thumb_on_the_alert_in_the_pod_room_confirms_too(rig):
    pod = rig.pod
    for person in (ALICE, BOB):
        await pod.say(person, "!tree join")
    await pod.say(COORD, "!alert Food bank van at noon")
    await rig.run()
    alert_command = "$ev3"  # the coordinator's !alert, after the two joins
    sent = await react(pod, ALICE, alert_command, "👍")
    assert "Thank you" in dms(sent, ALICE)[0]
    assert await react(pod, ALICE, alert_command, "👍") == []  # once is enough
    assert await react(pod, COORD, alert_command, "👍") == []  # not on the tree


async def test_ok_without_a_waiting_call_is_left_to_the_other_conversations(rig):
    sent = await dm(rig.pod, ALICE, "ok")
    assert not any("confirmation is recorded" in o.message.body for o in sent)


async def test_outside_their_hours_a_member_is_called_when_they_begin_unless_urgent(rig):
    pod = rig.pod
    await pod.say(ALICE, "!tree join")
    assert "between 8-9 (UTC)" in await pod.reply_to(DAVE, "!tree join 8-9")
    reply = await pod.reply_to(COORD, "!alert Meeting moved")
    assert "Calling 1 people" in reply and "1 outside their hours" in reply
    sent = await rig.run()
    assert dms(sent, ALICE) and not dms(sent, DAVE)
    assert "On the way" not in dms(await pod.say(COORD, "!alert status"), COORD)[0]
    assert "Outside their hours (called when they begin): @dave:test" in dms(
        await pod.say(COORD, "!alert status"), COORD)[0]
    [held] = dms(await rig.run(datetime(2026, 11, 23, 8, 0, tzinfo=UTC)), DAVE)
    assert "Meeting moved" in held

    assert "Calling 2 people" in await pod.reply_to(COORD, "!alert urgent Fire on Main St")
    sent = await rig.run()
    assert "Fire on Main St" in dms(sent, DAVE)[0]


async def test_only_coordinators_alert_and_bad_input_gets_usage(rig):
    pod = rig.pod
    await pod.say(ALICE, "!tree join")
    assert "A coordinator is needed to send a phone-tree alert" in await pod.reply_to(
        ALICE, "!alert hello")
    assert "Usage:" in await pod.reply_to(COORD, "!alert urgent")
    assert "Usage:" in await pod.reply_to(ALICE, "!tree join 25-3")
    assert "Usage:" in await pod.reply_to(ALICE, "!tree dance")
    assert "not a member of this room" in await pod.reply_to(ALICE, "!tree backup @zed:test")
    assert "send that in the pod room" in await pod.reply_to(
        ALICE, "!tree join", room="!dm-alice", direct=True)
    assert "no phone-tree alert here yet" in await pod.reply_to(COORD, "!alert status")
    assert "You have left the phone tree" in await pod.reply_to(ALICE, "!tree leave")
    assert "Nobody else is on this pod's phone tree" in await pod.reply_to(COORD, "!alert hi")


async def test_settings_choose_the_wait(rig):
    pod = rig.pod
    assert "alert_wait" in await pod.reply_to(COORD, "!settings alert_wait 30s")
    assert "The wait can be 5 seconds to 2 hours" in await pod.reply_to(
        COORD, "!settings alert_wait 1s")
    await pod.say(ALICE, "!tree join")
    assert "30 seconds" in await pod.reply_to(COORD, "!alert Drill")
    await rig.run()
    await rig.run()  # the report that everyone was reached
    [to_caller] = dms(await rig.run(NOON + timedelta(seconds=30)), COORD)
    assert "@alice:test has not confirmed your alert after 30 seconds" in to_caller


async def test_forgetme_takes_a_person_off_every_tree(rig):
    pod = rig.pod
    await pod.say(ALICE, "!tree join")
    await pod.say(BOB, "!tree join")
    await pod.say(BOB, f"!tree backup {ALICE}")
    await pod.say(COORD, "!alert Drill")
    await rig.run()
    async with pod.storage.transaction() as tx:
        counts = await tx.tree.forget(ALICE)
        # Alice's call deleted, and she is no longer Bob's backup on his call either.
        assert counts == {"tree_members": 2, "alert_calls": 2}
        assert [m.backup for m in await tx.tree.members(POD)] == [None]
        mentioning = await tx.privacy.table_rows_mentioning(ALICE)
        assert [mentioning[t] for t in ("tree_members", "alert_calls", "alerts")] == [0, 0, 0]


# ---- the pure rules --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "start", "end"), [("8-22", "8", "22"), ("8:30-21", "8:30", "21"),
                                                    ("22-6", "22", "6"), ("6-24", "6", "0")])
def test_hours_are_read(text, start, end):
    assert str(phone_tree.parse_hours(text)) == f"{start}-{end}"


@pytest.mark.parametrize("text", ["8", "25-3", "8-8", "0-24", "8:75-9", "eight to ten"])
def test_unusable_hours_are_refused(text):
    with pytest.raises(phone_tree.TreeError):
        phone_tree.parse_hours(text)


def test_overnight_hours_and_the_next_call_time():
    night = phone_tree.parse_hours("22-6")
    assert phone_tree.in_hours(night, datetime(2026, 1, 1, 23, 0, tzinfo=UTC), UTC_ZONE)
    assert phone_tree.in_hours(night, datetime(2026, 1, 1, 5, 59, tzinfo=UTC), UTC_ZONE)
    assert not phone_tree.in_hours(night, NOON, UTC_ZONE)
    assert phone_tree.call_time(night, NOON, UTC_ZONE, urgent=False) == datetime(
        2026, 11, 22, 22, 0, tzinfo=UTC_ZONE)
    assert phone_tree.call_time(night, NOON, UTC_ZONE, urgent=True) == NOON
    day = phone_tree.parse_hours("8-9")
    assert phone_tree.call_time(day, NOON, UTC_ZONE, urgent=False) == datetime(
        2026, 11, 23, 8, 0, tzinfo=UTC_ZONE)
    berlin = ZoneInfo("Europe/Berlin")  # 12:00 UTC is 13:00 there
    assert phone_tree.in_hours(phone_tree.parse_hours("13-14"), NOON, berlin)


def test_waits_confirmations_chains_and_durations():
    assert phone_tree.parse_wait("10") == timedelta(minutes=10)
    assert phone_tree.parse_wait("30s") == timedelta(seconds=30)
    assert phone_tree.format_wait(timedelta(seconds=30)) == "30s"
    for bad in ("1s", "3h", "soon"):
        with pytest.raises(phone_tree.TreeError):
            phone_tree.parse_wait(bad)
    assert all(map(phone_tree.is_confirmation, ["ok", "OK!", "okay.", "got it", "👍"]))
    assert not any(map(phone_tree.is_confirmation, ["yes", "ok but I can't come", ""]))
    assert phone_tree.escalation_chain(BOB, CAROL, COORD) == [CAROL, COORD]
    assert phone_tree.escalation_chain(BOB, None, COORD) == [COORD]
    assert phone_tree.escalation_chain(BOB, COORD, COORD) == [COORD]
    wait = timedelta(minutes=10)
    assert phone_tree.escalation_times(NOON, wait, 2) == [NOON + wait, NOON + 2 * wait]
    assert phone_tree.escalation_times(NOON, wait, 2, unreachable=True) == [NOON, NOON + wait]
    assert phone_tree.fmt_took(timedelta(seconds=4.23)) == "4.2 s"
    assert phone_tree.fmt_took(timedelta(seconds=190)) == "3 min 10 s"
    assert phone_tree.fmt_took(timedelta(hours=2, minutes=5)) == "2 h 5 min"


def _alert() -> Alert:
    return Alert(1, POD, COORD, "Eviction", False, 600, "$a", NOON, None)


def _call(n: int, sent: datetime | None) -> Call:
    return Call(n, 1, f"@p{n}:test", NOON, n, 0, None, None, sent, None)


def _paced(calls: list[Call], now: datetime) -> list:
    return [d for d in _tree_due(_alert(), calls, now) if d.kind == TREE_PACED]


def test_a_rate_limited_tree_tells_the_caller_how_long_the_rest_will_take():
    """Ten got through at once, then one every 5 s (Synapse's default limit): at 12 s, one got
    through in the last 6 s, so the remaining 88 take about 88 x 6 s."""
    calls = [_call(n, NOON) for n in range(10)]
    calls += [_call(10, NOON + timedelta(seconds=5)), _call(11, NOON + timedelta(seconds=10))]
    calls += [_call(n, None) for n in range(12, 100)]
    now = NOON + timedelta(seconds=12)
    due = _paced(calls, now)
    assert due and not [d for d in _tree_due(_alert(), calls, now) if d.kind == TREE_REACHED]
    [message] = messages_for(due[0], now, BotConfig())
    assert message.user_id == COORD
    assert "12 of 100 reached so far; at this pace the rest take about 8 min 48 s" in (
        message.message.body)
    assert not _paced(calls, NOON + timedelta(seconds=5))  # a moment's wait is not yet a pace


def test_a_fast_tree_still_on_its_way_is_not_called_slow():
    """Five calls a second (a busy but unlimited bot): 50 of 100 at 10 s, the rest in 10 s."""
    calls = [_call(n, NOON + timedelta(seconds=n / 5)) for n in range(50)]
    calls += [_call(n, None) for n in range(50, 100)]
    assert not _paced(calls, NOON + timedelta(seconds=10))


async def test_a_member_who_confirms_in_the_room_before_the_call_is_not_called(rig):
    pod = rig.pod
    for person in (ALICE, BOB):
        await pod.say(person, "!tree join")
    await pod.say(COORD, "!alert Food bank van at noon")  # $ev3; the scheduler has not run
    assert "Thank you" in dms(await react(pod, ALICE, "$ev3", "👍"), ALICE)[0]
    sent = await rig.run()
    assert not dms(sent, ALICE) and "Food bank van" in dms(sent, BOB)[0]
    [reached] = dms(await rig.run(), COORD)
    assert "all 2 people reached" in reached
    assert dms(await rig.run(NOON + timedelta(minutes=10)), COORD) == [
        "**Phone tree:** @bob:test has not confirmed your alert after 10 minutes. Please reach "
        "them another way if you can."]
