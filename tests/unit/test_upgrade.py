"""`mutual-aid-bot migrate [--dry-run]` on real database files, the one release 0.1.0 made included."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bot.cli import main
from bot.storage import MIGRATIONS, Storage
from bot.store.migrations import Migration
from bot.upgrade import describe, run_migrate

FIXTURES = Path(__file__).parent.parent / "fixtures"
RELEASE_0_1_0_VERSION = 4  # the schema version of tests/fixtures/db-0.1.0.sqlite
BROKEN = Migration("a step that fails", "CREATE TABLE posts (x INTEGER);")


def version_of(path: Path) -> int:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]


def files_and_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def release_db(tmp_path: Path) -> Path:
    path = tmp_path / "mutual-aid-bot.db"
    shutil.copyfile(FIXTURES / "db-0.1.0.sqlite", path)
    return path


def migrate(path: Path, **kwargs) -> tuple[int, str]:  # noqa: ANN003
    lines: list[str] = []
    code = run_migrate(path, out=lines.append, **kwargs)
    return code, "\n".join(lines)


def test_dry_run_says_what_changes_proves_it_on_a_copy_and_leaves_the_file_alone(release_db):
    before = files_and_bytes(release_db.parent)
    code, output = migrate(release_db, dry_run=True)
    assert code == 0
    assert f"Schema version: {RELEASE_0_1_0_VERSION}" in output
    for version in range(RELEASE_0_1_0_VERSION + 1, len(MIGRATIONS) + 1):
        assert f"{version}. {MIGRATIONS[version - 1].name}" in output
    assert "add column destination to outbox" in output  # a step of version 5, in plain words
    assert "A backup is advised" in output
    assert f"A trial upgrade of a copy reached version {len(MIGRATIONS)}" in output
    # Not a byte changed, no WAL or trial copy left behind.
    assert files_and_bytes(release_db.parent) == before


async def test_a_database_in_use_is_read_through_its_log_and_the_operator_is_told_to_stop_it(
        release_db):
    running = await Storage.open(release_db, MIGRATIONS[:RELEASE_0_1_0_VERSION])  # the old bot
    try:
        async with running.transaction() as tx:  # committed to the write-ahead log, not the file
            await tx.settings.set("!pod:example.org", "timezone", "Europe/Paris")
        code, output = await asyncio.to_thread(migrate, release_db, dry_run=True)
    finally:
        await running.close()
    assert code == 0
    assert "mutual-aid-bot.db-wal exists: the bot is running" in output
    assert f"reached version {len(MIGRATIONS)}" in output
    assert version_of(release_db) == RELEASE_0_1_0_VERSION


def test_dry_run_with_sql_shows_the_statements(release_db):
    code, output = migrate(release_db, dry_run=True, sql=True)
    assert code == 0
    assert "ALTER TABLE outbox ADD COLUMN destination TEXT;" in output


def test_migrate_backs_up_first_then_upgrades_keeping_the_records(release_db):
    code, output = migrate(release_db, dry_run=False)
    assert code == 0, output
    [backup] = release_db.parent.glob(f"{release_db.name}.v{RELEASE_0_1_0_VERSION}-*.bak")
    assert f"Backup of version {RELEASE_0_1_0_VERSION}: {backup}" in output
    assert version_of(backup) == RELEASE_0_1_0_VERSION
    assert backup.stat().st_mode & 0o777 == 0o600
    assert version_of(release_db) == len(MIGRATIONS)
    with closing(sqlite3.connect(release_db)) as db:
        assert db.execute("SELECT text FROM posts WHERE number = 1").fetchone() == (
            "groceries for two this week",)
    # Once upgraded there is nothing more to do, and no second backup.
    code, output = migrate(release_db, dry_run=False)
    assert code == 0 and "up to date" in output
    assert len(list(release_db.parent.glob("*.bak"))) == 1


async def test_an_up_to_date_database_needs_nothing(tmp_path):
    path = tmp_path / "bot.db"
    await (await Storage.open(path)).close()
    code, output = migrate(path, dry_run=True)
    assert code == 0
    assert f"Schema version: {len(MIGRATIONS)}" in output and "nothing to upgrade" in output
    assert "backup" not in output


async def test_a_newer_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "bot.db"
    await (await Storage.open(path)).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_version VALUES (999, 'future')")
    before = files_and_bytes(tmp_path)
    for dry_run in (True, False):
        code, output = migrate(path, dry_run=dry_run)
        assert code == 2
        assert "schema version 999, made by a newer mutual-aid-bot" in output
    assert files_and_bytes(tmp_path) == before


def test_a_corrupt_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not a database" * 100)
    for dry_run in (True, False):
        code, output = migrate(path, dry_run=dry_run)
        assert code == 2 and "cannot be read as a database" in output
    assert files_and_bytes(tmp_path) == {"bot.db": b"this is not a database" * 100}


def test_a_missing_database_is_explained_not_created(tmp_path):
    code, output = migrate(tmp_path / "bot.db", dry_run=True)
    assert code == 2 and "there is no database" in output
    assert not (tmp_path / "bot.db").exists()


def test_a_step_that_would_fail_fails_the_dry_run_and_the_upgrade_keeps_the_old_version(release_db):
    migrations = [*MIGRATIONS, BROKEN]
    before = files_and_bytes(release_db.parent)
    code, output = migrate(release_db, dry_run=True, migrations=migrations)
    assert code == 2 and "A trial upgrade of a copy FAILED" in output
    assert "a step that fails" in output
    assert files_and_bytes(release_db.parent) == before

    code, output = migrate(release_db, dry_run=False, migrations=migrations)
    assert code == 2 and "The upgrade failed" in output
    # Every step before the broken one is kept; the broken one left nothing behind.
    assert version_of(release_db) == len(MIGRATIONS)
    [backup] = release_db.parent.glob("*.bak")
    assert version_of(backup) == RELEASE_0_1_0_VERSION


def test_the_command_finds_the_database_through_the_config(release_db, capsys):
    config = release_db.parent / "config.toml"
    config.write_text(f'[storage]\ndatabase = "{release_db.name}"\n')
    assert main(["migrate", "--config", str(config), "--dry-run"]) == 0
    assert f"Database: {release_db}" in capsys.readouterr().out
    assert version_of(release_db) == RELEASE_0_1_0_VERSION
    assert main(["migrate", "--config", str(config)]) == 0
    assert version_of(release_db) == len(MIGRATIONS)


def test_a_config_with_problems_is_reported_before_anything_is_touched(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("[storage]\ndatabse = 'x.db'\n")
    assert main(["migrate", "--config", str(config), "--dry-run"]) == 1
    assert "databse" in capsys.readouterr().err


@pytest.mark.parametrize(("statement", "words"), [
    ("CREATE TABLE intake (\n user_id TEXT PRIMARY KEY\n)", "add table intake"),
    ("CREATE INDEX posts_event ON posts (event_id)", "add index posts_event on posts"),
    ("ALTER TABLE posts ADD COLUMN erased_at TEXT", "add column erased_at to posts"),
    ("UPDATE outbox SET destination = room_id", "fill in values in outbox"),
    ("DROP INDEX outbox_pending", "remove index outbox_pending (rebuilt below if it is listed again)"),
    ("PRAGMA user_version = 3", "PRAGMA user_version = 3"),
])
def test_statements_in_plain_words(statement, words):
    assert describe(statement) == words
