"""Retention as one table of rules: every personal column has one, and the sweep applies them
(claimed posts, shift data, delivery records), in chunks, leaving nothing readable in the file."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

from bot import retention
from bot.commands.privacy import sweep
from bot.models import PostStatus
from bot.storage import Storage

from .conftest import ALICE, BOB, CAROL, DM, POD, SECRET


def schema_of(path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}


async def test_every_personal_column_has_a_retention_rule(tmp_path):
    storage = await Storage.open(tmp_path / "fresh.db")  # every migration applied
    await storage.close()
    schema = schema_of(tmp_path / "fresh.db")
    assert retention.uncovered(schema) == []
    assert retention.unknown(schema) == []
    # ...and the check does fail for a column nobody decided about
    with sqlite3.connect(tmp_path / "fresh.db") as db:
        db.execute("ALTER TABLE posts ADD COLUMN nickname TEXT")
        db.execute("CREATE TABLE favourites (person TEXT)")
    assert retention.uncovered(schema_of(tmp_path / "fresh.db")) == [
        ("favourites", "person"), ("posts", "nickname")]


async def rows(pod, sql, *params):
    async with pod.storage.transaction() as tx:
        return [tuple(r) for r in await tx.fetchall(sql, params)]


async def test_a_claimed_post_is_closed_when_untouched_then_erased(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, f"!need {SECRET}")
    await pod.say(BOB, "!claim 1")
    pod.clock.advance(days=13)
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT status, author FROM posts") == [("claimed", ALICE)]
    pod.clock.advance(days=2)  # untouched for post_expiry_days (14): closed
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT status, author, claimed_by FROM posts") == [
        ("expired", ALICE, BOB)]
    pod.clock.advance(days=31)  # then erased like any closed post
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT status, author, claimed_by, text, category FROM posts") == [
        ("expired", None, None, None, "medical")]


async def test_shift_data_is_swept_after_the_date_plus_retention(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    assert "S1" in await pod.reply_to(CAROL, "!shift add Sorting 2026-11-28 10:00-13:00 need 3")
    await pod.say(ALICE, "!signup S1 2026-11-28")
    await pod.say(BOB, "!signup S1 all")
    assert "R1" in await pod.reply_to(ALICE, "!standin S1 2026-11-28")
    pod.clock.now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    assert "didn't come" in await pod.reply_to(CAROL, f"!noshow {BOB} S1 2026-11-28")
    personal = ("SELECT (SELECT COUNT(*) FROM shift_signups), (SELECT COUNT(*) FROM "
                "standin_requests), (SELECT COUNT(*) FROM noshows), (SELECT created_by FROM shifts)")
    pod.clock.now = datetime(2026, 12, 27, 9, 0, tzinfo=UTC)  # 29 days after the date
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, personal) == [(2, 1, 1, CAROL)]
    pod.clock.now = datetime(2026, 12, 29, 11, 0, tzinfo=UTC)  # 31 days after
    assert await sweep(pod.storage, pod.app.config, pod.clock()) > 0
    assert await rows(pod, personal) == [(0, 0, 0, "")]
    assert await rows(pod, "SELECT title, needed FROM shifts") == [("Sorting", 3)]


async def test_a_weekly_shift_keeps_its_standing_sign_ups(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    await pod.say(CAROL, "!shift add Food every saturday 10-13")
    await pod.say(BOB, "!signup S1 all")
    pod.clock.advance(days=90)
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT person FROM shift_signups") == [(BOB,)]
    assert await rows(pod, "SELECT created_by FROM shifts") == [(CAROL,)]
    await pod.say(CAROL, "!shift cancel S1")
    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT person FROM shift_signups") == []
    assert await rows(pod, "SELECT created_by FROM shifts") == [("",)]


async def test_delivery_records_go_after_retention(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need bread")
    assert await rows(pod, "SELECT COUNT(*) FROM inbox") == [(1,)]
    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT COUNT(*) FROM inbox") == [(0,)]
    assert await rows(pod, "SELECT COUNT(*) FROM outbox") == [(0,)]
    # the open post is still listed, whole
    assert await rows(pod, "SELECT author, text FROM posts") == [(ALICE, "bread")]


async def test_the_sweep_goes_in_small_chunks(pod_rooms, monkeypatch):
    pod = pod_rooms
    monkeypatch.setattr(retention, "CHUNK_ROWS", 7)
    for i in range(40):
        await pod.say(ALICE, f"!need bread {i}")
    for i in range(1, 41, 2):
        await pod.say(ALICE, f"!cancel {i}")
    chunks = []
    original = pod.storage.transaction

    def counting(*, bulk=False):
        chunks.append(bulk)
        return original(bulk=bulk)

    monkeypatch.setattr(pod.storage, "transaction", counting)
    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    monkeypatch.undo()
    assert await rows(pod, "SELECT COUNT(*) FROM posts WHERE author IS NULL") == [(20,)]
    assert await rows(pod, "SELECT COUNT(*) FROM posts WHERE author = ?", ALICE) == [(20,)]
    assert chunks.count(True) > 40 / 7  # the posts alone took several chunks


def file_bytes(path) -> bytes:
    """The database file and its WAL after a checkpoint, as someone with the disk reads them."""
    with sqlite3.connect(path) as db:
        for _ in range(100):  # the bot's own passive checkpoint may be running on its thread
            if db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the write-ahead log could not be checkpointed")
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_erased_text_is_not_in_the_database_file(pod_rooms):
    pod = pod_rooms
    path = pod.storage.path
    for answer in ("food", SECRET, "1", "1", "yes"):  # alice's private request
        await pod.say(ALICE, answer, room=DM, direct=True)
    await pod.say(BOB, f"!need {SECRET.upper()}")
    await pod.say(BOB, "!done 2")
    assert SECRET.encode() in file_bytes(path) and SECRET.upper().encode() in file_bytes(path)

    await pod.say(ALICE, "!forgetme", room=DM, direct=True)
    await pod.say(ALICE, "yes", room=DM, direct=True)
    assert SECRET.encode() not in file_bytes(path)
    assert ALICE.encode() not in file_bytes(path)

    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert SECRET.upper().encode() not in file_bytes(path)
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 2)).status is PostStatus.DONE


async def test_network_alert_tokens_go_after_thirty_days(pod_rooms):
    pod = pod_rooms
    async with pod.storage.transaction() as tx:
        await tx.network.add_forward(POD, True, pod.clock())
        await tx.network.add_remote_alert(origin_bot="@bot:b.example", token="t1", pod_room=POD,
                                          network_room="!net:b.example", origin_pod="p1",
                                          pod_name="Maple", now=pod.clock())
    pod.clock.advance(days=29)
    async with pod.storage.transaction() as tx:
        await tx.network.add_forward(POD, False, pod.clock())
    pod.clock.advance(days=2)  # the first of each is 31 days old, the second forward 2
    await sweep(pod.storage, pod.app.config, pod.clock())
    assert await rows(pod, "SELECT urgent FROM alert_forwards") == [(0,)]
    assert await rows(pod, "SELECT COUNT(*) FROM remote_alerts") == [(0,)]
