"""Long work on the event loop lets a timer that fell due during a step run before its next step.

Blocking sleeps stand in for a step's CPU work; the tests check the order things ran in, the
stalls themselves are measured by bench/looplag.py.
"""

from __future__ import annotations

import asyncio
import time

from bot.turns import TakingTurns, let_others_run

STEP_SECONDS = 0.005  # a step long enough for the 1 ms timer to fall due during it


def hold_the_loop() -> None:
    """A step's work: it holds the loop (a sync function, as a step's CPU work is)."""
    time.sleep(STEP_SECONDS)


async def _timer(ran: list[str]) -> None:
    await asyncio.sleep(0.001)
    ran.append("timer")


async def test_a_timer_due_during_a_step_runs_before_the_next_step():
    ran: list[str] = []

    async def long_work() -> None:
        for step in range(3):
            hold_the_loop()
            ran.append(f"step {step}")
            await let_others_run()

    timer = asyncio.create_task(_timer(ran))
    await asyncio.sleep(0)  # the timer is set before the first step
    await long_work()
    await timer
    assert ran == ["step 0", "timer", "step 1", "step 2"]


async def test_tasks_taking_turns_let_a_timer_in_between_their_steps():
    ran: list[str] = []
    turns = TakingTurns()
    inside = 0

    async def worker(name: str) -> None:
        nonlocal inside
        async with turns.turn():
            inside += 1
            assert inside == 1, "two tasks in their turn at once"
            hold_the_loop()
            ran.append(name)
            inside -= 1

    timer = asyncio.create_task(_timer(ran))
    await asyncio.sleep(0)
    # Made ready together, as the room workers of one sync are.
    await asyncio.gather(worker("room 1"), worker("room 2"), worker("room 3"), timer)
    assert ran == ["room 1", "timer", "room 2", "room 3"]
