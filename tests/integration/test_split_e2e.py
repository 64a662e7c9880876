"""Splitting a pod on a real Synapse: the alert past the (lowered) split size reaches the
coordinator once; `!pod split` makes a new encrypted room, invites the chosen people, makes the
old coordinator a coordinator there, and moves what was chosen (rows and notices)."""

from __future__ import annotations

import sqlite3

from .people import contains
from .test_bot_basics import ask, pod_with
from .test_shifts_e2e import open_dm_with_bot

ROOM_TIMEOUT = 60  # a room step on a loaded machine: createRoom, power levels, invites


async def test_a_pod_past_its_split_size_is_alerted_once_and_split(person_factory, bot):
    pod, (alice, bob, carol) = await pod_with(person_factory, bot, "alice", "bob", "carol")
    dm = await open_dm_with_bot(alice, bot)
    await ask(alice, pod, "!pod name Elm Street", bot)
    await ask(alice, pod, "!pod zones north, riverside", bot)
    assert "split_size" in (await ask(alice, pod, "!settings split_size 4", bot)).body
    await ask(bob, pod, "!need groceries for riverside", bot)  # 1: in riverside
    await ask(carol, pod, "!offer a ladder", bot)  # 2: stays
    await ask(alice, pod, "!shift add Food bank riverside every saturday 10-13 at the Hall "
                          "need 2", bot)  # S1: names riverside

    # Dave makes four people (the bot is not counted): Alice, the coordinator, is told.
    dave = await person_factory("dave")
    await alice.invite(pod, dave.user_id)
    await dave.join(pod)
    alert = await alice.wait_for(dm, contains("now has 4 people"), sender=bot.user_id)
    assert "Elm Street" in alert.body and "!pod split" in alert.body
    await ask(dave, pod, "!offer ride to the clinic", bot)  # 3: Dave's
    assert await bot.stop() == 0
    await bot.start()  # the alert was given: a restart does not give it again

    # Erin makes five: still past the size, and the bot restarted, yet no second alert. The
    # split's first DM is queued after anything her join caused, so a repeat would come first.
    erin = await person_factory("erin")
    await alice.invite(pod, erin.user_id)
    await erin.join(pod)
    started = await ask(alice, pod, "!pod split", bot)
    assert "direct message" in started.body
    await alice.wait_for(dm, contains("What is the new pod called?"), sender=bot.user_id)
    alerts = [body for body in alice.bodies(dm, sender=bot.user_id) if "its split size is" in body]
    assert len(alerts) == 1, alerts

    await ask_dm(alice, dm, "Riverside", "Which zones", bot)
    await ask_dm(alice, dm, "riverside", "Who goes", bot)
    summary = await ask_dm(alice, dm, f"{bob.user_id} {dave.user_id}", "Split now?", bot)
    assert "Moving needs and offers: #1, #3." in summary.body
    assert "Moving shifts: S1." in summary.body
    await ask_dm(alice, dm, "yes", "Making the room for Riverside", bot)

    # Alice already has her DM with the bot: her one new invite is the new pod.
    new_room = await alice.wait_for_invite(timeout=ROOM_TIMEOUT)
    await bob.wait_for_invite(new_room, timeout=ROOM_TIMEOUT)
    await dave.wait_for_invite(new_room, timeout=ROOM_TIMEOUT)
    assert new_room not in carol.invites and new_room not in erin.invites
    for person in (alice, bob, dave):
        await person.join(new_room)
    welcome = await bob.wait_for(new_room, contains("Welcome to **Riverside**"), ROOM_TIMEOUT,
                                 sender=bot.user_id)
    assert "(was #1)" in welcome.body and "(was #3)" in welcome.body and "(was S1)" in welcome.body
    assert (await bob.raw_event(new_room, welcome.event_id))["type"] == "m.room.encrypted"
    room = bob.client.rooms[new_room]
    assert room.encrypted
    assert room.power_levels.get_user_level(alice.user_id) == 100  # a coordinator there too
    assert room.power_levels.get_user_level(bob.user_id) == 0
    notice = await carol.wait_for(pod, contains("**Riverside** split off from this pod"),
                                  ROOM_TIMEOUT, sender=bot.user_id)
    assert "3 people were invited" in notice.body and "Nobody was removed" in notice.body
    await carol.sync_once()
    assert {bob.user_id, dave.user_id} <= set(carol.client.rooms[pod].users)  # still in the pod

    with sqlite3.connect(bot.database) as db:
        posts = db.execute("SELECT room_id, number, text FROM posts ORDER BY id").fetchall()
        shifts = db.execute("SELECT room_id, number FROM shifts").fetchall()
    assert posts == [(new_room, 1, "groceries for riverside"), (pod, 2, "a ladder"),
                     (new_room, 2, "ride to the clinic")]
    assert shifts == [(new_room, 1)]
    # The new pod goes on numbering from what moved into it.
    assert "Noted need **#3**" in (await ask(dave, new_room, "!need soup", bot)).body


async def ask_dm(person, dm, text, expect, bot):
    event_id = await person.send(dm, text)
    return await person.wait_for(dm, contains(expect), sender=bot.user_id, after=event_id)
