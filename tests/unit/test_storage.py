import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.messages import Outgoing, Rendered
from bot.models import Urgency
from bot.storage import MIGRATIONS, Storage, StorageError, StorageUsageError
from bot.store.migrations import Migration

FIXTURES = Path(__file__).parent.parent / "fixtures"

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


async def test_fresh_database_is_migrated_to_the_latest_version_with_private_mode(tmp_path):
    path = tmp_path / "data" / "bot.db"
    storage = await Storage.open(path)
    assert await storage.schema_version() == len(MIGRATIONS)
    await storage.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "bot.db"
    await (await Storage.open(path, migrations=MIGRATIONS[:1])).close()
    with sqlite3.connect(path) as db:  # a row as version 1 wrote it
        db.execute(
            "INSERT INTO posts (room_id, number, kind, author, category, urgency, text, status, "
            "created_at, updated_at) VALUES ('!r:x', 1, 'need', '@a:x', 'food', 2, 'bread today', "
            "'open', ?, ?)", (NOW.isoformat(), NOW.isoformat()))

    upgraded = await Storage.open(path)
    assert await upgraded.schema_version() == len(MIGRATIONS)
    async with upgraded.transaction() as tx:
        post = await tx.posts.by_number("!r:x", 1)
    assert post.text == "bread today" and post.urgency is Urgency.TODAY
    await upgraded.close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_a_failing_migration_leaves_the_previous_version_and_the_fixed_one_upgrades(tmp_path):
    path = tmp_path / "bot.db"
    await (await Storage.open(path)).close()
    before = _tables(path)
    broken = Migration("a step that fails half-way", """
        CREATE TABLE half_done (id INTEGER PRIMARY KEY);
        ALTER TABLE posts ADD COLUMN half_done_flag INTEGER;
        INSERT INTO no_such_table VALUES (1);
    """)
    with pytest.raises(StorageError) as failure:
        await Storage.open(path, migrations=[*MIGRATIONS, broken])
    message = str(failure.value)
    assert f"schema version {len(MIGRATIONS) + 1} (a step that fails half-way) failed" in message
    assert "no such table: no_such_table" in message
    assert f"still at version {len(MIGRATIONS)}" in message
    # Nothing of the step was kept: no table, no column, no version row.
    assert _tables(path) == before
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(posts)")}
        assert "half_done_flag" not in columns
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)

    fixed = Migration("the same step, fixed", """
        CREATE TABLE half_done (id INTEGER PRIMARY KEY);
        ALTER TABLE posts ADD COLUMN half_done_flag INTEGER;
    """)
    storage = await Storage.open(path, migrations=[*MIGRATIONS, fixed])
    assert await storage.schema_version() == len(MIGRATIONS) + 1
    await storage.close()
    assert "half_done" in _tables(path)


async def test_a_database_made_by_release_0_1_0_upgrades_with_its_records(tmp_path):
    path = tmp_path / "bot.db"
    shutil.copyfile(FIXTURES / "db-0.1.0.sqlite", path)
    storage = await Storage.open(path)
    assert await storage.schema_version() == len(MIGRATIONS)
    async with storage.transaction() as tx:
        groceries = await tx.posts.by_number("!pod:example.org", 1)
        assert groceries.text == "groceries for two this week"
        assert groceries.claimed_by == "@bob:example.org"
        assert (await tx.posts.by_number("!pod:example.org", 3)).anonymous
        [shift] = await tx.shifts.list("!pod:example.org")
        assert shift.title == "Food distribution" and shift.needed == 3
        [signup] = await tx.shifts.signups([shift.id])
        assert signup.person == "@bob:example.org"
        assert await tx.delivery.get_dm_room("@alice:example.org") == "!dm-alice:example.org"
        assert await tx.delivery.get_meta("sync_token") == "s123_456"
        assert (await tx.settings.room("!pod:example.org"))["timezone"] == "Europe/Berlin"
        # The upgraded outbox works: a message queued now is found by its destination.
        await tx.delivery.enqueue([Outgoing(Rendered("hi", "hi"), room_id="!pod:example.org")], NOW)
        assert await tx.delivery.pending_destinations() == ["!pod:example.org"]
    await storage.close()


async def test_newer_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "bot.db"
    await (await Storage.open(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (999, 'future')")
    before = path.read_bytes()
    with pytest.raises(StorageError, match="newer than this bot knows"):
        await Storage.open(path)
    assert path.read_bytes() == before


async def test_corrupt_database_is_refused_and_never_overwritten(tmp_path):
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StorageError, match="left untouched"):
        await Storage.open(path)
    assert path.read_bytes() == before


async def test_a_transaction_handle_is_unusable_after_its_block(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    async with storage.transaction() as tx:
        await tx.delivery.set_meta("k", "v")
    with pytest.raises(StorageUsageError, match="has ended"):
        await tx.delivery.set_meta("k", "changed outside any transaction")
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("k") == "v"
    await storage.close()


async def test_nesting_is_a_clear_error_not_a_deadlock(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    async with storage.transaction() as tx:
        await tx.delivery.set_meta("outer", "1")
        with pytest.raises(StorageUsageError, match="inside another one"):
            async with asyncio.timeout(5), storage.transaction():
                pass
        await tx.delivery.set_meta("outer", "2")  # the outer transaction goes on
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("outer") == "2"
    await storage.close()


async def test_another_task_cannot_write_through_a_transaction_it_did_not_open(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    async with storage.transaction() as tx:
        with pytest.raises(StorageUsageError, match="did not open it"):
            await asyncio.create_task(tx.delivery.set_meta("intruder", "joined"))
    await storage.close()


async def test_one_task_rolls_back_the_others_write_survives(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    first_inside = asyncio.Event()

    async def failing() -> None:
        async with storage.transaction() as tx:
            await tx.delivery.set_meta("failing", "written")
            first_inside.set()
            await asyncio.sleep(0.05)  # the other task is waiting meanwhile
            raise ValueError("boom")

    async def succeeding() -> None:
        await first_inside.wait()
        async with storage.transaction() as tx:
            await tx.delivery.set_meta("succeeding", "written")

    results = await asyncio.gather(failing(), succeeding(), return_exceptions=True)
    assert isinstance(results[0], ValueError) and results[1] is None
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("failing") is None
        assert await tx.delivery.get_meta("succeeding") == "written"
    await storage.close()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    with pytest.raises(ValueError):
        async with storage.transaction() as tx:
            await tx.delivery.set_meta("k", "v")
            raise ValueError("boom")
    async with storage.transaction() as tx:
        assert await tx.delivery.get_meta("k") is None
    await storage.close()


@pytest.mark.parametrize("turns", [0, 1, 3])
async def test_a_bulk_transaction_cancelled_while_beginning_leaves_no_write_lock(tmp_path, turns):
    """A report request cancelled at shutdown while its bulk transaction was beginning kept the
    thread's write lock: the final delivery then failed with "database is locked"."""
    storage = await Storage.open(tmp_path / "bot.db")

    async def bulk_reader() -> None:
        async with storage.transaction(bulk=True) as tx:
            await tx.delivery.get_meta("k")

    task = asyncio.create_task(bulk_reader())
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    other = sqlite3.connect(tmp_path / "bot.db", timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the BEGIN was kept
        other.execute("ROLLBACK")
    finally:
        other.close()
    async with storage.transaction() as tx:
        await tx.delivery.set_meta("k", "v")
    async with storage.transaction(bulk=True) as tx:
        assert await tx.delivery.get_meta("k") == "v"
    await storage.close()
