"""Nothing lost under crashes, outages, rate limits, bursts, crypto trouble and storage trouble.

Real Synapse, encrypted rooms, the bot as a real process. Replies are counted by their reply
relation (`m.in_reply_to`) in the room's full history (/messages), so a limited sync timeline on
the people's side can never hide or double-count one.

Tests that need to stop or reconfigure Synapse start their own instance, so the session homeserver
other tests use is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from nio.api import Api
from nio.crypto.sessions import OutboundGroupSession

from bot.devserver import Synapse, synapse_python

from .botproc import BotProcess
from .people import MEGOLM, Person, contains

# The rate-limit test waits for Synapse's real limiter (0.2 messages/s after a burst of 10): 100
# replies take about 8 minutes. MAB_RATE_LIMIT_BURST=16 gives a quick local run.
RATE_LIMIT_BURST = int(os.environ.get("MAB_RATE_LIMIT_BURST", "100"))


# ---- helpers ------------------------------------------------------------------------------------


async def own_synapse(tmp_path: Path, **kwargs: object) -> Synapse:
    server = Synapse(tmp_path / "synapse", synapse_python(), **kwargs)
    await server.start()
    return server


async def make_pod(bot: BotProcess, people: list[Person]) -> str:
    owner = people[0]
    room = await owner.create_room("Fault pod", invite=[bot.user_id] + [p.user_id for p in people[1:]])
    for person in people[1:]:
        await person.join(room)
    await owner._sync_until(lambda: bot.user_id in owner.client.rooms[room].users, 30, "bot join")
    for person in people:
        await person.sync_once()
    return room


async def new_people(synapse: Synapse, *names: str) -> list[Person]:
    run = uuid.uuid4().hex[:6]
    return [await Person.create(synapse, f"{name}-{run}") for name in names]


def reply_target(event) -> str | None:
    relates = event.source.get("content", {}).get("m.relates_to") or {}
    return (relates.get("m.in_reply_to") or {}).get("event_id")


async def reply_counts(person: Person, room: str, bot_id: str) -> dict[str, int]:
    """Replies from the bot per replied-to event, over the room's whole history."""
    await person.sync_once()  # room keys for the bot's newest messages arrive as to-device
    counts: dict[str, int] = {}
    for event in await person.messages(room):
        if getattr(event, "sender", None) == bot_id:
            target = reply_target(event)
            if target:
                counts[target] = counts.get(target, 0) + 1
    return counts


