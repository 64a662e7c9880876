"""The Signal transport in the composition root (real app, scheduler, housekeeping, SQLite), against
the fake daemon on a loopback socket."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio

from bot.app import App
from bot.config import BotConfig, SignalConfig
from bot.runtime import Runtime
from bot.storage import Storage
from bot.transport.signal import SignalTransport
from tests.signal_fake import FakeSignalDaemon, Person
from tests.unit.conftest import Clock

BOT = "0b0b0b0b-0000-4000-8000-000000000001"
ALICE = "a11ce000-0000-4000-8000-00000000000a"
BOB = "b0b00000-0000-4000-8000-00000000000b"
CAROL = "ca201000-0000-4000-8000-00000000000c"
DAN = "da200000-0000-4000-8000-00000000000d"  # known to Signal, not in the pod's group at first
# Reserved fictional numbers (+1 555 01xx): signal-cli reports them; the bot must drop them.
NUMBERS = {ALICE: "+15550100101", BOB: "+15550100102", CAROL: "+15550100103",
           DAN: "+15550100104"}
POD_GROUP = "UG9kR3JvdXBJZEZvclRlc3RzMDAwMDAwMDAwMDAwMDA="
WAIT_S = 15.0


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait (bounded) for something the bot does in the background."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class SignalPod:
    fake: FakeSignalDaemon
    transport: SignalTransport
    app: App
    storage: Storage
    db_path: Path
    clock: Clock
    runtime: Runtime

    async def say(self, sender: str, text: str, *, group: bool = True, replies: int = 1,
                  **kwargs: Any) -> dict[str, Any]:
        """One message from `sender`; waits for `replies` more sends; returns the envelope."""
        before = len(self.fake.sends)
        envelope = self.fake.inject(self.fake.envelope(
            sender, text, group_id=POD_GROUP if group else None, **kwargs))
        await until(lambda: len(self.fake.sends) >= before + replies, f"reply to {text!r}")
        return envelope

    def database_text(self) -> str:
        """Everything stored, as text, to look for what must never be stored."""
        with sqlite3.connect(self.db_path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return "\n".join(repr(row) for table in tables
                             for row in db.execute(f"SELECT * FROM {table}"))  # noqa: S608

    async def restart(self) -> None:
        """The bot stops and starts again on the same database (the daemon keeps running)."""
        await asyncio.wait_for(self.runtime.close(), WAIT_S)
        await self.start()

    async def start(self) -> None:
        """The bot starts (again) on the same database."""
        self.runtime, self.transport = await start_bot(self.fake, self.db_path, self.clock)
        self.app, self.storage = self.runtime.app, self.runtime.storage


async def start_bot(fake: FakeSignalDaemon, db_path: Path,
                    clock: Clock) -> tuple[Runtime, SignalTransport]:
    config = BotConfig(signal=SignalConfig(daemon=fake.address, account=BOT))
    runtime = Runtime(config, await Storage.open(db_path), clock=clock)
    transport = runtime.attach(SignalTransport(config, runtime.storage))
    await runtime.start()
    await until(runtime.app.ready.is_set, "the transport to connect")
    return runtime, transport


@pytest_asyncio.fixture(loop_scope="session")
async def signal_pod(tmp_path) -> AsyncIterator[SignalPod]:
    fake = FakeSignalDaemon(account=BOT, bot_uuid=BOT, people={
        uuid: Person(uuid, NUMBERS[uuid], name) for uuid, name in
        ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol"), (DAN, "Dan"))})
    fake.groups[POD_GROUP] = {"name": "Elm Street pod", "members": [BOT, ALICE, BOB, CAROL],
                              "admins": [ALICE], "expiration": 0}
    await fake.start()
    db_path = tmp_path / "bot.db"
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    runtime, transport = await start_bot(fake, db_path, clock)
    pod = SignalPod(fake, transport, runtime.app, runtime.storage, db_path, clock, runtime)
    try:
        yield pod
    finally:
        await asyncio.wait_for(pod.runtime.close(), WAIT_S)
        await fake.stop()
