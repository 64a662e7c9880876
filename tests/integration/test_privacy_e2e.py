"""Need-to-know on a real Synapse with encrypted rooms: private intake by DM, redacted pod notices,
introductions in new private rooms, coordinators, !forgetme, and what reaches disk and logs."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import stat
from urllib.parse import quote

import aiohttp
from nio import MegolmEvent, RedactedEvent

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


async def dm_from_bot(person):
    """Accept the bot's invite to a new direct chat; its room id."""
    room = await person.wait_for_invite()
    await person.join(room)
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

    # a claim asks alice first (and, about an anonymous request, bob is answered by DM); only
    # on yes is a new private room made
    await bob.send(pod, "!claim 1")
    bob_dm = await dm_from_bot(bob)
    await bob.wait_for(bob_dm, contains("asked the person behind"), sender=bot.user_id)
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


# ---- anonymity against the requester's own commands (issue 10, item 2) ---------------------------


def names(event, person, display_name, their_events):
    """Whether a message names the person: by id or display name in its body or HTML, in its
    mentions, or by replying to one of their messages (clients show whose message it answers)."""
    content = event.source.get("content", {})
    text = (content.get("body") or "") + (content.get("formatted_body") or "")
    mentioned = (content.get("m.mentions") or {}).get("user_ids") or []
    replied = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
    return (person in mentioned or person in text or display_name in text
            or replied in their_events)


def about_number(event, number):
    content = event.source.get("content", {})
    text = (content.get("body") or "") + (content.get("formatted_body") or "")
    return re.search(rf"#{number}(?!\d)|\b(?:claim|done|cancel|renew) #?{number}(?!\d)",
                     text) is not None


async def test_requester_commands_never_unmask_them(person_factory, bot):
    pod, (carol, alice, bob) = await pod_with(person_factory, bot, "carol", "alice", "bob")
    dm = await open_dm(alice, bot)
    await say(alice, dm, "hi", "What kind of help", bot)
    await say(alice, dm, "medicine", "Tell me the details", bot)
    await say(alice, dm, SECRET, "How urgent", bot)
    await say(alice, dm, "1", "How should it appear", bot)
    await say(alice, dm, "1", "Reply yes to post it", bot)  # 1: anonymous
    await say(alice, dm, "yes", "Posted as", bot)
    await carol.wait_for(pod, contains("Someone needs: medical"), sender=bot.user_id)
    await say(alice, pod, "!need bread", "Noted need", bot)  # #2, public and hers
    await say(bob, pod, "!claim 2", "is claimed", bot)  # names alice, with #2

    # the requester tries everything on #1 in the pod: the room sees nothing, she hears by DM
    reply = await say(alice, pod, "!mine", "Your posts", bot)
    assert "#2" in reply.body and "#1" not in reply.body
    for command in ("!claim 1", "!renew 1", "!done 1", "!cancel 1"):
        await alice.send(pod, command)
        told = await alice.wait_for(dm, contains("your anonymous request"), sender=bot.user_id)
        assert f"`{command}`" in told.body
    # ...and does it where it belongs, in the DM
    await say(alice, dm, "!renew 1", "renewed", bot)
    assert "#1" in (await say(alice, dm, "!mine", "Your posts", bot)).body

    async def bot_messages_in_pod():
        """Another member reads the pod's whole decrypted timeline (every bot message read)."""
        for _ in range(20):
            await carol.sync_once()
            events = [e for e in await carol.messages(pod)
                      if getattr(e, "sender", None) == bot.user_id]
            if not any(isinstance(e, MegolmEvent) for e in events):
                return [e for e in events if hasattr(e, "body")]
            await asyncio.sleep(0.5)
        raise AssertionError("some of the bot's messages in the pod stayed unreadable")

    display_name = carol.client.rooms[pod].user_name(alice.user_id) or alice.name
    her_events = {e.event_id for e in await carol.messages(pod)
                  if getattr(e, "sender", None) == alice.user_id}
    history = await bot_messages_in_pod()
    naming_alice = [e for e in history if names(e, alice.user_id, display_name, her_events)]
    assert len(naming_alice) >= 3 and [e for e in history if about_number(e, 1)]
    assert [e.body for e in naming_alice if about_number(e, 1)] == []

    # !forgetme withdraws her public #2 aloud and her anonymous #1 without a word
    await say(alice, dm, "!forgetme", "Reply yes to erase", bot)
    await say(alice, dm, "yes", "Done. I erased", bot)
    await carol.wait_for(pod, contains("#2** was withdrawn"), sender=bot.user_id)
    await asyncio.sleep(2)
    history = await bot_messages_in_pod()
    assert [e.body for e in history if names(e, alice.user_id, display_name, her_events)
            and about_number(e, 1)] == []
    assert [e.body for e in history if "withdrawn" in e.body] == ["**#2** was withdrawn."]


