"""Letting other tasks run in the middle of long work on the event loop."""

from __future__ import annotations

import asyncio


async def let_others_run() -> None:
    """Give the event loop's other callbacks a turn before going on.

    One `sleep(0)` is not enough: this task is then queued first, and the timers and I/O that fell
    due while it worked are queued behind it, so they wait out its next step as well, a stall
    twice as long as any step (bench/looplag.py). After a second `sleep(0)` they are ahead of it.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)