def delivered_replies(database: Path, wanted: list[str]) -> int:
    """How many of `wanted` the bot has delivered a reply to, by its own outbox (cheap to poll)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT DISTINCT reply_to FROM outbox WHERE sent_at IS NOT NULL "
                              "AND reply_to IS NOT NULL").fetchall()
    except sqlite3.OperationalError:
        return 0
    done = {r[0] for r in rows}
    return sum(1 for e in wanted if e in done)


async def wait_for_replies(person: Person, room: str, bot: BotProcess, wanted: list[str],
                           timeout: float) -> dict[str, int]:
    """Wait (polling the bot's outbox) until every command is answered, then count the replies
    as the room's history shows them."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout * 4) + 2):
        if delivered_replies(bot.database, wanted) == len(wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    counts: dict[str, int] = {}
    for _ in range(20):  # the room's history can trail the bot's "sent" by a moment
        counts = await reply_counts(person, room, bot.user_id)
        if all(e in counts for e in wanted) or time.monotonic() > deadline + 10:
            break
        await asyncio.sleep(0.5)
    return counts


def assert_exactly_one_reply_each(counts: dict[str, int], wanted: list[str]) -> None:
    missing = [e for e in wanted if e not in counts]
    doubled = {e: n for e, n in counts.items() if e in wanted and n != 1}
    assert not missing, f"{len(missing)} of {len(wanted)} commands unanswered"
    assert not doubled, f"commands answered more than once: {doubled}"


async def fast_send(person: Person, room: str, texts: list[str]) -> list[str]:
    """Send as fast as the client can: one sync first, then back-to-back encrypted sends."""
    await person.sync_once()
    if person.client.should_query_keys:
        await person.client.keys_query()
    ids = []
    for text in texts:
        response = await person.client.room_send(
            room, "m.room.message", {"msgtype": "m.text", "body": text},
            ignore_unverified_devices=True,
        )
        event_id = getattr(response, "event_id", None)
        assert event_id, f"{person.name}: send failed: {response}"
        ids.append(event_id)
    return ids


def posts(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT kind, text FROM posts ORDER BY id").fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- crash ----------------------------------------------------------------------------------


async def test_kill_9_during_200_commands_from_4_people_loses_and_repeats_nothing(synapse, bot):
    people = await new_people(synapse, "ann", "ben", "cat", "dan")
    try:
        room = await make_pod(bot, people)
        texts = {p.user_id: [f"!{'need groceries' if i % 2 else 'offer ladder'} {p.name} {n}"
                             for n in range(50)] for i, p in enumerate(people)}
        sent: list[str] = []
        handled_at_kill: list[int] = []

        async def sender(person: Person) -> None:
            for text in texts[person.user_id]:
                response = await person.client.room_send(
                    room, "m.room.message", {"msgtype": "m.text", "body": text},
                    ignore_unverified_devices=True)
                sent.append(response.event_id)

        async def crasher() -> None:
            for _ in range(1200):  # up to 60 s
                if len(sent) >= 70:
                    break
                await asyncio.sleep(0.05)
            await bot.kill()  # SIGKILL: no clean-up of any kind
            with sqlite3.connect(bot.database) as db:
                handled_at_kill.append(db.execute(
                    "SELECT COUNT(*) FROM inbox WHERE handled_at IS NOT NULL").fetchone()[0])
            await asyncio.sleep(1)
            await bot.start()

        for person in people:
            await person.sync_once()
            if person.client.should_query_keys:
                await person.client.keys_query()
        await asyncio.gather(crasher(), *(sender(p) for p in people))
        assert len(sent) == 200
        assert handled_at_kill[0] < 200, "the kill came after the work; it proves nothing"
        counts = await wait_for_replies(people[0], room, bot, sent, 120)
        assert_exactly_one_reply_each(counts, sent)
        stored = posts(bot.database)
        assert len(stored) == 200
        assert len({text for _, text in stored}) == 200, "a post was stored twice"
    finally:
        for person in people:
            await person.close()


# ---- homeserver outage ----------------------------------------------------------------------


async def test_homeserver_outage_bot_backs_off_and_answers_before_and_after(tmp_path):
    server = await own_synapse(tmp_path)
    proc = None
    people: list[Person] = []
    try:
        proc = await BotProcess.create(server, tmp_path / "bot", "outagebot")
        await proc.start()
        people = await new_people(server, "olive")
        (olive,) = people
        room = await make_pod(proc, people)
        before = [await olive.send(room, f"!need groceries before {n}") for n in range(3)]
        await server.stop()
        offset = len(proc.log_text())
        down_for = 20
        await asyncio.sleep(down_for)
        attempts = re.findall(r"sync failed .*attempt (\d+)", proc.log_text()[offset:])
        assert proc.process.returncode is None, f"the bot died during the outage:\n{proc.log_tail()}"
        # Exponential backoff (1, 2, 4, 8, 16 s, capped at 60): about 5 tries in 20 s, not hundreds.
        assert 1 <= len(attempts) <= 8, attempts
        await server.start()
        after = [await olive.send(room, f"!need groceries after {n}") for n in range(3)]
        counts = await wait_for_replies(olive, room, proc, before + after, 90)
        assert_exactly_one_reply_each(counts, before + after)
        assert "sync recovered after" in proc.log_text()
        assert await proc.stop() == 0
    finally:
        for person in people:
            await person.close()
        if proc is not None:
            await proc.kill()
        await server.stop()


# ---- rate limits ----------------------------------------------------------------------------


async def exempt_from_rate_limits(server: Synapse, user_id: str) -> None:
    async with aiohttp.ClientSession() as http:
        token = await server._admin_token(http)
        async with http.post(
            f"{server.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            json={"messages_per_second": 0, "burst_count": 0},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()


@pytest.mark.timeout(900)
async def test_rate_limited_burst_is_answered_completely_and_in_order(tmp_path):
    server = await own_synapse(tmp_path, rate_limited=True)
    proc = None
    people: list[Person] = []
    try:
        proc = await BotProcess.create(server, tmp_path / "bot", "ratebot")
        await proc.start()
        people = await new_people(server, "rita")
        (rita,) = people
        await exempt_from_rate_limits(server, rita.user_id)  # only the bot meets the limiter
        room = await make_pod(proc, people)
        sent = await fast_send(rita, room, [f"!need groceries {n}" for n in range(RATE_LIMIT_BURST)])
        counts = await wait_for_replies(rita, room, proc, sent, 30 + 6 * RATE_LIMIT_BURST)
        assert_exactly_one_reply_each(counts, sent)
        history = await rita.messages(room)
        order = [reply_target(e) for e in history
                 if getattr(e, "sender", None) == proc.user_id and reply_target(e) in sent]
        assert order == sent, "replies came out of order"
        # The bot did meet the limiter (nio logs each 429 it waits out).
        assert "ratelimited" in proc.log_text() or RATE_LIMIT_BURST <= 10
    finally:
        for person in people:
            await person.close()
        if proc is not None:
            await proc.stop()
        await server.stop()


# ---- bursts past the timeline limit ---------------------------------------------------------


async def test_300_commands_at_once_from_3_people_get_300_replies(synapse, bot):
    people = await new_people(synapse, "pia", "quin", "ros")
    try:
        room = await make_pod(bot, people)
        batches = await asyncio.gather(*(
            fast_send(p, room, [f"!{'need groceries' if i != 1 else 'offer ladder'} {p.name} {n}"
                                for n in range(100)])
            for i, p in enumerate(people)))
        sent = [e for batch in batches for e in batch]
        counts = await wait_for_replies(people[0], room, bot, sent, 120)
        assert_exactly_one_reply_each(counts, sent)
        assert len(posts(bot.database)) == 300
    finally:
        for person in people:
            await person.close()


# ---- crypto ---------------------------------------------------------------------------------


async def test_restart_and_new_device_still_decrypt(synapse, bot, person_factory):
    alice = await person_factory("alice")
    room = await make_pod(bot, [alice])
    first = await alice.send(room, "!need groceries")
    await alice.wait_for(room, lambda e: reply_target(e) == first, 30, sender=bot.user_id)
    assert await bot.stop() == 0
    await bot.start()
    after_restart = await alice.send(room, "!needs")
    reply = await alice.wait_for(room, lambda e: reply_target(e) == after_restart, 30,
                                 sender=bot.user_id)
    assert "groceries" in reply.body  # the bot decrypted the command after its restart
    # The same person logs in on a second device; the bot's next reply must be readable there.
    second = await Person.create(synapse, alice.name, password=alice.password)
    try:
        await second._sync_until(lambda: room in second.client.rooms, 10, "room on 2nd device")
        question = await second.send(room, "!offers")
        answer = await second.wait_for(room, lambda e: reply_target(e) == question, 30,
                                       sender=bot.user_id)
        assert "offer" in answer.body.lower()
        later = await alice.send(room, "!needs")
        seen = await second.wait_for(room, lambda e: reply_target(e) == later, 30,
                                     sender=bot.user_id)
        assert "groceries" in seen.body
    finally:
        await second.close()


async def send_undecryptable(person: Person, room: str, session: OutboundGroupSession,
                             text: str) -> str:
    """An m.room.encrypted event under a Megolm session nobody else ever receives."""
    payload = {"type": "m.room.message", "room_id": room,
               "content": {"msgtype": "m.text", "body": text}}
    content = {
        "algorithm": MEGOLM,
        "sender_key": person.client.olm.account.identity_keys["curve25519"],
        "ciphertext": session.encrypt(json.dumps(payload)),
        "session_id": session.id,
        "device_id": person.device_id,
    }
    method, path, data = Api.room_send(person.client.access_token, room, "m.room.encrypted",
                                       content, uuid.uuid4().hex)
    response = await person.client.send(method, path, data)
    body = await response.json()
    assert response.status == 200, body
    return body["event_id"]


async def test_undecryptable_message_gets_one_kind_note(synapse, tmp_path, person_factory):
    proc = await BotProcess.create(synapse, tmp_path / "bot", f"bot-{uuid.uuid4().hex[:8]}",
                                   extra_matrix="undecryptable_patience_seconds = 3")
    await proc.start()
    try:
        alice = await person_factory("alice")
        room = await make_pod(proc, [alice])
        session = OutboundGroupSession()
        session.mark_as_shared()  # a lie: its key is never sent to anyone
        lost = [await send_undecryptable(alice, room, session, f"!need secret {n}") for n in range(2)]
        await proc.wait_for_log("asking for its keys", 30)
        note = await alice.wait_for(room, contains("couldn't read your last message"), 30,
                                    sender=proc.user_id)
        assert reply_target(note) in lost
        assert "Could you send it again" in note.body
        # Still working, and the note came once per sender and session, not per message.
        ok = await alice.send(room, "!need groceries")
        await alice.wait_for(room, lambda e: reply_target(e) == ok, 30, sender=proc.user_id)
        await asyncio.sleep(4)
        notes = [e for e in await alice.messages(room) if getattr(e, "sender", None) == proc.user_id
                 and "couldn't read" in (getattr(e, "body", "") or "")]
        assert len(notes) == 1
        assert posts(proc.database) == [("need", "groceries")]
    finally:
        await proc.stop()


# ---- storage ----------------------------------------------------------------------------------


async def test_locked_database_is_waited_for_not_failed(bot, person_factory):
    alice = await person_factory("alice")
    room = await make_pod(bot, [alice])
    await alice.send(room, "!help")  # warm up: the bot's session is shared with alice
    hold = 4.0
    locked = threading.Event()
    release = threading.Event()

    def hold_write_lock() -> None:
        db = sqlite3.connect(bot.database, timeout=1, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # the write lock, as another process would take it
        locked.set()
        release.wait(30)
        db.execute("ROLLBACK")
        db.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 10)
        started = time.monotonic()
        event_id = await alice.send(room, "!need groceries while locked")
        await asyncio.sleep(hold)
        released_at = time.monotonic()
        release.set()
        reply = await alice.wait_for(room, lambda e: reply_target(e) == event_id, 30,
                                     sender=bot.user_id)
        assert time.monotonic() >= released_at > started
        assert "Noted need" in reply.body
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)
    assert "handler failed" not in bot.log_text()
    assert "database is locked" not in bot.log_text()
    assert [t for _, t in posts(bot.database)] == ["groceries while locked"]


async def run_bot_until_exit(proc: BotProcess, timeout: float = 30) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(proc.workdir / "config.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=proc.workdir)
    output, _ = await asyncio.wait_for(child.communicate(), timeout)
    return child.returncode, output.decode(errors="replace")


def corrupt_btree(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE filler (x TEXT)")
    db.executemany("INSERT INTO filler VALUES (?)", [("x" * 200,) for _ in range(500)])
    db.commit()
    db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page + 8: 3 * page] = b"\xa5" * (page - 8)  # a b-tree page full of rubbish
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["not a database", "corrupt b-tree"])
async def test_corrupt_database_stops_the_bot_and_is_left_untouched(synapse, tmp_path, damage):
    proc = BotProcess(synapse, tmp_path / "bot", "@nobody:" + synapse.server_name, "unused")
    if damage == "not a database":
        proc.database.write_bytes(b"this is not an SQLite database " * 200)
    else:
        corrupt_btree(proc.database)
    before = proc.database.read_bytes()
    code, output = await run_bot_until_exit(proc)
    assert code != 0
    assert "cannot use the database" in output and "left untouched" in output, output
    assert proc.database.read_bytes() == before


# ---- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly_finishing_in_flight_work(synapse, bot, person_factory, sig):
    alice = await person_factory("alice")
    room = await make_pod(bot, [alice])
    sent = await fast_send(alice, room, [f"!need groceries {n}" for n in range(30)])
    offset = len(bot.log_text())
    await bot.wait_for_log("handled event", 30, offset)
    assert await bot.stop(sig) == 0
    log = bot.log_text()[offset:]
    assert "stopped" in log
    # Closed properly: the last connection's close checkpoints and removes the WAL file.
    wal = bot.database.with_name(bot.database.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(bot.database) as db:
        handled = db.execute("SELECT COUNT(*) FROM inbox WHERE handled_at IS NOT NULL").fetchone()[0]
        unsent = db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        posts_now = db.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
    assert posts_now == handled  # a handler either finished with its effect or never started
    assert unsent == 0  # in-flight replies were flushed before exit
    await bot.start()  # whatever was not taken yet is answered after the restart, once
    counts = await wait_for_replies(alice, room, bot, sent, 60)
    assert_exactly_one_reply_each(counts, sent)


# ---- metrics ----------------------------------------------------------------------------------


async def test_metrics_endpoint_and_healthz(synapse, tmp_path, person_factory):
    port = free_port()
    proc = await BotProcess.create(
        synapse, tmp_path / "bot", f"bot-{uuid.uuid4().hex[:8]}",
        extra_sections=f"\n[metrics]\nenabled = true\nport = {port}\n")
    await proc.start()
    try:
        alice = await person_factory("alice")
        room = await make_pod(proc, [alice])
        event_id = await alice.send(room, "!need groceries")
        await alice.wait_for(room, lambda e: reply_target(e) == event_id, 30, sender=proc.user_id)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        assert 'mab_commands_handled_total{command="need",outcome="ok"} 1.0' in text
        assert "mab_sync_lag_seconds" in text and "mab_last_good_sync_timestamp_seconds" in text
        assert "mab_scheduler_next_wake_timestamp_seconds" in text and "mab_handler_errors_total 0.0" in text
        assert "mab_room_keys_owed 0.0" in text and "mab_room_keys_given_up_total 0.0" in text
        assert "groceries" not in text and alice.user_id not in text
    finally:
        await proc.stop()