# ---- encrypted or nothing (issue 10, item 3) -------------------------------------------------------

# What the bot sends in clear because Matrix requires it: the state of the rooms it creates (and
# its own membership in the rooms it joins), and redactions, which carry no content.
CLEAR_BY_PROTOCOL = {"m.room.redaction"}


async def events_sent_by_the_bot(bot):
    """Every event the bot sent, in every room it has joined, read through /messages with a
    second login of the bot's own account (logged out again at the end)."""
    base = bot.synapse.base_url
    sent: dict[str, list[dict]] = {}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/_matrix/client/v3/login", json={
                "type": "m.login.password", "password": bot.password,
                "identifier": {"type": "m.id.user", "user": bot.user_id}}) as resp:
            token = (await resp.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        try:
            async with http.get(f"{base}/_matrix/client/v3/joined_rooms", headers=auth) as resp:
                rooms = (await resp.json())["joined_rooms"]
            for room in rooms:
                start, events = None, []
                for _ in range(50):
                    params = {"dir": "b", "limit": "100", **({"from": start} if start else {})}
                    async with http.get(f"{base}/_matrix/client/v3/rooms/{quote(room, safe='')}"
                                        "/messages", params=params, headers=auth) as resp:
                        page = await resp.json()
                    events += page.get("chunk", [])
                    if not page.get("chunk") or not page.get("end"):
                        break
                    start = page["end"]
                sent[room] = [e for e in events if e.get("sender") == bot.user_id]
        finally:
            async with http.post(f"{base}/_matrix/client/v3/logout", headers=auth):
                pass
    return sent


async def test_every_event_the_bot_sent_is_encrypted(person_factory, bot):
    pod, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    # an unencrypted room, and a direct chat made without encryption
    clear_room = await bob.create_room("Clear", invite=[bot.user_id], encrypted=False)
    await wait_bot_joined(bob, clear_room, bot)
    clear_dm = await alice.create_room("bot", invite=[bot.user_id], is_direct=True,
                                       encrypted=False)
    await wait_bot_joined(alice, clear_dm, bot)

    await bob.send(clear_room, "!need groceries")  # told by a fresh encrypted DM
    bob_dm = await dm_from_bot(bob)
    await bob.wait_for(bob_dm, contains("not end-to-end encrypted"), sender=bot.user_id)
    await alice.send(clear_dm, "hello")  # the same for a DM that is not encrypted
    alice_dm = await dm_from_bot(alice)
    assert alice_dm != clear_dm and alice.client.rooms[alice_dm].encrypted
    await alice.wait_for(alice_dm, contains("not end-to-end encrypted"), sender=bot.user_id)

    # a private request through the encrypted DM: the unencrypted room is never offered as a pod
    await say(alice, alice_dm, "hi", "What kind of help", bot)
    await say(alice, alice_dm, "food", "Tell me the details", bot)
    await say(alice, alice_dm, SECRET, "How urgent", bot)
    summary = await say(alice, alice_dm, "1", "How should it appear", bot)
    assert "Which pod" not in summary.body and "Clear" not in summary.body
    await say(alice, alice_dm, "1", "Reply yes to post it", bot)
    await say(alice, alice_dm, "yes", "Posted as", bot)
    # pod replies, a mention, a file, a consent question, an introduction room, redactions
    await say(bob, pod, "!offer soup tonight", "Noted offer", bot)
    await say(bob, pod, "!shifts ics", "", bot)
    await say(alice, alice_dm, "yes", "invited you both", bot)
    intro = await alice.wait_for_invite()
    await alice.join(intro)
    await alice.wait_for(intro, contains(SECRET), sender=bot.user_id)
    await say(alice, alice_dm, "!forgetme", "Reply yes to erase", bot)
    await say(alice, alice_dm, "yes", "Done. I erased", bot)
    await asyncio.sleep(3)  # the redactions go out

    sent = await events_sent_by_the_bot(bot)
    assert {pod, clear_room, clear_dm, bob_dm, alice_dm, intro} <= set(sent)
    in_clear = {(room, e["type"]) for room, events in sent.items() for e in events
                if "state_key" not in e and e["type"] != "m.room.encrypted"}
    assert {t for _, t in in_clear} <= CLEAR_BY_PROTOCOL, in_clear
    assert any(t == "m.room.redaction" for _, t in in_clear)  # the check sees what it must
    encrypted = [e for events in sent.values() for e in events if e["type"] == "m.room.encrypted"]
    assert len(encrypted) >= 15
    # in the rooms made without encryption, the bot's only event is its own join
    for room in (clear_room, clear_dm):
        assert [(e["type"], e.get("state_key")) for e in sent[room]] == [
            ("m.room.member", bot.user_id)]
    state = sorted({e["type"] for events in sent.values() for e in events if "state_key" in e})
    print("state events the bot sent (clear by protocol):", state)
