"""Network steps (creating or joining a room) made outside any transaction: intent, request,
outcome.

A handler that needs a room records the intent (`ctx.request_room`) in its own transaction, and
the step runner here makes the request with no transaction open. The outcome is committed
together with what follows from it (the room on the introduction, the first messages into it), so
a crash anywhere repeats at most the request, and the request makes at most one room: the room
carries the step's tag in its state (`TAG_EVENT`), the transport records each tagged room it sees
in a sync (meta `intent:<tag>`), and before every attempt the runner looks for that room (after a
restart once the first sync is in, after a failed attempt once a sync begun after it is in). A
room an attempt left behind (created, then an invite failed) is reused: the retry only invites.

A step that keeps failing backs off on its own, never holding up others or delivery; after
`delivery.give_up_after_hours` (or at once when the failure is permanent) it fails for good, the
people concerned are told, and coordinators see it in `!status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig
from bot.messages import DeliveryError, Outgoing, RoomRequest
from bot.store.actions import DONE, FAILED, PENDING, Action, dm_key

if TYPE_CHECKING:
    from bot.app import App
    from bot.storage import Transaction

log = logging.getLogger(__name__)

CREATE_ROOM = "create_room"
# The custom state event a room is created with; its content's "tag" is the step's tag.
TAG_EVENT = "org.mutual_aid_bot.intent"
_CAUGHT_UP_TIMEOUT = 90.0  # seconds to wait for a sync newer than a failed attempt

# Test-only: MAB_TEST_CRASH_AT names a point of a room step ("before-create-room",
# "after-create-room", "before-commit") where the process dies at once, as under kill -9, so the
# integration tests can prove each point safe. Read once at start; never set in real use.
_CRASH_AT = os.environ.get("MAB_TEST_CRASH_AT")


def _test_crash_point(point: str) -> None:
    if _CRASH_AT == point:
        log.warning("test crash point %s reached: exiting at once", point)
        os._exit(137)


def tag_mark(tag: str) -> str:
    """The meta key under which the transport records the room it saw carrying `tag`."""
    return f"intent:{tag}"


def fmt_hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


# What follows a room step, by the `then` its intent names: `done` and `failed` run in the
# transaction that records the outcome and return the messages to queue with it; `wanted` (in a
# transaction before the request) says whether the room is still needed; `destination` names
# delivery that was waiting for the room and may go on at once.
Done = Callable[["Transaction", Action, str, datetime, BotConfig], Awaitable[list[Outgoing]]]
Failed = Callable[["Transaction", Action, str, datetime, BotConfig], Awaitable[list[Outgoing]]]


@dataclass(frozen=True)
class Followup:
    done: Done
    failed: Failed
    wanted: Callable[[Transaction, Action], Awaitable[bool]] | None = None
    destination: Callable[[Action], str | None] | None = None


FOLLOWUPS: dict[str, Followup] = {}


async def request_room(tx: Transaction, *, key: str, name: str | None, invitees: list[str],
                       then: str, purpose: str, now: datetime, is_direct: bool = False,
                       pod_room: str | None = None, data: dict[str, Any] | None = None,
                       power_levels: dict[str, int] | None = None) -> Action:
    """Record the intent to create a room (one pending per `key`); the runner makes it.
    `power_levels`: people raised to a level as the room is made (a split pod's coordinators)."""
    assert then in FOLLOWUPS, then
    return await tx.actions.request(CREATE_ROOM, key, {
        "name": name, "invitees": invitees, "is_direct": is_direct, "then": then,
        "purpose": purpose, "pod_room": pod_room, "data": data or {},
        "power_levels": power_levels or {},
    }, now)


JOIN_ROOM = "join_room"


async def request_join(tx: Transaction, *, key: str, address: str, then: str, purpose: str,
                       now: datetime, pod_room: str, data: dict[str, Any]) -> Action:
    """Record the intent to join a room by alias or id (a network room); the runner joins."""
    assert then in FOLLOWUPS, then
    return await tx.actions.request(JOIN_ROOM, key, {
        "room": address, "then": then, "purpose": purpose, "pod_room": pod_room, "data": data,
    }, now)


# ---- direct chats ---------------------------------------------------------------------------

THEN_DM = "dm"


async def request_dm_room(tx: Transaction, user_id: str, now: datetime) -> Action:
    return await request_room(tx, key=dm_key(user_id), name=None, invitees=[user_id],
                              is_direct=True, then=THEN_DM, purpose="a direct chat",
                              now=now, data={"user_id": user_id})


async def _dm_done(tx: Transaction, action: Action, room_id: str, now: datetime,
                   config: BotConfig) -> list[Outgoing]:
    await tx.delivery.set_dm_room(action.params["data"]["user_id"], room_id)
    return []


async def _dm_failed(tx: Transaction, action: Action, reason: str, now: datetime,
                     config: BotConfig) -> list[Outgoing]:
    # What was waiting for the chat ends as dead letters on its own bound; nothing to tell
    # the person, who cannot be reached.
    return []


FOLLOWUPS[THEN_DM] = Followup(
    done=_dm_done, failed=_dm_failed,
    destination=lambda action: f"person:{action.params['data']['user_id']}")


# ---- the runner -----------------------------------------------------------------------------


class StepRunner:
    """Runs pending room steps, each on its own, outside any transaction."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._wakeup = asyncio.Event()
        self._running: set[int] = set()
        # Failing steps: action id -> (failures in a row, monotonic time of the next try).
        self._failing: dict[int, tuple[int, float]] = {}
        # Monotonic time of this process's last attempt to create a step's room: before trying
        # again, a sync begun after it must be in, so that a room it made after all is seen.
        self._attempted: dict[int, float] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wakeup.set()

    def retry_now(self) -> None:
        """Forget the back-off of every failing step and look again (tests, an operator)."""
        self._failing.clear()
        self._wakeup.set()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="steps")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    async def _loop(self) -> None:
        # Rooms made before a restart are known once the first sync is in: not before.
        await self.app.ready.wait()
        self._wakeup.set()
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._next_retry_in())
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                due = await self._due()
            except Exception:
                log.exception("could not read the pending steps; trying again in a moment")
                await asyncio.sleep(1.0)
                self._wakeup.set()
                continue
            for action in due:
                task = asyncio.create_task(self._step(action), name=f"step {action.id}")
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("step task %s failed", task.get_name(), exc_info=task.exception())
            self._wakeup.set()

    def _next_retry_in(self) -> float | None:
        if not self._failing:
            return None
        return max(0.0, min(due for _, due in self._failing.values()) - time.monotonic())

    async def _due(self) -> list[Action]:
        now = time.monotonic()
        waiting = self._running | {i for i, (_, due) in self._failing.items() if due > now}
        async with self.app.storage.transaction() as tx:
            return await tx.actions.pending(exclude=waiting)

    async def run_due(self) -> int:
        """Run every due step now and wait for them (console and tests, where the transport
        is caught up at once); how many ran."""
        due = await self._due()
        await asyncio.gather(*(self._step(action) for action in due))
        return len(due)

    async def _step(self, action: Action) -> None:
        if action.id in self._running:
            return
        self._running.add(action.id)
        try:
            await self._attempt(action)
        except Exception as exc:  # noqa: BLE001 - a bug or an unwrapped network error: back off
            log.exception("step %d (%s) failed unexpectedly", action.id, action.key)
            await self._failed(action, FOLLOWUPS[action.params["then"]],
                               DeliveryError(type(exc).__name__))
        finally:
            self._running.discard(action.id)

    async def _attempt(self, action: Action) -> None:
        app = self.app
        followup = FOLLOWUPS[action.params["then"]]
        attempted = self._attempted.get(action.id)
        if attempted is not None:
            try:
                await app.transport.caught_up_since(attempted, _CAUGHT_UP_TIMEOUT)
            except DeliveryError as exc:
                await self._failed(action, followup, exc)
                return
        async with app.storage.transaction() as tx:
            current = await tx.actions.by_id(action.id)
            if current is None or current.status != PENDING:
                return
            existing = await tx.delivery.get_meta(tag_mark(current.tag))
            if followup.wanted is not None and not await followup.wanted(tx, current):
                await tx.actions.finish(current.id, DONE, app.clock(), error="no longer needed")
                log.info("step %d (%s) is no longer needed", current.id, current.key)
                return
        _test_crash_point("before-create-room")
        try:
            if current.kind == JOIN_ROOM:  # joining twice is harmless: no tag to look for
                room_id = await app.transport.join_room(current.params["room"])
            else:
                room_id = await self._make_room(current, existing)
        except DeliveryError as exc:
            await self._failed(current, followup, exc)
            return
        _test_crash_point("after-create-room")
        now = app.clock()
        async with app.storage.transaction() as tx:
            if await tx.actions.finish(current.id, DONE, now, result=room_id):
                await tx.delivery.enqueue(
                    await followup.done(tx, current, room_id, now, app.config), now)
            _test_crash_point("before-commit")
        if tx.network_changed:
            app.wake_scheduler()
        self._attempted.pop(current.id, None)
        self._failing.pop(current.id, None)
        log.info("step %d (%s) done: room %s%s", current.id, current.key, room_id,
                 " (found by its tag)" if existing else "")
        if followup.destination is not None and (destination := followup.destination(current)):
            app.retry_now(destination)
        app.wake_outbox()

    async def _make_room(self, action: Action, existing: str | None) -> str:
        params = action.params
        request = RoomRequest(action.tag, params["name"], tuple(params["invitees"]),
                              is_direct=bool(params["is_direct"]),
                              power_levels=tuple(params.get("power_levels", {}).items()))
        if existing is None:  # this attempt may make the room even if it reports a failure
            self._attempted[action.id] = time.monotonic()
        else:
            self._attempted.pop(action.id, None)
        return await self.app.transport.make_room(request, existing)

    async def _failed(self, action: Action, followup: Followup, error: DeliveryError) -> None:
        app = self.app
        now = app.clock()
        give_up = timedelta(hours=app.config.delivery.give_up_after_hours)
        gave_up = None
        async with app.storage.transaction() as tx:
            current = await tx.actions.by_id(action.id)
            if current is None or current.status != PENDING:
                return
            if error.permanent or now - (current.first_failure_at or now) >= give_up:
                gave_up = (str(error) if error.permanent
                           else f"still failing after {fmt_hours(give_up)}: {error}")
                await tx.actions.finish(current.id, FAILED, now, error=gave_up)
                await tx.delivery.enqueue(
                    await followup.failed(tx, current, gave_up, now, app.config), now)
            else:
                await tx.actions.note_failure(current.id, str(error), now)
        if tx.network_changed:
            app.wake_scheduler()  # a need whose introduction failed goes back to the networks
        if gave_up is not None:
            self._failing.pop(action.id, None)
            self._attempted.pop(action.id, None)
            app.metrics.dead_letters.inc()
            log.warning("gave up step %d (%s): %s", action.id, action.key, gave_up)
            app.wake_outbox()
            return
        failures = self._failing.get(action.id, (0, 0.0))[0] + 1
        delay = error.retry_after or min(2.0 ** (failures - 1),
                                         app.config.delivery.max_backoff_seconds)
        self._failing[action.id] = (failures, time.monotonic() + delay)
        log.warning("step %d (%s) failed (%s); trying it again in %.0f s", action.id,
                    action.key, error, delay)
