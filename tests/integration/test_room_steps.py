"""kill -9 at each point of an introduction's room step (bot/actions.py), on a real Synapse with
the bot as a real process: after the restart there is exactly one introduction room, with exactly
the two people in it, and the introduction is in it once.

The bot dies at a named point through its test-only crash hook (MAB_TEST_CRASH_AT, exit 137, as
abrupt as kill -9: no clean-up runs), so each point is hit exactly rather than by timing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import aiohttp
import pytest

from bot.devserver import Synapse

from .botproc import BotProcess
from .people import contains
from .test_federation import rooms_created_by
from .test_privacy_e2e import SECRET, open_dm, pod_with, say

INTRODUCTION = "This private room is just for request"


async def room_members(server: Synapse, room_id: str) -> set[str]:
    async with aiohttp.ClientSession() as http:
        token = await server._admin_token(http)
        async with http.get(
            f"{server.base_url}/_synapse/admin/v1/rooms/{room_id}/members",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return set((await resp.json())["members"])


@pytest.mark.parametrize("point", ["before-create-room", "after-create-room", "before-commit"])
async def test_kill_9_at_each_point_of_an_introduction_makes_one_room_and_one_introduction(
    synapse, tmp_path, person_factory, point
):
    proc = await BotProcess.create(synapse, tmp_path / "bot", f"steps-{uuid.uuid4().hex[:8]}")
    await proc.start(test_env={"MAB_TEST_CRASH_AT": point})
    try:
        pod, (alice, bob) = await pod_with(person_factory, proc, "alice", "bob")
        dm = await open_dm(alice, proc)
        await say(alice, dm, "hi", "What kind of help", proc)
        await say(alice, dm, "medicine", "Tell me the details", proc)
        await say(alice, dm, SECRET, "How urgent", proc)
        await say(alice, dm, "1", "How should it appear", proc)
        await say(alice, dm, "1", "Reply yes to post it", proc)
        await say(alice, dm, "yes", "Posted as", proc)
        # Bob's own direct chat with the bot, so that the only room step is the introduction's;
        # a claim of an anonymous request is answered there, never in the pod.
        bob_dm = await open_dm(bob, proc)
        await bob.send(pod, "!claim 1")
        await bob.wait_for(bob_dm, contains("asked the person behind"), sender=proc.user_id)
        await alice.wait_for(dm, contains("offered to help"), sender=proc.user_id)
        await alice.send(dm, "yes")
        assert await asyncio.wait_for(proc.process.wait(), 60) == 137
        assert f"test crash point {point} reached" in proc.log_text()
        made_before_restart = len(await rooms_created_by(synapse, proc.user_id))
        assert made_before_restart == (0 if point == "before-create-room" else 1)

        await proc.start()  # no crash point this time
        room = await alice.wait_for_invite(timeout=60)
        assert await bob.wait_for_invite(room) == room
        await alice.join(room)
        await bob.join(room)
        await alice.wait_for(room, contains(SECRET), 60, sender=proc.user_id)
        await alice.wait_for(dm, contains("invited you both"), 30, sender=proc.user_id)

        assert [r["room_id"] for r in await rooms_created_by(synapse, proc.user_id)] == [room]
        # A room made before the crash was found again by its tag, not made twice.
        assert ("found by its tag" in proc.log_text()) == (made_before_restart == 1)
        assert await room_members(synapse, room) == {proc.user_id, alice.user_id, bob.user_id}
        bot_said = [getattr(e, "body", "") or "" for e in await alice.messages(room)
                    if getattr(e, "sender", None) == proc.user_id]
        assert sum(INTRODUCTION in body for body in bot_said) == 1, bot_said
        with sqlite3.connect(proc.database) as db:
            assert db.execute("SELECT status, room_id FROM introductions").fetchall() == [
                ("accepted", room)]
            assert db.execute("SELECT status, result FROM actions").fetchall() == [
                ("done", room)]
    finally:
        await proc.stop()
