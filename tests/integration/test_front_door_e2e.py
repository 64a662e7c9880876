"""The front door on two federating homeservers: a neighbour in no pod, on the second server,
asks the bot (on the first) for help by DM, names their area, and is introduced to a helper from
the pod that covers it; the pod never learns who asked. And an area only a pod of another bot
covers: the request goes through the network at once, and that pod can claim it."""

from __future__ import annotations

import asyncio
import json
import uuid

from nio import MegolmEvent

from .people import contains
from .test_network_e2e import _bot, _network_room, _pod
from .test_privacy_e2e import dm_from_bot, names, pod_with, say, wait_bot_joined

SECRET = "nappies and formula, I am by the riverside playground"


async def from_history(person, room, text, bot):
    """The bot's message containing `text`, read from the room's history: the bot may send it
    as soon as the person is invited, before their server has joined (as in test_federation)."""
    for _ in range(60):  # up to about 2 minutes
        await person.sync_once()  # room keys arrive as to-device messages
        found = [event for event in await person.messages(room)
                 if getattr(event, "sender", None) == bot.user_id
                 and text in (getattr(event, "body", None) or "")]
        if found:
            return found[0]
        await asyncio.sleep(2)
    raise AssertionError(f"{person.name} never read {text!r} in {room}:\n{bot.log_tail()}")


async def test_a_neighbour_on_another_server_in_no_pod_is_introduced_to_the_covering_pod(
    person_factory, bot, second_synapse
):
    pod, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    await say(alice, pod, "!pod name Elm Street", "now called", bot)
    await say(alice, pod, "!pod zones north, riverside", "zones are now", bot)

    dora = await person_factory("dora", server=second_synapse)
    assert dora.user_id.endswith(":" + second_synapse.server_name)
    # A group room from her server is declined (allowed_inviters); a direct chat is accepted.
    group = await dora.create_room("my group", invite=[bot.user_id])
    await bot.wait_for_log(f"declining invite to {group}", 60)
    # Not waited for: the refusal reaches her server by federation, which a loaded machine may
    # delay past any bound (her server then still shows the bot invited, never joined).
    dm = await dora.create_room("help", invite=[bot.user_id], is_direct=True)

    def bot_joined(room_id: str) -> bool:
        room = dora.client.rooms[room_id]
        return bot.user_id in room.users and bot.user_id not in room.invited_users

    await dora._sync_until(lambda: bot_joined(dm), 60, "the bot joining her direct chat")
    shared = [room_id for room_id in dora.client.rooms if bot_joined(room_id)]
    assert shared == [dm]  # she shares no other room with the bot

    await say(dora, dm, "hello", "a mutual-aid pod near you", bot, timeout=60)
    await say(dora, dm, "childcare", "Tell me the details", bot)
    await say(dora, dm, SECRET, "How urgent", bot)
    areas = await say(dora, dm, "2", "Which area are you in", bot)
    assert "1. north" in areas.body and "2. riverside" in areas.body
    assert "3. none of these" in areas.body
    summary = await say(dora, dm, "2", "Reply yes to post it", bot)
    assert "to Elm Street, zone riverside, shown anonymously" in summary.body
    await say(dora, dm, "yes", "Posted as", bot)

    notice = await bob.wait_for(pod, contains("Someone needs: childcare (this week, riverside)"),
                                sender=bot.user_id)
    assert dora.user_id not in notice.body and SECRET not in notice.body

    # Bob claims it; Dora is asked in her DM; on yes both are invited to a new room
    await bob.send(pod, "!claim 1")
    bob_dm = await dm_from_bot(bob)
    await bob.wait_for(bob_dm, contains("asked the person behind"), sender=bot.user_id)
    ask = await dora.wait_for(dm, contains("offered to help"), 60, sender=bot.user_id)
    assert bob.user_id in ask.body
    await say(dora, dm, "yes", "invited you both", bot)
    intro = await dora.wait_for_invite(timeout=60)
    assert await bob.wait_for_invite(intro, timeout=60) == intro
    await dora.join(intro)
    await bob.join(intro)
    for person in (dora, bob):
        met = await from_history(person, intro, SECRET, bot)
        assert (await person.raw_event(intro, met.event_id))["type"] == "m.room.encrypted"
    await dora._sync_until(
        lambda: set(dora.client.rooms[intro].users) == {bot.user_id, dora.user_id, bob.user_id},
        30, "exactly the two and the bot in the introduction room")
    assert dora.client.rooms[intro].encrypted
    await alice.wait_for(pod, contains("is being handled"), sender=bot.user_id)

    # The pod's whole decrypted timeline never names Dora nor shows her details
    for _ in range(20):
        await alice.sync_once()
        history = await alice.messages(pod)
        if not any(isinstance(e, MegolmEvent) for e in history):
            break
        await asyncio.sleep(0.5)
    assert not any(isinstance(e, MegolmEvent) for e in history), "unreadable pod events"
    display_name = dora.client.rooms[dm].user_name(dora.user_id) or dora.name
    bodies = [e for e in history if hasattr(e, "body")]
    assert any("Someone needs: childcare" in e.body for e in bodies)
    assert [e.body for e in bodies if names(e, dora.user_id, display_name, set())
            or SECRET in e.body or dora.name in e.body] == []
    assert dora.user_id not in {getattr(e, "sender", None) for e in history}


