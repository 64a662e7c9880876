"""Wires storage, commands and a transport together.

Journey of a command: the transport calls `receive()`, which stores it in the inbox (with the sync
token, in one transaction). A worker per room takes inbox rows in order and runs the handler inside
a storage transaction that also marks the event handled and puts the replies in the outbox. The
outbox is delivered in order with a transaction id derived from its row, so a resend after a crash
is deduplicated by the homeserver.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.actions import StepRunner, fmt_hours
from bot.commands import Registry, build_registry, dispatch, split_command
from bot.config import BotConfig
from bot.context import Context, Incoming, Outgoing, Transport
from bot.formatting import render
from bot.messages import DeliveryError, Event
from bot.metrics import Metrics
from bot.storage import Storage, Transaction
from bot.store.delivery import OutboxItem
from bot.turns import TakingTurns, let_others_run

__all__ = ["App", "DeliveryError", "utc_now"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


_DESTINATION_BATCH = 20  # messages to one destination marked sent per transaction
_PARALLEL_DESTINATIONS = 8  # destinations being sent to at once
_HANDLE_BATCH = 32  # commands per transaction when several are waiting in a room

SORRY = ("Sorry, something went wrong on my side while handling that. It has been logged; "
         "please try again in a moment.")


class App:
    def __init__(self, storage: Storage, config: BotConfig, transport: Transport,
                 clock: Clock = utc_now, registry: Registry | None = None) -> None:
        """`transport`: what delivers to every destination (the runtime's router when several
        networks are attached); `registry`: the commands (by default every command module's)."""
        self.storage = storage
        self.config = config
        self.transport = transport
        self.registry = registry if registry is not None else build_registry()
        self.clock = clock
        self._room_workers: dict[str, asyncio.Task[None]] = {}
        # Rooms that got inbox rows since their worker last looked (saves an empty query).
        self._room_dirty: set[str] = set()
        # Inbox rows may exist that no worker was started for (at start, after a worker failed).
        self._scan_needed = True
        self._outbox_wakeup = asyncio.Event()
        self._outbox_task: asyncio.Task[None] | None = None
        # Destinations being drained, and failing ones: (failures in a row, monotonic retry time).
        self._draining: set[str] = set()
        self._failing: dict[str, tuple[int, float]] = {}
        self._send_slots = asyncio.Semaphore(_PARALLEL_DESTINATIONS)
        # Rooms' batches are handled one at a time (their transactions are anyway), each after
        # the loop's other tasks had a turn.
        self._handling = TakingTurns()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Called after a commit that changed shifts, sign-ups or schedule settings.
        self.schedule_listeners: list[Callable[[], None]] = []
        self.started_at = time.time()
        self._accepting = True
        self._stopped = False
        # Set once the transport has caught up (Matrix: first sync done; console/tests: at once).
        # Scheduled sends wait for it, so nothing goes out from a stale view of the rooms.
        self.ready = asyncio.Event()
        self.handled_count = 0
        self.metrics = Metrics(config.metrics)
        # Network steps (room creation) that handlers asked for, run outside any transaction.
        self.steps = StepRunner(self)

    # ---- intake ---------------------------------------------------------------------------

    async def receive(self, items: list[Event], sync_token: str | None = None,
                      marks: dict[str, str] | None = None) -> int:
        """Durably queue commands and typed events with the sync token (and transport marks)
        that cover them."""
        if not self._accepting:
            return 0
        async with self.storage.transaction() as tx:
            added = await tx.delivery.add_to_inbox(items) if items else 0
            for key, value in (marks or {}).items():
                await tx.delivery.set_meta(key, value)
            if sync_token is not None:
                await tx.delivery.set_meta("sync_token", sync_token)
        if added:
            # The rooms are known: no scan of the inbox for rooms with pending rows.
            for room_id in dict.fromkeys(item.room_id for item in items):
                self._room_dirty.add(room_id)
                self._ensure_worker(room_id)
        return added

    async def start_pending_workers(self) -> None:
        self._scan_needed = False
        async with self.storage.transaction() as tx:
            rooms = await tx.delivery.pending_rooms()
        for room_id in rooms:
            self._room_dirty.add(room_id)
            self._ensure_worker(room_id)

    def _ensure_worker(self, room_id: str) -> None:
        worker = self._room_workers.get(room_id)
        if worker is None or worker.done():
            self._room_workers[room_id] = asyncio.create_task(
                self._room_worker(room_id), name=f"room-worker {room_id}"
            )

    async def _room_worker(self, room_id: str) -> None:
        # Commands in one room run in order; rooms run side by side.
        try:
            while self._accepting:
                # Cleared before looking: a row received after the look sets it again.
                self._room_dirty.discard(room_id)
                more = await self._handle_pending(room_id)
                if not more and room_id not in self._room_dirty:
                    return  # that was the last pending row: no empty look to find that out
        except BaseException:
            self._scan_needed = True
            raise

    async def _handle_pending(self, room_id: str) -> bool:
        """Handle the room's pending commands, up to a batch, in one transaction; whether more
        are waiting.

        Each command runs in its own savepoint: one that fails is undone alone and answered with
        an apology, and the batch goes on. Each row is read just before it runs, so what runs is
        what is stored then (a `!forgetme` earlier in the batch may have blanked it). Handlers
        never touch the network: a room they need is a step, run once the batch is committed.
        """
        handled: list[tuple[Event, str, int, float]] = []
        after_commit: list[Callable[[], Coroutine[Any, Any, object]]] = []
        more = schedule_changed = steps_requested = False
        async with self._handling.turn(), self.storage.transaction() as tx:
            while self._accepting and len(handled) < _HANDLE_BATCH:
                # The next one, and whether another waits after it.
                pending = await tx.delivery.pending_commands(room_id, 2)
                if not pending:
                    more = False
                    break
                item, more = pending[0], len(pending) > 1
                started = time.monotonic()
                outcome, replies, ctx = await self._handle(tx, item)
                handled.append((item, outcome, replies, time.monotonic() - started))
                schedule_changed |= ctx is not None and ctx.schedule_changed and outcome == "ok"
                steps_requested |= ctx is not None and ctx.steps_requested and outcome == "ok"
                if ctx is not None and outcome == "ok":
                    after_commit += ctx.after_commit
                if not more:
                    break
                # A batch is many commands' work: let other tasks run between two of them.
                await let_others_run()
        # A need to escalate later, or an escalated one to close in the networks.
        schedule_changed |= tx.network_changed
        # Logged and counted once committed; a batch that was rolled back runs again.
        self._record(handled)
        for step in after_commit:
            try:
                await step()
            except Exception:
                log.exception("a step after a command's commit failed")
        self._outbox_wakeup.set()
        if steps_requested:
            self.steps.wake()
        if schedule_changed:
            self.wake_scheduler()
        return more

    def wake_scheduler(self) -> None:
        """Something the scheduler acts on was committed (a shift, a need for the networks)."""
        for listener in self.schedule_listeners:
            listener()

    async def _handle(self, tx: Transaction, item: Event) -> tuple[str, int, Context | None]:
        now = self.clock()
        if not item.sender:
            # Erased by a `!forgetme` handled before it: that person asked to be forgotten.
            await tx.delivery.mark_handled(item.event_id, now)
            return "erased", 0, None
        message = item if isinstance(item, Incoming) else None
        ctx = Context(
            sender=item.sender, room_id=item.room_id, is_direct=item.is_direct,
            text=message.text if message else "", event_id=item.event_id, now=now, tx=tx,
            config=self.config, transport=self.transport, registry=self.registry, runtime=self,
        )
        try:
            async with tx.savepoint():
                await dispatch(ctx, None if message else item)
                await tx.delivery.mark_handled(item.event_id, now)
                await tx.delivery.enqueue(ctx.outgoing, now)
            return "ok", len(ctx.outgoing), ctx
        except Exception as exc:
            # Never the text: it may be private. Nor the exception's message or a formatted
            # traceback, which can quote it. The command, the type and where it was raised are
            # enough to find the bug; the event id finds the message.
            where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                               for f in reversed(traceback.extract_tb(exc.__traceback__)[-4:]))
            log.error("handler for %s failed for event %s in %s: %s at %s",
                      self._command_name(item.text), item.event_id, item.room_id,
                      type(exc).__name__, where)
            await tx.delivery.mark_handled(item.event_id, now)
            await tx.delivery.enqueue([Outgoing(render(SORRY), room_id=item.room_id,
                                       reply_to=item.event_id)], now)
            return "error", 1, ctx

    def _record(self, handled: list[tuple[Event, str, int, float]]) -> None:
        for item, outcome, replies, elapsed in handled:
            self.handled_count += 1
            name = (self._command_name(item.text) if isinstance(item, Incoming)
                    else type(item).__name__.lower())
            self.metrics.commands.labels(name, outcome).inc()
            self.metrics.handle_seconds.observe(elapsed)
            if outcome == "error":
                self.metrics.errors.inc()
            log.info("handled event %s in %s: %s, %d replies, %.1f ms", item.event_id,
                     item.room_id, outcome, replies, elapsed * 1000)

    def _command_name(self, text: str) -> str:
        """A registered command's name for metrics; never user text."""
        parsed = split_command(text, self.config.command_prefix)
        if parsed is None:
            return "none"
        cmd = self.registry.by_word.get(parsed[0])
        return cmd.name if cmd is not None else "unknown"

    def sync_age(self) -> float:
        return self.metrics.sync_age()

    # ---- delivery -------------------------------------------------------------------------
    #
    # Order is kept per destination (a room, or a person's DM), never across them: each
    # destination is drained by its own worker, a few at a time, and one that fails backs off
    # alone while the others keep flowing. A message that can never be delivered, or that kept
    # failing for `delivery.give_up_after_hours`, becomes a dead letter (metrics and !status).

    def retry_now(self, destination: str) -> None:
        """Try a destination again at once: what it was waiting for (its DM room) is there."""
        self._failing.pop(destination, None)
        self._outbox_wakeup.set()

    def _may_try(self, destination: str) -> bool:
        failing = self._failing.get(destination)
        return failing is None or failing[1] <= time.monotonic()

    async def deliver_pending(self) -> int:
        """Deliver what is waiting, destinations side by side, until only failing ones are
        left; returns how many messages were delivered or given up."""
        total = 0
        while True:
            async with self.storage.transaction() as tx:
                destinations = await tx.delivery.pending_destinations()
            ready = [d for d in destinations if self._may_try(d) and d not in self._draining]
            if not ready:
                return total
            counts = await asyncio.gather(*(self._drain(d) for d in ready))
            total += sum(counts)
            if not any(counts):
                return total

    async def _drain(self, destination: str) -> int:
        """Send a destination's waiting messages in order until none are left or one fails."""
        if destination in self._draining:
            return 0
        self._draining.add(destination)
        finished = 0
        try:
            async with self._send_slots:
                while self._may_try(destination):
                    async with self.storage.transaction() as tx:
                        batch = await tx.delivery.pending_for(destination, _DESTINATION_BATCH)
                    if not batch:
                        break
                    sent, stopped = await self._send_in_order(batch)
                    finished += sent
                    if stopped:
                        break
                    # A transport that answers without waiting (a dead letter, the console)
                    # would otherwise drain thousands of messages (an erasure's) in one turn.
                    await let_others_run()
        finally:
            self._draining.discard(destination)
            self._outbox_wakeup.set()  # a look for what arrived meanwhile
        return finished

    async def _send_in_order(self, batch: list[OutboxItem]) -> tuple[int, bool]:
        """Deliver a destination's batch in order; (how many ended, whether a failure stopped it).

        Marked once per batch: if the bot dies before the mark, the resend reuses each message's
        transaction id and the homeserver drops the duplicate.
        """
        done: list[tuple[int, str | None]] = []
        dead: list[tuple[int, str]] = []
        failed: OutboxItem | None = None
        error: DeliveryError | None = None
        for item in batch:
            try:
                done.append((item.id, await self.transport.deliver(item.out, txn_id=f"mab-{item.id}")))
                continue
            except DeliveryError as exc:
                self.metrics.delivery_failures.inc()
                error = exc
            now = self.clock()
            give_up = timedelta(hours=self.config.delivery.give_up_after_hours)
            if error.permanent or now - (item.first_failure_at or now) >= give_up:
                dead.append((item.id, str(error) if error.permanent
                             else f"still failing after {fmt_hours(give_up)}: {error}"))
                continue
            failed = item
            break
        now = self.clock()
        async with self.storage.transaction() as tx:
            await tx.delivery.mark_sent(done, now)
            for outbox_id, reason in dead:
                await tx.delivery.mark_dead(outbox_id, reason, now)
            if failed is not None:
                await tx.delivery.note_failure(failed.id, now)
        self.metrics.deliveries.inc(len(done))
        for outbox_id, reason in dead:
            self.metrics.dead_letters.inc()
            log.warning("gave up outbox message %d to %s: %s", outbox_id, batch[0].out.destination,
                        reason)
        destination = batch[0].out.destination
        if failed is not None:
            failures = self._failing.get(destination, (0, 0.0))[0] + 1
            delay = error.retry_after or min(2.0 ** (failures - 1),
                                             self.config.delivery.max_backoff_seconds)
            self._failing[destination] = (failures, time.monotonic() + delay)
            log.warning("delivery to %s failed (%s); trying it again in %.0f s", destination,
                        error, delay)
        else:
            self._failing.pop(destination, None)
        return len(done) + len(dead), failed is not None

    def _next_retry_in(self) -> float | None:
        if not self._failing:
            return None
        return max(0.0, min(due for _, due in self._failing.values()) - time.monotonic())

    async def _outbox_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._outbox_wakeup.wait(), self._next_retry_in())
            except TimeoutError:
                pass
            self._outbox_wakeup.clear()
            try:
                async with self.storage.transaction() as tx:
                    destinations = await tx.delivery.pending_destinations()
            except Exception:
                log.exception("could not read the outbox; trying again in a moment")
                await asyncio.sleep(1.0)
                self._outbox_wakeup.set()
                continue
            for destination in destinations:
                if self._may_try(destination) and destination not in self._draining:
                    self._spawn(self._drain(destination), f"deliver {destination}")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def start(self) -> None:
        """Start background delivery and steps, and resume commands left in the inbox."""
        self._outbox_task = asyncio.create_task(self._outbox_loop(), name="outbox")
        self._outbox_wakeup.set()
        self.steps.start()

    def wake_outbox(self) -> None:
        self._outbox_wakeup.set()

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Handle every queued command, run the steps they asked for and deliver every reply
        (console and tests: their transports are caught up at once)."""
        async with asyncio.timeout(timeout):
            # Workers are started by receive() for the rooms it stored rows for; the inbox is
            # scanned only when rows may be waiting without one (first call, a failed worker).
            if self._scan_needed:
                await self.start_pending_workers()
            while any(not w.done() for w in self._room_workers.values()):
                await asyncio.gather(*self._room_workers.values())
                if self._scan_needed:
                    await self.start_pending_workers()
            await self.deliver_pending()
            while await self.steps.run_due():
                await self.deliver_pending()

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop taking commands, let in-flight handlers finish (bounded), flush the outbox, and
        leave no task of ours running. A second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        workers = [w for w in self._room_workers.values() if not w.done()]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.steps.stop()
        delivering = self._outbox_task is not None
        background = [t for t in (self._outbox_task, *self._tasks) if t is not None]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self._outbox_task = None
        if not delivering:
            return
        try:
            await asyncio.wait_for(self.deliver_pending(), timeout=timeout)
        except TimeoutError:
            log.warning("stopping with undelivered replies; they go out on next start")
