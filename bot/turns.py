"""Letting other tasks run in the middle of long work on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# How many times to go to the back of the loop's queue. A task waiting for a timer or for I/O is
# two hops from running once it falls due: the timer's (or the selector's) callback sets its
# future, and setting a future queues the task's wake-up for the next turn. A task that yields
# once is queued ahead of both hops, and after two ahead of the second: either way the waiting
# task also waits out the yielding task's next step. After three it runs first (bench/looplag.py:
# with 3 ms steps a 1 ms timer woke 8.3 ms late after one yield, 5.2 ms after two, 2.0 after three).
_HOPS = 3


async def let_others_run() -> None:
    """Give the event loop's other tasks a turn before going on, including those whose timer or
    I/O fell due during the step just taken (see `_HOPS`)."""
    for _ in range(_HOPS):
        await asyncio.sleep(0)


class TakingTurns:
    """Tasks whose steps are heavy take them one at a time, with the loop's other tasks getting a
    turn before each. Tasks made ready together (room workers for the rooms of one sync) each ran
    a whole command in the same turn of the loop, and a timer that fell due in it waited for all
    of them: five commands of 1-4 ms, a 15 ms stall (bench/looplag.py)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            await let_others_run()
            yield
