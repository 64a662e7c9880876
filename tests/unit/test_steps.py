"""Room steps (bot/actions.py) with the fake transport: the room for an introduction is made
outside any transaction, exactly once across a crash at every point, reused after a failure
that made it anyway, and given up visibly after the delivery bound."""

from __future__ import annotations

import pytest

import bot.actions
from bot.actions import request_dm_room
from bot.app import App
from bot.commands.privacy import sweep
from bot.messages import DeliveryError

from .conftest import ALICE, BOB, CAROL, POD, SECRET, Pod
from .test_intake import dm, intake, pod_bodies

ROOM = "!private1:test"


class Crash(BaseException):
    """The process dying (kill -9) at a step's test crash point."""


def _crash(code: int) -> None:
    raise Crash(code)


async def consent(pod: Pod) -> None:
    """Alice's private request claimed by Bob; Alice says yes (the room is then a step)."""
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    await dm(pod, "yes")


def introductions(pod: Pod, room: str = ROOM) -> list[str]:
    return [o.message.body for o in pod.transport.sent
            if o.room_id == room and "This private room is just for request" in o.message.body]


async def stored(pod: Pod, app: App) -> tuple[list, list]:
    async with app.storage.transaction() as tx:
        intros = await tx.fetchall("SELECT status, room_id FROM introductions")
        steps = await tx.fetchall("SELECT status, result FROM actions")
    return [tuple(r) for r in intros], [tuple(r) for r in steps]


