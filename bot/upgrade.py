"""`mutual-aid-bot migrate`: bring a pod's database up to this release, or say what that would do.

`--dry-run` never writes to the database: it reads it through a read-only connection, lists the
pending schema steps in plain words (`--sql` shows the statements themselves), and proves the
upgrade on a throwaway copy made next to the database (the copy holds the pod's records, so it
stays on the same disk with the same protection and is deleted at once). Without `--dry-run` it
takes a backup with SQLite's backup API first and then migrates, exactly as the bot would on start.

A database made by a newer release, or one that is damaged, is refused and left as it is.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.storage import MIGRATIONS, Storage, StorageError, backup_database
from bot.store.migrations import Migration

# What a statement does, in words, by its opening keywords; anything else is shown as its first line.
_PLAIN_WORDS = [
    (r"CREATE TABLE (\w+)", "add table {0}"),
    (r"CREATE (?:UNIQUE )?INDEX (\w+) ON (\w+)", "add index {0} on {1}"),
    (r"ALTER TABLE (\w+) ADD COLUMN (\w+)", "add column {1} to {0}"),
    (r"ALTER TABLE (\w+) RENAME TO (\w+)", "rename table {0} to {1}"),
    (r"ALTER TABLE (\w+) RENAME COLUMN (\w+) TO (\w+)", "rename column {1} of {0} to {2}"),
    (r"DROP TABLE (\w+)", "remove table {0}"),
    (r"DROP INDEX (\w+)", "remove index {0} (rebuilt below if it is listed again)"),
    (r"INSERT INTO (\w+)", "copy rows into {0}"),
    (r"UPDATE (\w+)", "fill in values in {0}"),
    (r"DELETE FROM (\w+)", "delete rows from {0}"),
]


def describe(statement: str) -> str:
    """One statement of a migration in plain words."""
    flat = " ".join(statement.split())
    for pattern, words in _PLAIN_WORDS:
        match = re.match(pattern, flat, re.IGNORECASE)
        if match:
            return words.format(*match.groups())
    return flat if len(flat) <= 80 else flat[:77] + "..."


class UpgradeRefused(StorageError):
    """The database cannot be upgraded by this release; the message says why and what to do."""


@dataclass(frozen=True)
class Plan:
    path: Path
    current: int
    pending: list[tuple[int, Migration]]
    in_use: bool  # it has a write-ahead log: the bot is running, or was not stopped cleanly

    @property
    def latest(self) -> int:
        return self.current + len(self.pending)


def _log_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _read_only(path: Path, in_use: bool) -> sqlite3.Connection:
    """A connection that cannot write. A database nobody has open is opened `immutable`, so
    that not even SQLite's side files (-wal, -shm) are created next to it; one in use is read
    through those files, which exist already, to see what was committed."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?{'mode=ro' if in_use else 'immutable=1'}",
                           uri=True)


def plan(path: Path, migrations: list[Migration] = MIGRATIONS) -> Plan:
    """Read the database's schema version through a read-only connection and list what is pending.
    Raises UpgradeRefused for a missing, damaged or newer database."""
    if not path.exists():
        raise UpgradeRefused(f"there is no database at {path}; nothing to upgrade (the bot "
                             "creates it when it first starts)")
    in_use = _log_of(path).exists()
    try:
        db = _read_only(path, in_use)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise UpgradeRefused(
                    f"{path} failed its integrity check ({check[0] if check else 'no answer'}); "
                    "it was left untouched. Restore it from a backup.")
            has_versions = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                      "AND name = 'schema_version'").fetchone()
            current = 0
            if has_versions:
                current = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UpgradeRefused(f"{path} cannot be read as a database ({exc}); it was left "
                             "untouched. Restore it from a backup.") from exc
    if current > len(migrations):
        raise UpgradeRefused(
            f"{path} is at schema version {current}, made by a newer mutual-aid-bot than this one "
            f"(which knows versions up to {len(migrations)}). It was left untouched: run the "
            "release that made it, or restore a backup taken before that upgrade.")
    pending = [(version, migrations[version - 1])
               for version in range(current + 1, len(migrations) + 1)]
    return Plan(path, current, pending, in_use)


def render_plan(plan: Plan, *, sql: bool = False) -> list[str]:
    lines = [f"Database: {plan.path}", f"Schema version: {plan.current}"]
    if plan.in_use:
        lines.append(f"{_log_of(plan.path).name} exists: the bot is running, or was not stopped "
                     "cleanly. Stop it before upgrading.")
    if not plan.pending:
        lines.append("It is up to date: there is nothing to upgrade.")
        return lines
    lines.append(f"This release brings it to version {plan.latest} in {len(plan.pending)} "
                 "step(s), each applied completely or not at all:")
    for version, migration in plan.pending:
        lines.append(f"  {version}. {migration.name}")
        for statement in migration.statements():
            if sql:
                lines.extend("       " + line.strip() for line in statement.splitlines())
            else:
                lines.append(f"     - {describe(statement)}")
    lines.append("A backup is advised (the old release cannot use the upgraded file): "
                 "`mutual-aid-bot migrate` takes one before it changes anything. Stop the bot "
                 "first.")
    return lines


def backup_name(path: Path, version: int, now: datetime) -> Path:
    return path.with_name(f"{path.name}.v{version}-{now:%Y%m%dT%H%M%SZ}.bak")


async def _migrate(path: Path, migrations: list[Migration]) -> int:
    storage = await Storage.open(path, migrations)
    try:
        return await storage.schema_version()
    finally:
        await storage.close()


async def trial_upgrade(plan: Plan, migrations: list[Migration] = MIGRATIONS) -> int:
    """Upgrade a throwaway copy and return the version it reached; the original is only read."""
    with tempfile.TemporaryDirectory(prefix=".migrate-trial-", dir=plan.path.parent) as scratch:
        copy = Path(scratch) / plan.path.name
        await asyncio.to_thread(_snapshot, plan, copy)
        return await _migrate(copy, migrations)


def _snapshot(plan: Plan, copy: Path) -> None:
    source, target = _read_only(plan.path, plan.in_use), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def run_migrate(database: Path, *, dry_run: bool, sql: bool = False,
                migrations: list[Migration] = MIGRATIONS,
                out: Callable[[str], None] = print) -> int:
    """The command: 0 when the database is (or, for a dry run, would be) up to date, 2 when it is
    refused or the upgrade fails."""
    try:
        found = plan(database, migrations)
    except UpgradeRefused as exc:
        out(f"Cannot upgrade: {exc}")
        return 2
    for line in render_plan(found, sql=sql):
        out(line)
    if not found.pending:
        return 0
    if dry_run:
        try:
            reached = asyncio.run(trial_upgrade(found, migrations))
        except StorageError as exc:
            out(f"A trial upgrade of a copy FAILED: {exc}")
            out("Do not upgrade this database with this release; report the message above.")
            return 2
        out(f"A trial upgrade of a copy reached version {reached}. This was a dry run: the "
            "database itself was not changed.")
        return 0
    backup = backup_name(database, found.current, datetime.now(UTC))
    try:
        backup_database(database, backup)
    except StorageError as exc:
        out(f"Could not take a backup, so nothing was changed: {exc}")
        return 2
    out(f"Backup of version {found.current}: {backup}")
    try:
        reached = asyncio.run(_migrate(database, migrations))
    except StorageError as exc:
        out(f"The upgrade failed: {exc}")
        return 2
    out(f"Upgraded to schema version {reached}.")
    return 0
