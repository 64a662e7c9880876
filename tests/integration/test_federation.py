"""Two homeservers federating on 127.0.0.1: the bot on one, people on both.

The bot lives on `synapse`; Bob lives on `second_synapse`, which some tests stop to play a
neighbour's homeserver going down. Timings are printed (run with -s) for the record, never
asserted.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from nio import JoinedRoomsResponse, RoomCreateError, RoomInviteError

from bot.devserver import Synapse

from .botproc import BotProcess
from .people import contains
from .test_bot_basics import ask, reply_to


async def pod_across_servers(person_factory, bot, second_synapse):
    """An encrypted room created by Alice (bot's server) with the bot and Bob (second server)."""
    alice = await person_factory("alice")
    bob = await person_factory("bob", server=second_synapse)
    room = await alice.create_room("Federated pod", invite=[bot.user_id, bob.user_id])
    await bob.wait_for_invite(room)
    started = time.monotonic()
    await bob.join(room)
    print(f"\nfederated join of {bob.user_id}: {time.monotonic() - started:.2f}s")
    await alice._sync_until(
        lambda: {bot.user_id, bob.user_id} <= set(alice.client.rooms[room].users), 30,
        "the bot and Bob in the room",
    )
    return room, alice, bob


async def test_the_bot_answers_a_person_on_another_homeserver_in_an_encrypted_room(
    person_factory, bot, second_synapse
):
    room, alice, bob = await pod_across_servers(person_factory, bot, second_synapse)
    assert bob.user_id.endswith(":" + second_synapse.server_name)

    need_id = await bob.send(room, "!need groceries")
    reply = await bob.wait_for(room, reply_to(need_id), 30, sender=bot.user_id)
    assert "Noted need" in reply.body
    assert (await bob.raw_event(room, reply.event_id))["type"] == "m.room.encrypted"

    # Alice, on the bot's server, reads Bob's request and the reply too: room keys crossed both
    # ways between the servers.
    seen = await alice.wait_for(room, contains("!need groceries"), 30, sender=bob.user_id)
    assert seen.decrypted
    await alice.wait_for(room, contains("Noted need"), 30, sender=bot.user_id)

    offered = await ask(alice, room, "!offer food", bot)
    assert "Possible match in food" in offered.body
    assert bob.user_id in offered.source["content"]["m.mentions"]["user_ids"]
    await bob.wait_for(room, contains("Possible match"), 30, sender=bot.user_id)


async def test_replies_keep_flowing_while_a_members_homeserver_is_down_and_it_catches_up(
    person_factory, bot, second_synapse
):
    room, alice, bob = await pod_across_servers(person_factory, bot, second_synapse)
    await ask(bob, room, "!need a ride", bot)  # the bot's room key reaches Bob's device

    await second_synapse.stop()
    reply = await ask(alice, room, "!need groceries", bot)
    assert "Noted need" in reply.body
    listing = await ask(alice, room, "!needs", bot)
    assert "a ride" in listing.body and "groceries" in listing.body
    assert bot.process.returncode is None

    started = time.monotonic()
    await second_synapse.start()
    print(f"\nsecond homeserver restarted in {time.monotonic() - started:.2f}s")
    # Bob speaking tells the bot's server that his is back (Synapse then stops backing off from
    # it) and it sends what Bob missed.
    started = time.monotonic()
    await bob.send(room, "back online")
    await bob.wait_for(room, contains("groceries"), 60, sender=bot.user_id)
    print(f"missed replies reached the restarted server in {time.monotonic() - started:.2f}s")
    await alice.wait_for(room, contains("back online"), 30, sender=bob.user_id)


async def test_a_member_whose_homeserver_was_down_when_the_room_key_went_out_still_reads_it(
    person_factory, bot, second_synapse
):
    """Bob's device never had an Olm session with the bot, and his server is down when the bot
    first shares a room key: no one-time key can be claimed, so nio skips his device. The bot
    owes him the key and gives it once his server answers again; he reads the reply."""
    room, alice, bob = await pod_across_servers(person_factory, bot, second_synapse)
    await second_synapse.stop()
    reply = await ask(alice, room, "!need groceries", bot)
    assert "Noted need" in reply.body

    await second_synapse.start()
    await bob.send(room, "back online")  # tells the bot's server that Bob's is back
    seen = await bob.wait_for(room, contains("Noted need"), 120, sender=bot.user_id)
    assert seen.event_id == reply.event_id
    assert "owed room key: given in" in bot.log_text()


async def test_inviting_someone_whose_homeserver_is_down_fails_and_leaves_the_room_behind(
    person_factory, second_synapse
):
    """What the bot meets when it opens a DM with, or invites, a person whose homeserver is
    down: the request fails after Synapse's own retries, and a created room stays created."""
    alice = await person_factory("alice")
    bob = await person_factory("bob", server=second_synapse)
    pod = await alice.create_room("pod")
    await second_synapse.stop()

    rooms_before = await alice.client.joined_rooms()
    assert isinstance(rooms_before, JoinedRoomsResponse)

    async def timed(what, request):
        started = time.monotonic()
        response = await request
        print(f"{what} {bob.user_id} (server down): {time.monotonic() - started:.2f}s "
              f"-> {response}")
        return response

    print()
    created, invited = await asyncio.gather(  # each waits out Synapse's retries; wait once
        timed("createRoom inviting", alice.client.room_create(invite=[bob.user_id],
                                                              is_direct=True)),
        timed("invite of", alice.client.room_invite(pod, bob.user_id)),
    )
    assert isinstance(created, RoomCreateError)
    assert isinstance(invited, RoomInviteError)
    rooms_after = await alice.client.joined_rooms()
    assert isinstance(rooms_after, JoinedRoomsResponse)
    assert len(set(rooms_after.rooms) - set(rooms_before.rooms)) == 1  # created, nobody invited


async def rooms_created_by(server: Synapse, user_id: str) -> list[dict]:
    async with aiohttp.ClientSession() as http:
        token = await server._admin_token(http)
        async with http.get(
            f"{server.base_url}/_synapse/admin/v1/rooms?limit=500",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            rooms = (await resp.json())["rooms"]
    return [room for room in rooms if room["creator"] == user_id]


async def test_a_reminder_dm_to_a_person_whose_homeserver_is_down_does_not_hold_up_the_pod(
    person_factory, synapse, second_synapse, tmp_path
):
    """Issue 9: Bob (second server) is signed up for a shift; his server stops; the reminder DM
    cannot be delivered, and the pod's replies keep flowing; exactly one DM room is made."""
    # The shift starts at the second minute boundary from now; its reminder falls due about
    # 40 s from now (time for the bot to start and Bob to sign up).
    now = datetime.now(UTC)
    start = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    offset_s = (start - now).total_seconds() - 40
    bot = await BotProcess.create(
        synapse, tmp_path / "bot", f"bot-{tmp_path.name[-12:]}",
        # Back-off capped at 5 s (default 300) so the test need not wait out long retries
        # once Bob's server is back; what it proves does not depend on the cap.
        extra_sections=f"[shifts]\nreminder_offsets_hours = [{offset_s / 3600!r}]\n"
                       "understaffed_alert_hours = 0\nlate_grace_minutes = 5\n"
                       "[delivery]\nmax_backoff_seconds = 5\n")
    await bot.start()
    try:
        room, alice, bob = await pod_across_servers(person_factory, bot, second_synapse)
        await ask(alice, room, f"!shift add Van run {start:%Y-%m-%d} {start:%H:%M}-"
                  f"{start + timedelta(hours=1):%H:%M} need 1", bot)
        await ask(bob, room, f"!signup S1 {start:%Y-%m-%d}", bot)
        await second_synapse.stop()

        # The reminder's room post arrives while Bob's DM cannot even be made.
        posted = await alice.wait_for(room, contains("starts in"), 90, sender=bot.user_id)
        assert "Van run" in posted.body
        failures = f"(dm:{bob.user_id}) failed"
        await bot.wait_for_log(failures, 60)
        started = time.monotonic()  # while the step retries, the pod's replies keep their pace
        listing = await ask(alice, room, "!needs", bot, timeout=10)
        assert "No open needs" in listing.body
        print(f"\na reply while Bob's reminder DM was failing: {time.monotonic() - started:.2f}s")
        for _ in range(600):  # up to 60 s
            if bot.log_text().count(failures) >= 2:
                break
            await asyncio.sleep(0.1)
        assert bot.log_text().count(failures) >= 2, bot.log_tail()
        created = await rooms_created_by(synapse, bot.user_id)
        print(f"rooms the bot created while Bob's server was down: {len(created)}")
        assert len(created) == 1
        assert bot.process.returncode is None

        # Bob's server comes back: he is invited into that room and gets his reminder there.
        await second_synapse.start()
        started = time.monotonic()
        await bob.send(room, "back online")  # tells the bot's server that Bob's is back
        dm = await bob.wait_for_invite(timeout=120)
        assert dm == created[0]["room_id"]
        await bob.join(dm)
        # The bot may send as soon as Bob is invited, before his server has joined the room:
        # his client then finds the reminder in the room's history (/messages backfills it
        # from the bot's server), not in its sync timeline.
        reminders: list[str] = []
        for _ in range(60):  # up to about 2 minutes
            await bob.sync_once()  # room keys arrive as to-device messages
            reminders = [body for event in await bob.messages(dm)
                         if getattr(event, "sender", None) == bot.user_id
                         and "starts in" in (body := getattr(event, "body", None) or "")]
            if reminders:
                break
            await asyncio.sleep(2)
        assert len(reminders) == 1, bot.log_tail()
        assert reminders[0].startswith("Reminder:") and "Van run" in reminders[0]
        print(f"the reminder reached Bob {time.monotonic() - started:.1f}s after his server "
              "came back")
        assert [r["room_id"] for r in await rooms_created_by(synapse, bot.user_id)] == [dm]
    finally:
        await bot.stop()
