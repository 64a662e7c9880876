"""The foundation on a real Synapse: encrypted rooms, invites, commands, restarts, bursts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.parse
import uuid

import aiohttp
import pytest

from .people import contains


async def pod_with(person_factory, bot, *names, encrypted=True):
    """A room created by the first person, with the bot and everyone else joined."""
    people = [await person_factory(n) for n in names]
    owner = people[0]
    room = await owner.create_room("Demo pod", invite=[bot.user_id] + [p.user_id for p in people[1:]],
                                   encrypted=encrypted)
    for person in people[1:]:
        await person.join(room)
    await owner._sync_until(lambda: bot.user_id in owner.client.rooms[room].users, 30, "bot join")
    return room, people


def reply_to(event_id):
    def matches(event):
        relates = event.source.get("content", {}).get("m.relates_to", {})
        return relates.get("m.in_reply_to", {}).get("event_id") == event_id
    return matches


async def ask(person, room, text, bot, timeout=30):
    event_id = await person.send(room, text)
    return await person.wait_for(room, reply_to(event_id), timeout, sender=bot.user_id)


async def test_joins_an_allowed_invite_and_answers_in_an_encrypted_room(person_factory, bot):
    room, (alice,) = await pod_with(person_factory, bot, "alice")
    reply = await ask(alice, room, "!help", bot)
    assert "!need" in reply.body
    raw = await alice.raw_event(room, reply.event_id)
    assert raw["type"] == "m.room.encrypted"
    assert reply.source["content"]["msgtype"] == "m.notice"


async def test_declines_an_invite_from_another_server(person_factory, bot, synapse):
    # Same homeserver but the allow-list only names this server's users, so use a room config
    # that the bot must refuse: an inviter outside the list is simulated by a restricted config.
    stranger = await person_factory("stranger")
    bot_config = bot.workdir / "config.toml"
    text = bot_config.read_text().replace(f'allowed_inviters = [":{synapse.server_name}"]',
                                          'allowed_inviters = ["@nobody:elsewhere.example"]')
    await bot.stop()
    bot_config.write_text(text)
    await bot.start()
    room = await stranger.create_room("not allowed", invite=[bot.user_id])
    await bot.wait_for_log(f"declining invite to {room}")
    await stranger.sync_once()
    assert bot.user_id not in stranger.client.rooms[room].users


async def test_need_and_offer_match_mentions_both_and_both_decrypt(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    reply = await ask(alice, room, "!need groceries", bot)
    assert "Noted need #1" in reply.body or "Noted need **#1**" in reply.body
    offered = await ask(bob, room, "!offer food", bot)
    assert "Possible match in food" in offered.body  # the match is in the reply to the offer
    seen_by_alice = await alice.wait_for(room, contains("Possible match"), sender=bot.user_id)
    for match in (offered, seen_by_alice):
        mentions = match.source["content"]["m.mentions"]["user_ids"]
        assert set(mentions) == {alice.user_id, bob.user_id}
        assert f"https://matrix.to/#/{alice.user_id}" in match.source["content"]["formatted_body"]


async def test_needs_claim_done_change_status(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    await ask(alice, room, "!need ride to clinic tuesday", bot)
    listing = await ask(bob, room, "!needs", bot)
    assert "ride to clinic tuesday" in listing.body
    claimed = await ask(bob, room, "!claim 1", bot)
    assert "claimed" in claimed.body
    done = await ask(alice, room, "!done 1", bot)
    assert "marked done" in done.body
    with sqlite3.connect(bot.database) as db:
        status, claimed_by = db.execute("SELECT status, claimed_by FROM posts").fetchone()
    assert (status, claimed_by) == ("done", bob.user_id)


async def test_unknown_command_gets_a_suggestion(person_factory, bot):
    room, (alice,) = await pod_with(person_factory, bot, "alice")
    reply = await ask(alice, room, "!nede groceries", bot)
    assert "Did you mean `!need`" in reply.body


async def test_unencrypted_room_gets_nothing_and_the_writer_an_encrypted_dm(person_factory, bot):
    room, (alice,) = await pod_with(person_factory, bot, "alice", encrypted=False)
    await alice.send(room, "!need groceries")
    dm = await alice.wait_for_invite()
    await alice.join(dm)
    assert alice.client.rooms[dm].encrypted
    warning = await alice.wait_for(dm, contains("not end-to-end encrypted"), sender=bot.user_id)
    assert warning is not None
    await alice.send(room, "!need ride")
    await alice.send(room, "!help")
    await asyncio.sleep(3)
    await alice.sync_once()
    assert alice.bodies(room, sender=bot.user_id) == []  # nothing, ever, in clear
    assert len(alice.bodies(dm, sender=bot.user_id)) == 1  # told once
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 0


async def test_restart_keeps_decrypting_skips_old_and_answers_missed(person_factory, bot):
    room, (alice,) = await pod_with(person_factory, bot, "alice")
    await ask(alice, room, "!need groceries", bot)
    assert await bot.stop() == 0
    missed = await alice.send(room, "!need ride to the station")
    await bot.start()
    reply = await alice.wait_for(room, reply_to(missed), sender=bot.user_id)
    assert "#2" in reply.body
    after = await ask(alice, room, "!needs", bot)
    assert "groceries" in after.body and "ride to the station" in after.body
    await asyncio.sleep(2)
    await alice.sync_once()
    replies_to_first = [e for e in alice.received(room) if e.sender == bot.user_id
                        and "Noted need" in e.body]
    assert len(replies_to_first) == 2  # #1 once before the restart, #2 once after


async def test_burst_of_150_commands_is_answered_exactly_once(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    sent = []
    for i in range(75):  # categories that never match, so only the replies are counted
        sent.append(await alice.send(room, f"!need groceries {i}"))
        sent.append(await bob.send(room, f"!offer ladder {i}"))
    wanted = set(sent)
    seen: dict[str, int] = {}

    def count_reply(event):
        target = event.source.get("content", {}).get("m.relates_to", {}).get(
            "m.in_reply_to", {}).get("event_id")
        if target in wanted:
            seen[target] = seen.get(target, 0) + 1
        return False

    deadline = asyncio.get_running_loop().time() + 120
    while asyncio.get_running_loop().time() < deadline:
        await alice.sync_once(1)
        seen.clear()
        for event in alice.received(room):
            if event.sender == bot.user_id:
                count_reply(event)
        if len(seen) == len(wanted):
            break
    assert len(seen) == 150, f"{150 - len(seen)} commands unanswered"
    assert set(seen.values()) == {1}
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 150


async def test_commands_from_before_the_bot_joined_are_not_acted_on(person_factory, bot):
    alice = await person_factory("alice")
    room = await alice.create_room("Old pod")
    await alice.send(room, "!need history from before the bot")
    await alice.client.room_invite(room, bot.user_id)
    await alice._sync_until(lambda: bot.user_id in alice.client.rooms[room].users, 30, "bot join")
    reply = await ask(alice, room, "!needs", bot)
    assert "No open needs" in reply.body
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == 0


async def test_a_revoked_access_token_stops_the_bot_with_a_clear_message(person_factory, bot):
    await bot.stop()
    data = bot.saved_session()
    data["access_token"] = "syt_revoked_" + "x" * 20
    bot.save_session(data)
    with pytest.raises(RuntimeError, match="bot exited with 3"):
        await bot.start()
    assert "no longer accepts the saved access token" in bot.log_text()
    assert "syt_revoked_" not in bot.log_text()


async def test_a_wrong_store_passphrase_stops_the_bot_with_a_clear_message(person_factory, bot):
    await bot.stop()
    token = bot.saved_session()["access_token"]
    passphrase_file = bot.workdir / "store-passphrase.txt"
    right = passphrase_file.read_text()
    passphrase_file.write_text("not-the-passphrase\n")
    try:
        with pytest.raises(RuntimeError, match="bot exited with 3"):
            await bot.start()
        log = bot.log_text()
        assert "store passphrase (matrix.store_passphrase) is not the one" in log
        assert "not-the-passphrase" not in log and token not in log
    finally:
        passphrase_file.write_text(right)
    await bot.start()  # the right passphrase still opens everything


async def test_a_direct_chat_is_recognised_and_answered_in_place(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    dm = await bob.create_room("", invite=[bot.user_id], is_direct=True)
    await bob._sync_until(lambda: bot.user_id in bob.client.rooms[dm].users, 30, "bot join")
    reply = await ask(bob, dm, "!help", bot)
    assert "!need" in reply.body
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT user_id FROM dm_rooms WHERE room_id = ?", (dm,)).fetchone() == (
            bob.user_id,)
    assert not any(e.sender == bot.user_id and "!need" in (getattr(e, "body", "") or "")
                   and "help" in (getattr(e, "body", "") or "") for e in await alice.messages(room))


async def joins_now(person_factory, name, room, inviter):
    """A new person, invited into `room` by `inviter`, who joins it."""
    person = await person_factory(name)
    await inviter.invite(room, person.user_id)
    await person.join(room)
    return person


async def restart_incrementally(bot):
    """Start the stopped bot and wait for its first sync, incremental; its log since the start."""
    offset = len(bot.log_text())
    await bot.start()
    await bot.wait_for_log("first sync complete: 1 rooms (incremental)", offset=offset)
    return bot.log_text()[offset:]


async def test_a_restart_rebuilds_its_rooms_and_syncs_only_what_changed(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    await ask(alice, room, "!need groceries", bot)
    assert await bot.stop() == 0
    # While the bot is down: carol joins, and bob becomes a coordinator.
    carol = await joins_now(person_factory, "carol", room, alice)
    levels = await alice.client.room_get_state_event(room, "m.room.power_levels")
    content = dict(levels.content)
    content["users"] = {**content.get("users", {}), bob.user_id: 100}
    await alice.client.room_put_state(room, "m.room.power_levels", content)
    assert "restored 1 rooms from the database" in await restart_incrementally(bot)
    # The bot knows carol joined: she can read its answer (it shared the room's key with her).
    reply = await ask(carol, room, "!need ride to the clinic", bot)
    assert "Noted need" in reply.body
    # And it knows bob's new power level.
    changed = await ask(bob, room, "!settings timebank on", bot)
    assert "is now" in changed.body


async def chatter(person, room, count):
    for n in range(count):
        await person.client.room_send(room, "m.room.message", {"msgtype": "m.text",
                                                                "body": f"chatter {n}"},
                                      ignore_unverified_devices=True)


async def test_someone_who_joined_in_a_gap_can_read_the_bots_answer(person_factory, bot):
    """Dave joins while the bot is down and says nothing; more messages follow than a sync
    carries. The bot reads the room whole before answering (Synapse happens to send a gappy
    sync's member changes even to a client that lazy-loads them; the bot does not count on it)
    and shares the room's key with him too."""
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    await ask(alice, room, "!need groceries", bot)
    assert await bot.stop() == 0
    dave = await joins_now(person_factory, "dave", room, alice)
    await chatter(alice, room, 105)  # more than the bot's sync timeline holds (TIMELINE_LIMIT)
    assert "read the members of 1 rooms" in await restart_incrementally(bot)
    event_id = await alice.send(room, "!need ride to the clinic")
    answer = await dave.wait_for(room, reply_to(event_id), 30, sender=bot.user_id)
    assert "Noted need" in answer.body


async def test_a_room_joined_late_counts_members_who_never_spoke(person_factory, bot):
    """The bot lazy-loads members: joining a room, its sync names only the members behind the
    last events. Dave joined long before the bot and never wrote; the pod's size counts him."""
    alice, dave = await person_factory("alice"), await person_factory("dave")
    room = await alice.create_room("Quiet pod", invite=[dave.user_id], encrypted=True)
    await dave.join(room)
    await chatter(alice, room, 105)
    await alice.invite(room, bot.user_id)
    await alice._sync_until(lambda: bot.user_id in alice.client.rooms[room].users, 30, "bot join")
    reply = await ask(alice, room, "!pod", bot)
    assert "Size: 2 people" in reply.body, reply.body


async def as_the_bot(synapse, bot, method, path, body=None):
    """A client-server API call with the bot's own access token: what its homeserver keeps
    for the bot's account."""
    headers = {"Authorization": f"Bearer {bot.saved_session()['access_token']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.request(method, f"{synapse.base_url}/_matrix/client/v3/{path}",
                                json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def unread_for_the_bot(synapse, bot, room):
    # A filter of its own each time: Synapse answers a repeated sync from its cache for minutes.
    only_room = json.dumps({"room": {"rooms": [room], "timeline": {"limit": 1},
                                     "state": {"not_types": [f"x.unique.{uuid.uuid4().hex}"]}},
                            "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}})
    body = await as_the_bot(synapse, bot, "GET",
                            f"sync?timeout=0&filter={urllib.parse.quote(only_room)}")
    return body["rooms"]["join"][room]["unread_notifications"].get("notification_count", 0)


MASTER_RULE = "pushrules/global/override/.m.rule.master/enabled"


async def test_the_bots_account_keeps_no_notification_counts(person_factory, bot, synapse):
    """The homeserver stores nothing to count for the bot, and counts stored before (an account
    from an older version) are cleared with a private receipt."""
    room, (alice,) = await pod_with(person_factory, bot, "alice")
    assert await bot.stop() == 0
    await as_the_bot(synapse, bot, "PUT", MASTER_RULE, {"enabled": False})
    for text in ("hello all", "anyone free on saturday?"):
        await alice.send(room, text)
    assert await unread_for_the_bot(synapse, bot, room) == 2
    await bot.start()
    for _ in range(150):  # 0.5 s steps; Synapse takes receipts into its counts every 30 s
        if await unread_for_the_bot(synapse, bot, room) == 0:
            break
        await asyncio.sleep(0.5)
    assert await unread_for_the_bot(synapse, bot, room) == 0
    assert (await as_the_bot(synapse, bot, "GET", MASTER_RULE))["enabled"] is True
    await ask(alice, room, "!need groceries", bot)
    await alice.send(room, "thanks!")
    assert await unread_for_the_bot(synapse, bot, room) == 0
