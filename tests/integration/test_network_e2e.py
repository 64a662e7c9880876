"""The network of pods on two federating Synapses, a bot on each (issue 12).

One journey, sharing its set-up: pod A (Elm Street) on the first server and pod B (Maple) on the
second link to a network room on the second server; Rita's need in pod A is still unmatched past
the pod's delay and goes to the network; both bots are restarted mid-escalation; Hank claims it in
pod B; Rita says yes in her DM; bot A makes the introduction room, across both servers, with
exactly the two of them; the need closes in both pods; and pod B never sees Rita or the details.
Then a forged, a malformed and a replayed network message change nothing in any pod.

A second, lean journey: a coordinator in pod A forwards a phone-tree alert (`!alert urgent
network …`), and a tree member of pod B, on the other server, gets it by DM and confirms.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from nio import RoomCreateResponse, RoomPreset

from bot.pod_network import KEY

from .botproc import BotProcess
from .people import Person, contains
from .test_privacy_e2e import dm_from_bot, say, wait_bot_joined

SECRET = "insulin pickup at 12 Elm Street, flat 3"


async def _bot(synapse, workdir, user_id, password, trusted):
    bot = BotProcess(synapse, workdir, user_id, password,
                     extra_sections=f"[network]\nbots = [{json.dumps(trusted)}]\n")
    await bot.start()
    return bot


async def _pod(person_factory, bot, server, *names):
    people = [await person_factory(name, server=server) for name in names]
    room = await people[0].create_room("Pod", invite=[bot.user_id, *(p.user_id for p in people[1:])])
    for person in people[1:]:
        await person.join(room)
    await wait_bot_joined(people[0], room, bot)
    return room, people


async def _network_room(owner, *, encrypted: bool = True) -> tuple[str, str]:
    """A room anyone may join, with an alias: the city's network room."""
    alias = f"city-{uuid.uuid4().hex[:6]}"
    response = await owner.client.room_create(
        name="City network", alias=alias, preset=RoomPreset.public_chat,
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}] if encrypted else [])
    assert isinstance(response, RoomCreateResponse), response
    await owner._sync_until(lambda: response.room_id in owner.client.rooms, 10, "network room")
    return response.room_id, f"#{alias}:{owner.synapse.server_name}"


async def _in_history(person, room, text, bot, tries=60):
    """The bot's message containing `text`, read from the room's history: it may have been sent
    as soon as the person was invited, before their server joined (so not in their sync)."""
    for _ in range(tries):
        await person.sync_once()  # room keys arrive as to-device messages
        for event in await person.messages(room):
            if getattr(event, "sender", None) == bot.user_id and text in (
                    getattr(event, "body", None) or ""):
                return event
        await asyncio.sleep(1)
    raise AssertionError(f"{person.name} never read {text!r} in {room}")


async def _logged(bot, text, times, timeout=60.0):
    """Wait until the bot's log says `text` `times` times (each a message it handled)."""
    deadline = time.monotonic() + timeout
    while bot.log_text().count(text) < times:
        assert time.monotonic() < deadline, bot.log_tail()
        await asyncio.sleep(0.2)


async def _send_network(person, room, body, payload):
    """A notice carrying a network payload, as a bot would send it (or a forger)."""
    await person.sync_once()
    if person.client.should_query_keys:
        await person.client.keys_query()
    await person.client.room_send(room, "m.room.message",
                                  {"msgtype": "m.notice", "body": body, KEY: payload},
                                  ignore_unverified_devices=True)


