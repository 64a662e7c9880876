"""One room that cannot be reached never holds up the others (issue 9, "no head of line").

Real Synapse, encrypted rooms, the bot as a real process.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from bot.messages import Outgoing, Rendered
from bot.storage import Storage

from .people import contains


async def _pod(bot, owner, name: str) -> str:
    room = await owner.create_room(name, invite=[bot.user_id])
    await owner._sync_until(lambda: bot.user_id in owner.client.rooms[room].users, 30, "bot join")
    return room


def _dead_letters(database) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT room_id, dead_reason FROM outbox WHERE dead_at IS NOT NULL "
                          "ORDER BY id").fetchall()


async def test_a_room_the_bot_was_removed_from_becomes_dead_letters_and_others_flow(
        bot, person_factory):
    alice = await person_factory("alice")
    room_a = await _pod(bot, alice, "Pod A")
    room_b = await _pod(bot, alice, "Pod B")
    await alice.send(room_a, "!need groceries")
    await alice.wait_for(room_a, contains("groceries"), sender=bot.user_id)

    # While the bot is down, replies and reminders for B are waiting in its outbox, and B's
    # coordinator removes the bot from B.
    await bot.stop()
    storage = await Storage.open(bot.database)
    async with storage.transaction() as tx:
        await tx.delivery.enqueue(
            [Outgoing(Rendered(f"Reminder {n} for pod B", f"Reminder {n} for pod B"),
                      room_id=room_b) for n in range(5)], datetime.now(UTC))
    await storage.close()
    kicked = await alice.client.room_kick(room_b, bot.user_id, reason="testing")
    assert not hasattr(kicked, "status_code"), kicked

    await bot.start()
    # Room A is answered as usual, whatever is stuck for B.
    await alice.send(room_a, "!offer ride to the clinic")
    await alice.wait_for(room_a, contains("ride to the clinic"), sender=bot.user_id, timeout=20)
    await bot.wait_for_log("gave up outbox message", timeout=30)

    dead = _dead_letters(bot.database)
    assert [room for room, _ in dead] == [room_b] * 5
    assert all("not in this room" in reason for _, reason in dead)
    # Nothing was sent into B after the removal, and nothing is left waiting.
    with sqlite3.connect(bot.database) as db:
        waiting = db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL "
                             "AND dead_at IS NULL").fetchone()[0]
    assert waiting == 0

