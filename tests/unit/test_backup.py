"""`mutual-aid-bot backup` while the bot is busy: the copy opens, passes its integrity check and
holds every command that was handled before it was taken, each with its replies."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import sys

import pytest

from bot.context import Incoming
from bot.storage import StorageError, backup_database

from .conftest import ALICE, POD

MAX_BURST = 5000  # the burst goes on until the backup is done, never longer than this


async def test_a_backup_taken_during_a_burst_is_whole_and_consistent(pod_rooms, tmp_path):
    pod = pod_rooms
    target = tmp_path / "backup.db"
    backup_done = asyncio.Event()

    async def burst() -> int:
        n = 0
        while n < MAX_BURST and not backup_done.is_set():
            await pod.app.receive([Incoming(f"$burst{n}", POD, ALICE, f"!need food {n}", False,
                                            pod.clock())])
            n += 1
            if n % 10 == 0:
                await pod.app.run_until_idle()
        await pod.app.run_until_idle()
        return n

    async def backup_midway() -> int:
        while True:
            with sqlite3.connect(pod.storage.path) as db:
                handled = db.execute(
                    "SELECT COUNT(*) FROM inbox WHERE handled_at IS NOT NULL").fetchone()[0]
            if handled >= 50:
                break
            await asyncio.sleep(0.01)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "backup", "--database", str(pod.storage.path),
            str(target), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        backup_done.set()
        assert process.returncode == 0, err.decode()
        assert b"integrity checked" in out
        return handled

    sent, handled_before = await asyncio.gather(burst(), backup_midway())

    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        handled = {r[0] for r in copy.execute(
            "SELECT event_id FROM inbox WHERE handled_at IS NOT NULL")}
        replied = {r[0] for r in copy.execute("SELECT reply_to FROM outbox")}
        posts = copy.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
    # Everything handled when the backup began is in it; the copy is one consistent moment:
    # every handled command has its post and its reply, nothing half-written.
    assert len(handled) >= handled_before
    assert handled <= replied
    assert posts == len(handled)
    with sqlite3.connect(pod.storage.path) as live:
        assert live.execute("SELECT COUNT(*) FROM posts").fetchone()[0] == sent
    assert len(handled) < sent  # taken mid-burst: commands kept coming after it


def test_a_backup_never_overwrites_a_file(tmp_path):
    source = tmp_path / "bot.db"
    sqlite3.connect(source).close()
    target = tmp_path / "existing.db"
    target.write_bytes(b"precious")
    with pytest.raises(StorageError, match="already exists"):
        backup_database(source, target)
    assert target.read_bytes() == b"precious"