async def test_a_need_travels_to_another_pod_on_another_server_and_back(
        person_factory, synapse, second_synapse, tmp_path):
    run = uuid.uuid4().hex[:6]
    a_id, a_password = await synapse.register(f"bot-a-{run}")
    b_id, b_password = await second_synapse.register(f"bot-b-{run}")
    bot_a = await _bot(synapse, tmp_path / "a", a_id, a_password, b_id)
    bot_b = await _bot(second_synapse, tmp_path / "b", b_id, b_password, a_id)
    try:
        pod_a, (alice, rita) = await _pod(person_factory, bot_a, synapse, "alice", "rita")
        pod_b, (cora, hank) = await _pod(person_factory, bot_b, second_synapse, "cora", "hank")
        network, address = await _network_room(cora)

        # Coordinators name their pods and link them to the network room on the second server.
        await say(alice, pod_a, "!pod name Elm Street", "now called", bot_a)
        await say(alice, pod_a, "!pod zones north", "zones are now", bot_a)
        await say(alice, pod_a, "!settings escalate_after 0.001", "escalate_after", bot_a)
        # A network room in clear is refused: the bot leaves it and says why.
        _, clear = await _network_room(cora, encrypted=False)
        await say(alice, pod_a, f"!network join {clear}", "Joining", bot_a)
        await alice.wait_for(pod_a, contains("not end-to-end encrypted"), 60,
                             sender=bot_a.user_id)
        await say(alice, pod_a, f"!network join {address}", "Joining", bot_a)
        await alice.wait_for(pod_a, contains("now linked"), 60, sender=bot_a.user_id)
        await say(cora, pod_b, "!pod name Maple", "now called", bot_b)
        await say(cora, pod_b, f"!network join {address}", "Joining", bot_b)
        await cora.wait_for(pod_b, contains("now linked"), 60, sender=bot_b.user_id)

        # Rita's need, unmatched past the delay, reaches pod B with nothing about her.
        await say(rita, pod_a, f"!need groceries {SECRET}", "Noted need", bot_a)
        await alice.wait_for(pod_a, contains("passed it to this pod's networks"), 60,
                             sender=bot_a.user_id)
        # Bot A restarted mid-escalation: sent once, and nothing is sent again.
        assert await bot_a.stop() == 0
        await bot_a.start()
        shown = await hank.wait_for(pod_b, contains("Elm Street pod needs food"), 60,
                                    sender=bot_b.user_id)
        assert "(whenever, north)" in shown.body and "!claim E1" in shown.body
        # Bot B restarted with the need shown: it shows it once, and the claim still works.
        assert await bot_b.stop() == 0
        await bot_b.start()

        # Hank claims it; Rita is asked in her DM by her own bot, without Hank's name.
        await say(hank, pod_b, "!claim E1", "told the Elm Street pod", bot_b)
        rita_dm = await dm_from_bot(rita)
        ask = await rita.wait_for(rita_dm, contains("Someone from the Maple pod"), 60,
                                  sender=bot_a.user_id)
        assert hank.user_id not in ask.body
        await say(rita, rita_dm, "yes", "asking the helper's pod", bot_a)

        # The introduction room spans both servers, is encrypted and holds exactly the two.
        hank_dm = await dm_from_bot(hank)
        await hank.wait_for(hank_dm, contains("said yes"), 60, sender=bot_b.user_id)
        intro = await rita.wait_for_invite(timeout=90)
        assert await hank.wait_for_invite(intro, timeout=60) == intro
        await rita.join(intro)
        await hank.join(intro)
        for person in (rita, hank):
            message = await _in_history(person, intro, SECRET, bot_a)
            assert (await person.raw_event(intro, message.event_id))["type"] == "m.room.encrypted"
        room = hank.client.rooms[intro]
        assert room.encrypted
        assert set(room.users) == {bot_a.user_id, rita.user_id, hank.user_id}

        # Closed in both pods.
        await alice.wait_for(pod_a, contains("#1** is being handled"), 60, sender=bot_a.user_id)
        await hank.wait_for(pod_b, contains("E1** is being handled"), 60, sender=bot_b.user_id)
        await cora.wait_for(network, lambda e: (e.source["content"].get(KEY) or {}).get(
            "type") == "close", 60, sender=bot_a.user_id)
        await say(cora, pod_b, "!claim E1", "E1** is closed", bot_b)

        # Pod B, and the network room, never saw Rita or the details; each was told once.
        pod_b_seen = " ".join(hank.bodies(pod_b))
        network_seen = [e.source["content"] for e in cora.received(network)]
        for text in (rita.user_id, SECRET, "insulin"):
            assert text not in pod_b_seen and text not in json.dumps(network_seen)
        needs = [c for c in network_seen if (c.get(KEY) or {}).get("type") == "need"]
        assert len(needs) == 1
        assert sum("Elm Street pod needs food" in body for body in hank.bodies(pod_b)) == 1
        assert sum("passed it to this pod's networks" in body
                   for body in alice.bodies(pod_a)) == 1

        # Forged (a person, not a pod bot), malformed and replayed messages change nothing.
        before_b, before_a = len(hank.bodies(pod_b)), len(alice.bodies(pod_a))
        ignored = bot_b.log_text().count("network: ignored")
        forged = dict(needs[0][KEY], id="forged1")
        await _send_network(cora, network, "Forged pod needs food", forged)
        second_a = await Person.create(synapse, f"bot-a-{run}", password=a_password)
        try:
            await second_a._sync_until(lambda: network in second_a.client.rooms, 30, "network")
            await _send_network(second_a, network, "Broken", dict(needs[0][KEY], urgency="x"))
            await _send_network(second_a, network, "Replayed", needs[0][KEY])
        finally:
            await second_a.close()
        await _logged(bot_b, "network: ignored", ignored + 3)
        assert "not a known pod bot" in bot_b.log_text()
        assert "replayed" in bot_b.log_text() and "urgency" in bot_b.log_text()
        await say(cora, pod_b, "!network", "This pod's networks", bot_b)
        bodies_b = hank.bodies(pod_b)[before_b:]
        assert not any("needs food" in body for body in bodies_b)
        await say(alice, pod_a, "!network", "This pod's networks", bot_a)
        assert not any("needs food" in body for body in alice.bodies(pod_a)[before_a:])
        for log in (bot_a.log_text(), bot_b.log_text()):
            assert SECRET not in log
    finally:
        await bot_a.stop()
        await bot_b.stop()


