"""Commands that wait together are handled in one transaction, each in its own savepoint; the
storage's inline connection waits for another process's lock without holding up the event loop."""

import asyncio
import sqlite3

import pytest

from bot import storage as storage_module
from bot.context import Incoming
from bot.storage import Storage

from .conftest import POD
from .test_privacy import ALICE, DM, dm, mentioning

BOB = "@bob:test"


async def receive_together(pod, messages: list[tuple[str, str, str, bool]]) -> list[str]:
    """Deliver several messages in one sync; return their event ids."""
    items = [Incoming(f"$together{n}", room, sender, text, direct, pod.clock())
             for n, (sender, room, text, direct) in enumerate(messages)]
    await pod.app.receive(items)
    await pod.settle()
    return [item.event_id for item in items]


async def test_a_failing_command_in_a_batch_is_undone_alone(pod, monkeypatch):
    import bot.commands.posts as posts

    real = posts.find_matches

    def fails_for_boom(new, candidates, limit, pod=()):
        if "boom" in new.text:
            raise RuntimeError("boom")
        return real(new, candidates, limit, pod)

    monkeypatch.setattr(posts, "find_matches", fails_for_boom)
    ids = await receive_together(pod, [(ALICE, POD, "!need groceries", False),
                                       (BOB, POD, "!need boom box", False),
                                       (BOB, POD, "!offer soup", False)])
    replies = {o.reply_to: o.message.body for o in pod.transport.sent}
    assert len(pod.transport.sent) == 3
    assert "Noted need **#1**" in replies[ids[0]]
    assert "something went wrong" in replies[ids[1]]
    # The failed command's half-made post was undone; the number it took was given back.
    assert "Noted offer **#2**" in replies[ids[2]] and "@alice:test needs **#1**" in replies[ids[2]]
    async with pod.storage.transaction() as tx:
        assert [(p.number, p.text) for p in await tx.posts.list(POD, limit=10)] == [
            (1, "groceries"), (2, "soup")]
    # Run again (a restart): nothing is handled twice.
    await pod.app.start_pending_workers()
    await pod.app.run_until_idle()
    assert len(pod.transport.sent) == 3


async def test_a_command_after_forgetme_in_the_same_sync_is_not_acted_on(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries")
    await dm(pod, "!forgetme")
    await receive_together(pod, [(ALICE, DM, "yes", True), (ALICE, DM, "!need rent help", True)])
    assert pod.transport.sent[-1].message.body.startswith("Done. I erased:")
    assert await mentioning(pod, ALICE) == {}
    assert await mentioning(pod, "rent help") == {}


async def test_storage_waits_for_another_writer_without_blocking_the_loop(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    other = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(1000):
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    asyncio.get_running_loop().call_later(0.5, other.execute, "ROLLBACK")

    async with storage.transaction() as tx:
        await tx.delivery.set_meta("written", "after the lock")
    assert ticks >= 20  # the loop kept running while the transaction waited
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("written") == "after the lock"
    ticking.cancel()
    other.close()
    await storage.close()


async def test_storage_gives_up_on_a_lock_held_too_long(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_module, "_LOCK_WAIT_SECONDS", 0.3)
    storage = await Storage.open(tmp_path / "bot.db")
    other = sqlite3.connect(tmp_path / "bot.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        async with storage.transaction() as tx:
            await tx.delivery.set_meta("never", "written")
    other.execute("ROLLBACK")
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("never") is None
    other.close()
    await storage.close()


async def test_a_blank_direct_message_gets_the_first_question_not_an_apology(pod_rooms):
    replies = await dm(pod_rooms, "   ")
    assert len(replies) == 1 and "went wrong" not in replies[0]