async def test_the_room_is_made_after_the_command_is_committed_and_introduces_them_once(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    answer = await dm(pod, "yes")
    assert "making a new private room for you both" in answer[0]
    # (The fake transport fails the test if a room is made while a transaction is open.)
    (name, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == [ALICE, BOB] and "#1" in name
    assert len(introductions(pod)) == 1 and SECRET in introductions(pod)[0]
    assert pod_bodies(pod)[-1] == "#1 is being handled."
    told = [o.message.body for o in pod.transport.sent if o.user_id == ALICE]
    assert "I have invited you both to a new private room for #1" in told[-1]
    assert await stored(pod, pod.app) == ([("accepted", ROOM)], [("done", ROOM)])


@pytest.mark.parametrize("point", ["before-create-room", "after-create-room", "before-commit"])
async def test_a_crash_at_any_point_of_the_step_still_makes_one_room_and_one_introduction(
        pod_rooms, monkeypatch, point):
    pod = pod_rooms
    monkeypatch.setattr(bot.actions, "_CRASH_AT", point)
    monkeypatch.setattr(bot.actions.os, "_exit", _crash)
    with pytest.raises(Crash):
        await consent(pod)
    assert len(pod.transport.private_rooms) == (0 if point == "before-create-room" else 1)
    assert introductions(pod) == []
    assert await stored(pod, pod.app) == ([("accepted", None)], [("pending", None)])

    # Restart: a new app on the same database; the first sync shows the rooms the bot made.
    monkeypatch.setattr(bot.actions, "_CRASH_AT", None)
    restarted = App(pod.storage, pod.app.config, pod.transport, clock=pod.clock)
    pod.transport.app = restarted
    try:
        await pod.transport.sync()
        await restarted.run_until_idle()
        assert len(pod.transport.private_rooms) == 1
        assert len(introductions(pod)) == 1
        assert await stored(pod, restarted) == ([("accepted", ROOM)], [("done", ROOM)])
    finally:
        await restarted.stop()


async def test_a_failed_attempt_that_made_the_room_is_finished_in_that_room(pod_rooms):
    pod = pod_rooms
    # Synapse makes the room, then fails to invite someone whose homeserver is down.
    pod.transport.room_faults.append(("after", DeliveryError("M_UNKNOWN Can't connect")))
    await consent(pod)
    assert len(pod.transport.private_rooms) == 1 and introductions(pod) == []
    syncs = pod.transport.syncs
    pod.app.steps.retry_now()  # the back-off has passed
    await pod.app.run_until_idle()
    assert pod.transport.syncs > syncs  # looked for the room before trying again
    assert len(pod.transport.private_rooms) == 1
    assert pod.transport.invites == [(ROOM, ALICE), (ROOM, BOB)]
    assert len(introductions(pod)) == 1
    assert await stored(pod, pod.app) == ([("accepted", ROOM)], [("done", ROOM)])


async def test_a_step_that_keeps_failing_is_given_up_told_and_listed_for_coordinators(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    pod.transport.room_faults += [("before", DeliveryError("TimeoutError"))] * 2
    await consent(pod)
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "claimed"
    pod.clock.advance(hours=25)
    pod.app.steps.retry_now()
    await pod.app.run_until_idle()
    assert pod.transport.private_rooms == []
    for person in (ALICE, BOB):
        told = [o.message.body for o in pod.transport.sent if o.user_id == person]
        assert "could not make the private room for #1" in told[-1]
        assert "still failing after 24 hours" in told[-1]
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "open"
    assert await stored(pod, pod.app) == ([("failed", None)], [("failed", None)])
    status = await pod.reply_to(CAROL, "!status")
    assert "1 room(s) could not be made" in status
    assert "the private room for #1: still failing after 24 hours" in status
    # Given up means never tried again.
    pod.app.steps.retry_now()
    await pod.app.run_until_idle()
    assert pod.transport.private_rooms == []


async def test_a_refused_room_is_given_up_at_once(pod_rooms):
    pod = pod_rooms
    pod.transport.room_faults.append(("before", DeliveryError("M_FORBIDDEN", permanent=True)))
    await consent(pod)
    told = [o.message.body for o in pod.transport.sent if o.user_id == BOB]
    assert "could not make the private room for #1 (M_FORBIDDEN)" in told[-1]
    assert await stored(pod, pod.app) == ([("failed", None)], [("failed", None)])


async def test_a_room_step_for_someone_erased_meanwhile_makes_no_room(pod_rooms):
    pod = pod_rooms
    pod.transport.room_faults.append(("before", DeliveryError("TimeoutError")))
    await consent(pod)
    await dm(pod, "!forgetme")
    await dm(pod, "yes")
    pod.app.steps.retry_now()
    await pod.app.run_until_idle()
    assert pod.transport.private_rooms == []
    async with pod.storage.transaction() as tx:
        assert await tx.actions.pending() == []


async def test_steps_name_people_only_as_long_as_their_posts_are_kept(pod_rooms):
    pod = pod_rooms
    await consent(pod)
    async with pod.storage.transaction() as tx:
        await request_dm_room(tx, CAROL, pod.clock())  # a direct chat still to be made
    await pod.say(ALICE, "!done 1", room=ROOM)
    await pod.say(CAROL, "!forgetme", room="!dm-carol:test", direct=True)
    await pod.say(CAROL, "yes", room="!dm-carol:test", direct=True)
    async with pod.storage.transaction() as tx:
        assert await tx.actions.pending() == []  # nothing is made for someone forgotten
        assert (await tx.privacy.table_rows_mentioning(ALICE))["actions"] == 1  # the intro
    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    async with pod.storage.transaction() as tx:
        assert (await tx.privacy.table_rows_mentioning(ALICE)).get("actions") == 0
        assert await tx.fetchall("SELECT * FROM actions") == []


async def test_a_room_for_someone_unreachable_is_made_once_and_holds_up_no_other(pod_rooms):
    pod = pod_rooms
    pod.transport.unreachable.add(CAROL)
    async with pod.storage.transaction() as tx:
        await request_dm_room(tx, CAROL, pod.clock())
    await consent(pod)  # Alice and Bob's introduction, while Carol's chat keeps failing
    for _ in range(3):
        pod.app.steps.retry_now()
        await pod.app.run_until_idle()
    assert len(introductions(pod, "!private2:test")) == 1  # the first is Carol's
    carol_rooms = [invitees for _, invitees in pod.transport.private_rooms if CAROL in invitees]
    assert carol_rooms == [[CAROL]]  # one room, then only invitations into it
    assert [user for _, user in pod.transport.invites] == [CAROL] * 3
    pod.transport.unreachable.clear()
    pod.app.steps.retry_now()
    await pod.app.run_until_idle()
    async with pod.storage.transaction() as tx:
        assert await tx.actions.pending() == []
        assert await tx.delivery.get_dm_room(CAROL) == "!private1:test"
