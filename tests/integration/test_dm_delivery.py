"""A private message to someone who never wrote to the bot: a new encrypted direct chat they can read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .people import contains
from .test_bot_basics import ask, pod_with


async def test_first_dm_in_a_new_direct_chat_is_readable_after_joining(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    day = datetime.now(UTC) + timedelta(days=2)
    await ask(alice, room, f"!shift add Van run {day:%Y-%m-%d} 10:00-12:00 need 1", bot)
    await ask(bob, room, f"!signup S1 {day:%Y-%m-%d}", bot)
    await ask(bob, room, f"!standin S1 {day:%Y-%m-%d}", bot)
    await ask(alice, room, "!cover R1", bot)

    dm = await bob.wait_for_invite(timeout=60)
    assert dm != room
    await bob.join(dm)
    released = await bob.wait_for(dm, contains("released"), 60, sender=bot.user_id)
    assert released.decrypted and alice.user_id in released.body
    assert (await bob.raw_event(dm, released.event_id))["type"] == "m.room.encrypted"
    members = await bob.client.joined_members(dm)
    assert sorted(m.user_id for m in members.members) == sorted([bob.user_id, bot.user_id])
