"""Joins and leaves in a Signal pod's group, as its coordinators notice them: the split alert.

signal-cli says only that a group changed (an UPDATE, with no word of who); the bot reads the
group's members again and compares. The fake daemon delivers the update as the real one shapes
it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.signal_text import person_id

from .conftest import ALICE, BOB, BOT, CAROL, DAN, POD_GROUP, WAIT_S, SignalPod, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPLIT_SIZE = 4  # the group holds Alice (its admin), Bob, Carol and the bot: one more to go


def split_alerts(pod: SignalPod) -> list[str]:
    return [m["message"] for m in pod.fake.messages(to=ALICE) if "split size" in m["message"]]


async def set_split_size(pod: SignalPod) -> None:
    await pod.say(ALICE, f"!settings split_size {SPLIT_SIZE}")
    assert "split_size" in pod.fake.messages(to_group=POD_GROUP)[-1]["message"]


async def settled(pod: SignalPod) -> None:
    """Everything the daemon delivered so far is handled and what it caused is sent: a group
    command sent now is answered after it (notifications are read in order), then nothing is
    waiting in the inbox or the outbox."""
    await pod.say(BOB, "!pod")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        async with pod.storage.transaction() as tx:
            if not await tx.delivery.pending_rooms() and not await tx.delivery.count_waiting():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot did not settle")


async def test_a_pod_reaching_its_split_size_alerts_its_coordinators_once(signal_pod, caplog):
    pod = signal_pod
    caplog.set_level(logging.DEBUG)
    await set_split_size(pod)
    pod.fake.add_member(POD_GROUP, DAN, by=ALICE)
    await until(lambda: split_alerts(pod), "the split alert")
    [alert] = split_alerts(pod)
    assert "now has 4 people (its split size is 4)" in alert and "!pod split" in alert
    # Another change at the same size (the group renamed), then a restart and another: no more.
    pod.fake.groups[POD_GROUP]["name"] = "Elm Street pod (north)"
    pod.fake.inject(pod.fake.group_update(ALICE, POD_GROUP))
    await settled(pod)
    await pod.restart()
    pod.fake.inject(pod.fake.group_update(ALICE, POD_GROUP))
    await settled(pod)
    assert len(split_alerts(pod)) == 1
    # Who is in the group is need-to-know: how many joined is logged, never who.
    assert "1 joined, 0 left" in caplog.text
    assert DAN not in caplog.text and CAROL not in caplog.text


async def test_a_leave_below_the_split_size_rearms_the_alert(signal_pod, caplog):
    pod = signal_pod
    caplog.set_level(logging.DEBUG)
    await set_split_size(pod)
    pod.fake.add_member(POD_GROUP, DAN, by=ALICE)
    await until(lambda: len(split_alerts(pod)) == 1, "the first alert")
    pod.fake.remove_member(POD_GROUP, CAROL)  # she leaves: 3 people
    await settled(pod)
    assert len(split_alerts(pod)) == 1
    pod.fake.add_member(POD_GROUP, CAROL, by=ALICE)  # back at 4: the pod crossed it again
    await until(lambda: len(split_alerts(pod)) == 2, "the second alert")
    assert "0 joined, 1 left" in caplog.text and CAROL not in caplog.text and DAN not in caplog.text


async def test_a_member_added_from_the_bots_other_device_counts(signal_pod):
    pod = signal_pod
    await set_split_size(pod)
    envelope = pod.fake.add_member(POD_GROUP, DAN, by=BOT)  # the sync copy of the change
    assert envelope["syncMessage"]["sentMessage"]["groupInfo"]["type"] == "UPDATE"
    await until(lambda: split_alerts(pod), "the split alert")


async def test_a_join_while_the_daemon_was_down_is_counted_once_it_is_back(signal_pod):
    pod = signal_pod
    await set_split_size(pod)
    await pod.fake.stop()
    pod.fake.add_member(POD_GROUP, DAN, by=ALICE)  # its update waits on the Signal servers
    await pod.fake.start()
    await until(lambda: split_alerts(pod), "the split alert")
    await settled(pod)  # the update itself arrives after the reconnect's read: nothing new
    assert len(split_alerts(pod)) == 1


async def test_a_failed_group_read_alerts_nothing_and_the_bot_goes_on(signal_pod, caplog):
    pod = signal_pod
    await set_split_size(pod)
    pod.fake.list_groups_failures = 1
    calls = pod.fake.list_groups_calls
    pod.fake.add_member(POD_GROUP, DAN, by=ALICE)
    await settled(pod)  # the bot still answers in the group
    assert pod.fake.list_groups_calls == calls + 1  # one read for the update, not retried
    assert "could not read the members of signal:group:" in caplog.text
    assert split_alerts(pod) == []
    assert pod.transport.members(f"signal:group:{POD_GROUP}") == sorted(
        person_id(u) for u in (ALICE, BOB, CAROL))  # what was known, unchanged
    # The next change is read: Dan's join is counted then.
    pod.fake.remove_member(POD_GROUP, BOB)
    pod.fake.add_member(POD_GROUP, BOB, by=ALICE)
    await until(lambda: split_alerts(pod), "the split alert")
    assert len(split_alerts(pod)) == 1


async def test_a_pod_that_grew_while_the_bot_was_stopped_is_alerted_at_start(signal_pod):
    pod = signal_pod
    await set_split_size(pod)
    await asyncio.wait_for(pod.runtime.close(), WAIT_S)
    pod.fake.groups[POD_GROUP]["members"].append(DAN)  # its update is lost with the old session
    await pod.start()
    await until(lambda: split_alerts(pod), "the split alert")
    await pod.restart()  # at the same size, a second start repeats nothing
    await settled(pod)
    assert len(split_alerts(pod)) == 1
