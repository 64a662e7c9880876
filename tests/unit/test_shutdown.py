"""The app, the scheduler and the housekeeping task stop without leaving a task behind (issue 9,
item 8: no "Task was destroyed but it is pending" when the bot or a benchmark shuts down)."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime

from bot.app import App
from bot.commands.privacy import housekeeping
from bot.config import BotConfig
from bot.context import Incoming
from bot.scheduler import Scheduler
from bot.storage import Storage

from .conftest import ALICE, DM, POD, FakeTransport


async def test_app_scheduler_and_housekeeping_stop_without_leaving_tasks(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    before = asyncio.all_tasks()
    storage = await Storage.open(tmp_path / "bot.db")
    transport = FakeTransport(rooms={POD: [ALICE], DM: [ALICE]})
    app = App(storage, BotConfig(), transport)
    scheduler = Scheduler(app)
    app.start()
    scheduler.start()
    app.ready.set()
    stop_keeping = asyncio.Event()
    keeping = asyncio.create_task(housekeeping(app, stop_keeping, interval=0.05), name="privacy")
    now = datetime.now(UTC)
    # Work for each of them: a reply, a re-plan of the schedule, and an erasure to carry out.
    await app.receive([Incoming("$1", POD, ALICE, "!shift add Sorting tomorrow 10:00", False, now),
                       Incoming("$2", DM, ALICE, "!forgetme", True, now)])
    await app.receive([Incoming("$3", DM, ALICE, "yes", True, now)])
    async with asyncio.timeout(10):
        while scheduler.runs == 0 or not any(  # noqa: ASYNC110 - polls a fake
                o.message.body.startswith("Done. I erased") for o in transport.sent):
            await asyncio.sleep(0.01)

    await scheduler.shutdown()
    stop_keeping.set()  # it ends between steps, as the runtime stops it
    await asyncio.wait_for(keeping, 10)
    await app.stop()
    await storage.close()

    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    assert app.schedule_listeners == []
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