async def test_an_area_only_another_bots_pod_covers_reaches_it_through_the_network_at_once(
        person_factory, synapse, second_synapse, tmp_path):
    run = uuid.uuid4().hex[:6]
    a_id, a_password = await synapse.register(f"bot-a-{run}")
    b_id, b_password = await second_synapse.register(f"bot-b-{run}")
    bot_a = await _bot(synapse, tmp_path / "a", a_id, a_password, b_id)
    bot_b = await _bot(second_synapse, tmp_path / "b", b_id, b_password, a_id)
    try:
        pod_a, (alice,) = await _pod(person_factory, bot_a, synapse, "alice")
        pod_b, (cora, hank) = await _pod(person_factory, bot_b, second_synapse, "cora", "hank")
        network, address = await _network_room(cora)
        await say(cora, pod_b, "!pod name Maple", "now called", bot_b)
        await say(cora, pod_b, "!pod zones docklands", "zones are now", bot_b)
        await say(cora, pod_b, f"!network join {address}", "Joining", bot_b)
        await cora.wait_for(pod_b, contains("now linked"), 60, sender=bot_b.user_id)
        # Citywide joins after Maple: bot B answers its announcement with Maple's, from which
        # bot A learns Maple's zones.
        await say(alice, pod_a, "!pod name Citywide", "now called", bot_a)
        await say(alice, pod_a, "!pod zones north", "zones are now", bot_a)
        await say(alice, pod_a, f"!network join {address}", "Joining", bot_a)
        await alice.wait_for(pod_a, contains("now linked"), 60, sender=bot_a.user_id)
        await bot_a.wait_for_log("a pod announced itself", 60)
        # Citywide takes bot A's front-door requests from areas its pods do not cover.
        assert await bot_a.stop() == 0
        with open(bot_a.config_path, "a") as config:
            config.write(f"\n[front_door]\ndefault_pod = {json.dumps(pod_a)}\n")
        await bot_a.start()

        dora = await person_factory("dora", server=second_synapse)  # shares no room with bot A
        dm = await dora.create_room("help", invite=[bot_a.user_id], is_direct=True)
        await wait_bot_joined(dora, dm, bot_a)
        await say(dora, dm, "hello", "a mutual-aid pod near you", bot_a, timeout=60)
        await say(dora, dm, "food", "Tell me the details", bot_a)
        await say(dora, dm, SECRET, "How urgent", bot_a)
        areas = await say(dora, dm, "1", "Which area are you in", bot_a)
        assert "1. docklands" in areas.body and "2. north" in areas.body
        await say(dora, dm, "1", "pods nearby at once", bot_a)
        await say(dora, dm, "yes", "Passed on as", bot_a)

        notice = await alice.wait_for(pod_a, contains("Someone needs: food (urgent, docklands)"),
                                      60, sender=bot_a.user_id)
        assert "networks at once" in notice.body
        shown = await hank.wait_for(pod_b, contains("Citywide pod needs food (urgent, docklands)"),
                                    60, sender=bot_b.user_id)
        assert "!claim E1" in shown.body

        # Hank claims it; Dora is asked in the same DM, and learns only which pod offered.
        await say(hank, pod_b, "!claim E1", "told the Citywide pod", bot_b)
        ask = await dora.wait_for(dm, contains("Someone from the Maple pod"), 60,
                                  sender=bot_a.user_id)
        assert hank.user_id not in ask.body

        network_seen = json.dumps([e.source["content"] for e in cora.received(network)])
        pod_b_seen = " ".join(hank.bodies(pod_b))
        for text in (dora.user_id, SECRET):
            assert text not in network_seen and text not in pod_b_seen
            assert text not in " ".join(alice.bodies(pod_a))
    finally:
        await bot_a.stop()
        await bot_b.stop()