async def test_an_alert_forwarded_by_one_pod_calls_another_pods_tree(
        person_factory, synapse, second_synapse, tmp_path):
    """Alice, coordinating Elm Street on the first server, forwards an urgent alert; bot B posts it
    in Maple on the second server and calls Hank, on Maple's tree, who confirms with `ok`; Cora,
    Maple's coordinator, stands in for the caller. Nobody outside pod A learns who sent it."""
    run = uuid.uuid4().hex[:6]
    a_id, a_password = await synapse.register(f"bot-a-{run}")
    b_id, b_password = await second_synapse.register(f"bot-b-{run}")
    bot_a = await _bot(synapse, tmp_path / "a", a_id, a_password, b_id)
    bot_b = await _bot(second_synapse, tmp_path / "b", b_id, b_password, a_id)
    text = "ICE reported on Main St, stay inside"
    try:
        pod_a, (alice,) = await _pod(person_factory, bot_a, synapse, "alice")
        pod_b, (cora, hank) = await _pod(person_factory, bot_b, second_synapse, "cora", "hank")
        network, address = await _network_room(cora)
        for person, pod, bot, name in ((alice, pod_a, bot_a, "Elm Street"),
                                       (cora, pod_b, bot_b, "Maple")):
            await say(person, pod, f"!pod name {name}", "now called", bot)
            await say(person, pod, f"!network join {address}", "Joining", bot)
            await person.wait_for(pod, contains("now linked"), 60, sender=bot.user_id)
        await say(hank, pod_b, "!tree join", "on the phone tree", bot_b)

        await say(alice, pod_a, f"!alert urgent network {text}", "Forwarded to the pods", bot_a)
        shown = await hank.wait_for(pod_b, contains("Alert from the Elm Street pod (urgent)"), 60,
                                    sender=bot_b.user_id)
        assert text in shown.body and "phone tree: 1 person" in shown.body
        hank_dm = await dm_from_bot(hank)
        call = await hank.wait_for(hank_dm, contains("Phone tree alert"), 60, sender=bot_b.user_id)
        assert "Elm Street pod" in call.body and text in call.body
        await say(hank, hank_dm, "ok", "confirmation is recorded", bot_b)
        cora_dm = await dm_from_bot(cora)
        await cora.wait_for(cora_dm, contains("everyone confirmed"), 60, sender=bot_b.user_id)

        # The alert travelled once, with its text and pod name, never who sent it.
        await cora.wait_for(network, lambda e: (e.source["content"].get(KEY) or {}).get(
            "type") == "alert", 60, sender=bot_a.user_id)
        alerts = [c[KEY] for c in (e.source["content"] for e in cora.received(network))
                  if (c.get(KEY) or {}).get("type") == "alert"]
        assert len(alerts) == 1 and alerts[0]["text"] == text
        seen = json.dumps(alerts) + " ".join(hank.bodies(pod_b) + hank.bodies(hank_dm))
        assert alice.user_id not in seen
        assert sum("Alert from the Elm Street pod" in b for b in hank.bodies(pod_b)) == 1
        for log in (bot_a.log_text(), bot_b.log_text()):
            assert text not in log
    finally:
        await bot_a.stop()
        await bot_b.stop()
