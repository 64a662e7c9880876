"""The phone tree and reactions on a real Synapse, in encrypted rooms, with the bot as a process:
a tree of 20 members, one silent, everyone else confirming by `ok` or 👍; the silent member is
escalated to their backup, then to the caller; the status is the caller's and refused to others.
Reactions: ✋ claims, ✅ closes, and a ✅ by the wrong person is refused politely."""

from __future__ import annotations

import asyncio

from nio import RoomSendResponse

from .test_bot_basics import ask, pod_with

MEMBERS = 20
WAIT_S = 15  # the pod's alert_wait: short, so that the escalations come within the test


async def react(person, room: str, event_id: str, key: str) -> None:
    await person.sync_once()
    resp = await person.client.room_send(
        room, "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}},
        ignore_unverified_devices=True)
    assert isinstance(resp, RoomSendResponse), resp


async def open_dm(person, bot, attempts: int = 3) -> str:
    """A direct chat the person opens with the bot, as `open_dm_with_bot` does; many opened at
    once can lose the first message's room key (the sender had no Olm session with the bot's
    device yet), so a `!help` that got no answer is sent again once keys are claimed."""
    dm = await person.create_room("", invite=[bot.user_id], is_direct=True)
    await person._sync_until(lambda: bot.user_id in person.client.rooms[dm].users, 30, "bot join")
    for attempt in range(attempts):
        try:
            await ask(person, dm, "!help", bot, timeout=15)
            return dm
        except TimeoutError:
            if attempt == attempts - 1:
                raise
            await person.sync_once()
    raise AssertionError("unreachable: the loop returns or raises")


async def test_a_tree_of_twenty_with_one_silent_member(person_factory, bot):
    names = ["coord"] + [f"m{i}" for i in range(MEMBERS)]
    people = await asyncio.gather(*(person_factory(n) for n in names))
    coord, members = people[0], people[1:]
    room = await coord.create_room("Tree pod", invite=[bot.user_id] + [p.user_id for p in members])
    await asyncio.gather(*(p.join(room) for p in members))
    await coord._sync_until(lambda: bot.user_id in coord.client.rooms[room].users, 30, "bot join")
    dms = await asyncio.gather(*(open_dm(p, bot) for p in people))
    dm_of = {p.user_id: dm for p, dm in zip(people, dms, strict=True)}
    silent, backup = members[0], members[1]

    # One after another: twenty new members sending at once into one room race their room keys.
    joined = [await ask(p, room, "!tree join", bot) for p in members]
    assert all("You are on the phone tree" in r.body for r in joined)
    assert "asked to reach you first" in (
        await ask(silent, room, f"!tree backup {backup.user_id}", bot)).body
    assert "alert_wait" in (await ask(coord, room, f"!settings alert_wait {WAIT_S}s", bot)).body

    started = await ask(coord, room, "!alert Eviction defence at 14 Elm St, 7am. Come if you can.",
                        bot)
    assert f"Calling {MEMBERS} people" in started.body

    async def confirm(index: int, person) -> None:
        dm = dm_of[person.user_id]
        call = await person.wait_for_text(dm, "Phone tree alert", 60, sender=bot.user_id)
        assert "14 Elm St" in call.body
        if index % 2:
            await person.send(dm, "ok")
        else:
            await react(person, dm, call.event_id, "👍")
        await person.wait_for_text(dm, "confirmation is recorded", 60, sender=bot.user_id)

    await asyncio.gather(*(confirm(i, p) for i, p in enumerate(members) if p is not silent))
    coord_dm = dm_of[coord.user_id]
    reached = await coord.wait_for_text(coord_dm, "reached in", 60, sender=bot.user_id)
    assert f"all {MEMBERS} people reached in" in reached.body

    to_backup = await backup.wait_for_text(dm_of[backup.user_id], "named you as their backup",
                                           WAIT_S + 60, sender=bot.user_id)
    assert silent.user_id in to_backup.body and "14 Elm St" in to_backup.body

    refused = await ask(members[2], room, "!alert status", bot)
    assert "A coordinator is needed" in refused.body and silent.user_id not in refused.body
    assert "privately" in (await ask(coord, room, "!alert status", bot)).body
    status = await coord.wait_for_text(coord_dm, "Phone tree alert** (open)", 30,
                                       sender=bot.user_id)
    assert f"{MEMBERS - 1} of {MEMBERS} confirmed" in status.body
    assert f"Escalated (silent; backup or you told): {silent.user_id}" in status.body
    assert all(p.user_id in status.body.split("Confirmed:")[1].split("\n")[0]
               for p in members if p is not silent)

    to_caller = await coord.wait_for_text(coord_dm, "has not confirmed your alert", WAIT_S + 60,
                                          sender=bot.user_id)
    assert silent.user_id in to_caller.body and backup.user_id in to_caller.body
    # The room heard the alert's start and the status note, never who confirmed or stayed silent.
    await coord.sync_once()
    assert not [b for b in coord.bodies(room, sender=bot.user_id)
                if "Confirmed:" in b or "has not confirmed" in b]


async def test_reactions_claim_and_close_and_the_wrong_person_is_refused(person_factory, bot):
    room, (alice, bob, carol) = await pod_with(person_factory, bot, "alice", "bob", "carol")
    need = await alice.send(room, "!need groceries for a family of 4")
    noted = await alice.wait_for_text(room, "Noted need **#1**", sender=bot.user_id)

    await react(bob, room, need, "✋")
    claimed = await bob.wait_for_text(room, "is claimed", sender=bot.user_id)
    assert bob.user_id in claimed.body and alice.user_id in claimed.body

    await react(carol, room, noted.event_id, "✅")
    refused = await carol.wait_for_text(room, "Only the person who posted **#1**",
                                        sender=bot.user_id)
    assert "coordinator" in refused.body

    await react(alice, room, noted.event_id, "✅")
    await alice.wait_for_text(room, "**#1** marked done", sender=bot.user_id)
    assert "No open needs" in (await ask(alice, room, "!needs", bot)).body
