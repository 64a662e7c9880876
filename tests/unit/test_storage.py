import sqlite3
from datetime import UTC, datetime

import pytest

from bot import storage as storage_module
from bot.models import Urgency
from bot.storage import MIGRATIONS, Storage, StorageError

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


async def test_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path, monkeypatch):
    path = tmp_path / "bot.db"
    monkeypatch.setattr(storage_module, "MIGRATIONS", MIGRATIONS[:1])
    await (await Storage.open(path)).close()
    monkeypatch.undo()
    with sqlite3.connect(path) as db:  # a row as version 1 wrote it
        db.execute(
            "INSERT INTO posts (room_id, number, kind, author, category, urgency, text, status, "
            "created_at, updated_at) VALUES ('!r:x', 1, 'need', '@a:x', 'food', 2, 'bread today', "
            "'open', ?, ?)", (NOW.isoformat(), NOW.isoformat()))

    upgraded = await Storage.open(path)
    assert await upgraded.schema_version() == len(MIGRATIONS)
    async with upgraded.transaction() as tx:
        post = await tx.get_post("!r:x", 1)
    assert post.text == "bread today" and post.urgency is Urgency.TODAY
    await upgraded.close()
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


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


async def test_storage_outside_a_transaction_is_a_programming_error(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    with pytest.raises(RuntimeError, match="outside"):
        await storage.get_meta("x")
    await storage.close()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    storage = await Storage.open(tmp_path / "bot.db")
    with pytest.raises(ValueError):
        async with storage.transaction() as tx:
            await tx.set_meta("k", "v")
            raise ValueError("boom")
    async with storage.transaction() as tx:
        assert await tx.get_meta("k") is None
    await storage.close()
