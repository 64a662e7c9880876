"""Need-to-know on a real Synapse with encrypted rooms: private intake by DM, redacted pod notices,
introductions in new private rooms, coordinators, !forgetme, and what reaches disk and logs."""

from __future__ import annotations

import asyncio
import sqlite3
import stat

from nio import RedactedEvent

from .botproc import BotProcess
from .people import contains

SECRET = "insulin pickup at 12 Elm Street, flat 3"


async def wait_bot_joined(person, room, bot):
    await person._sync_until(lambda: bot.user_id in person.client.rooms[room].users, 30, "bot join")


async def pod_with(person_factory, bot, *names):
    people = [await person_factory(n) for n in names]
    owner = people[0]
    room = await owner.create_room("Pod", invite=[bot.user_id] + [p.user_id for p in people[1:]])
    for person in people[1:]:
        await person.join(room)
    await wait_bot_joined(owner, room, bot)
    return room, people


async def open_dm(person, bot):
    room = await person.create_room("bot", invite=[bot.user_id], is_direct=True)
    await wait_bot_joined(person, room, bot)
    return room


async def say(person, room, text, expect, bot, timeout=30):
    """Send `text` and wait for the bot's next message containing `expect`."""
    event_id = await person.send(room, text)
    return await person.wait_for(room, contains(expect), timeout, sender=bot.user_id,
                                 after=event_id)


def rows_naming(database, text):
    """Per table, rows with `text` in any text column (like Storage.table_rows_mentioning)."""
    found = {}
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")
                       if (r[2] or "").upper() in ("TEXT", "")]
            if not columns:
                continue
            where = " OR ".join(f"instr({c}, ?) > 0" for c in columns)
            count = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}",  # noqa: S608
                               [text] * len(columns)).fetchone()[0]
            if count:
                found[table] = count
    return found


async def test_private_request_end_to_end(person_factory, bot):
    pod, (alice, bob, carol) = await pod_with(person_factory, bot, "alice", "bob", "carol")
    dm = await open_dm(alice, bot)

    # abort at a step
    await say(alice, dm, "hello", "What kind of help", bot)
    await say(alice, dm, "food", "Tell me the details", bot)
    await say(alice, dm, "stop", "Nothing was posted", bot)

    # the real one, with a restart in the middle
    await say(alice, dm, "hi", "What kind of help", bot)
    await say(alice, dm, "medicine", "Tell me the details", bot)
    await say(alice, dm, SECRET, "How urgent", bot)
    assert await bot.stop() == 0
    await bot.start()
    summary = await say(alice, dm, "1", "How should it appear", bot)
    summary = await say(alice, dm, "1", "Reply yes to post it", bot)
    assert SECRET in summary.body
    await say(alice, dm, "yes", "Posted as", bot)
    notice = await bob.wait_for(pod, contains("Someone needs: medical (urgent)"), sender=bot.user_id)
    assert alice.user_id not in notice.body and SECRET not in notice.body
    assert notice.source["content"]["m.mentions"] == {"user_ids": []}

    # a claim asks alice first; only on yes is a new private room made
    await say(bob, pod, "!claim 1", "asked the person behind", bot)
    ask = await alice.wait_for(dm, contains("offered to help"), sender=bot.user_id)
    assert bob.user_id in ask.body
    await say(alice, dm, "yes", "invited you both", bot)
    intro_room = await alice.wait_for_invite()
    assert await bob.wait_for_invite(intro_room) == intro_room
    await alice.join(intro_room)
    await bob.join(intro_room)
    for person in (alice, bob):
        intro = await person.wait_for(intro_room, contains(SECRET), sender=bot.user_id)
        assert (await person.raw_event(intro_room, intro.event_id))["type"] == "m.room.encrypted"
    room = bob.client.rooms[intro_room]
    assert room.encrypted
    assert set(room.users) == {bot.user_id, alice.user_id, bob.user_id}
    await carol.wait_for(pod, contains("is being handled"), sender=bot.user_id)

    # a non-coordinator may not remove someone else's post; the room creator (PL 100) may
    await say(bob, pod, "!need bread", "Noted need", bot)
    await say(carol, pod, "!cancel 2", "Only the person who posted", bot)
    await say(carol, pod, "!done 2", "or a coordinator", bot)
    await say(alice, pod, "!cancel 2", "cancelled", bot)

    # deleting one's own !need message withdraws the post
    need_id = await carol.send(pod, "!need a ladder for saturday")
    await carol.wait_for(pod, contains("Noted need"), sender=bot.user_id, after=need_id)
    await carol.client.room_redact(pod, need_id)
    await carol.wait_for(pod, contains("was withdrawn: its message was deleted"),
                         sender=bot.user_id)

    # the pod room's whole decrypted history never shows the detail
    history = await carol.messages(pod)
    bodies = [getattr(e, "body", "") or "" for e in history]
    assert sum(SECRET in b for b in bodies) == 0
    assert any("Someone needs" in b for b in bodies)

    # forget alice entirely
    await say(alice, dm, "!forgetme", "Reply yes to erase", bot)
    await say(alice, dm, "yes", "Done. I erased", bot)
    assert rows_naming(bot.database, alice.user_id) == {}
    assert rows_naming(bot.database, SECRET) == {}
    # the bot deleted its own messages in the DM (the summary with the detail among them)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        history = await alice.messages(dm)
        left = [e.body for e in history if getattr(e, "sender", None) == bot.user_id
                and SECRET in (getattr(e, "body", "") or "")]
        redacted = [e for e in history if isinstance(e, RedactedEvent)
                    and e.sender == bot.user_id]
        if not left and len(redacted) >= 5:
            break
        assert asyncio.get_running_loop().time() < deadline, (left, len(redacted))
        await asyncio.sleep(0.5)

    # hygiene: private files, and neither the token nor the detail in a DEBUG log
    assert stat.S_IMODE(bot.database.stat().st_mode) == 0o600
    store = bot.workdir / "store"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    session = store / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    token = bot.saved_session()["access_token"]
    assert token.encode() not in session.read_bytes()  # sealed with the store passphrase
    log = bot.log_text()
    assert "DEBUG" in log
    assert token not in log and SECRET not in log and bot.password not in log


async def test_idle_intake_times_out_with_a_message(person_factory, synapse, tmp_path):
    proc = await BotProcess.create(synapse, tmp_path / "bot", f"tbot-{tmp_path.name[-12:]}",
                                   extra_sections="\n[privacy]\nintake_timeout_minutes = 0.1\n")
    await proc.start()
    try:
        pod, (alice,) = await pod_with(person_factory, proc, "alice")
        dm = await open_dm(alice, proc)
        await say(alice, dm, "hello", "What kind of help", proc)
        dropped = await alice.wait_for(dm, contains("dropped our unfinished conversation"),
                                       timeout=40, sender=proc.user_id)
        assert "nothing was posted" in dropped.body
        with sqlite3.connect(proc.database) as db:
            assert db.execute("SELECT COUNT(*) FROM intake").fetchone()[0] == 0
    finally:
        await proc.stop()
