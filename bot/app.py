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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot.commands import REGISTRY, dispatch, load_commands, split_command
from bot.config import BotConfig
from bot.context import Context, Incoming, Outgoing, Transport
from bot.formatting import render
from bot.metrics import Metrics
from bot.storage import Storage

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class DeliveryError(Exception):
    """A message could not be delivered. `permanent` ones are dropped after logging."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


_OUTBOX_BATCH = 50
_HANDLE_BATCH = 32  # commands per transaction when several are waiting in a room

SORRY = ("Sorry, something went wrong on my side while handling that. It has been logged; "
         "please try again in a moment.")


class App:
    def __init__(self, storage: Storage, config: BotConfig, transport: Transport,
                 clock: Clock = utc_now) -> None:
        self.storage = storage
        self.config = config
        self.transport = transport
        self.clock = clock
        self._room_workers: dict[str, asyncio.Task[None]] = {}
        # Rooms that got inbox rows since their worker last looked (saves an empty query).
        self._room_dirty: set[str] = set()
        # Inbox rows may exist that no worker was started for (at start, after a worker failed).
        self._scan_needed = True
        self._outbox_wakeup = asyncio.Event()
        self._outbox_task: asyncio.Task[None] | None = None
        self._accepting = True
        # Set once the transport has caught up (Matrix: first sync done; console/tests: at once).
        # Scheduled sends wait for it, so nothing goes out from a stale view of the rooms.
        self.ready = asyncio.Event()
        self.handled_count = 0
        self.metrics = Metrics(config.metrics)
        load_commands()

    # ---- intake ---------------------------------------------------------------------------

    async def receive(self, items: list[Incoming], sync_token: str | None = None,
                      marks: dict[str, str] | None = None) -> int:
        """Durably queue commands with the sync token (and transport marks) that cover them."""
        if not self._accepting:
            return 0
        async with self.storage.transaction() as tx:
            added = await tx.add_to_inbox(items) if items else 0
            for key, value in (marks or {}).items():
                await tx.set_meta(key, value)
            if sync_token is not None:
                await tx.set_meta("sync_token", sync_token)
        if added:
            # The rooms are known: no scan of the inbox for rooms with pending rows.
            for room_id in dict.fromkeys(item.room_id for item in items):
                self._room_dirty.add(room_id)
                self._ensure_worker(room_id)
        return added

    async def start_pending_workers(self) -> None:
        self._scan_needed = False
        async with self.storage.transaction() as tx:
            rooms = await tx.pending_rooms()
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
        what is stored then (a `!forgetme` earlier in the batch may have blanked it). A command
        that changed something outside the database ends the batch, so it is committed at once.
        """
        handled: list[tuple[Incoming, str, int, float]] = []
        more = False
        async with self.storage.transaction() as tx:
            while self._accepting and len(handled) < _HANDLE_BATCH:
                item, more = await tx.next_pending_and_more(room_id)
                if item is None:
                    break
                started = time.monotonic()
                outcome, replies, acted_outside = await self._handle(tx, item)
                handled.append((item, outcome, replies, time.monotonic() - started))
                if not more or acted_outside:
                    break
        # Logged and counted once committed; a batch that was rolled back runs again.
        self._record(handled)
        self._outbox_wakeup.set()
        return more

    async def _handle(self, tx: Storage, item: Incoming) -> tuple[str, int, bool]:
        now = self.clock()
        if not item.sender:
            # Erased by a `!forgetme` handled before it: that person asked to be forgotten.
            await tx.mark_handled(item.event_id, now)
            return "erased", 0, False
        ctx = Context(
            sender=item.sender, room_id=item.room_id, is_direct=item.is_direct, text=item.text,
            event_id=item.event_id, now=now, storage=self.storage, config=self.config,
            transport=self.transport,
        )
        try:
            async with tx.savepoint():
                await dispatch(ctx)
                await tx.mark_handled(item.event_id, now)
                await tx.enqueue(ctx.outgoing, now)
            return "ok", len(ctx.outgoing), ctx.acted_outside
        except Exception as exc:
            # Never the text: it may be private. Nor the exception's message or a formatted
            # traceback, which can quote it. The command, the type and where it was raised are
            # enough to find the bug; the event id finds the message.
            where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                               for f in reversed(traceback.extract_tb(exc.__traceback__)[-4:]))
            log.error("handler for %s failed for event %s in %s: %s at %s",
                      self._command_name(item.text), item.event_id, item.room_id,
                      type(exc).__name__, where)
            await tx.mark_handled(item.event_id, now)
            await tx.enqueue([Outgoing(render(SORRY), room_id=item.room_id,
                                       reply_to=item.event_id)], now)
            return "error", 1, ctx.acted_outside

    def _record(self, handled: list[tuple[Incoming, str, int, float]]) -> None:
        for item, outcome, replies, elapsed in handled:
            self.handled_count += 1
            self.metrics.commands.labels(self._command_name(item.text), outcome).inc()
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
        cmd = REGISTRY.by_word.get(parsed[0])
        return cmd.name if cmd is not None else "unknown"

    def too_old(self, item: Incoming) -> bool:
        max_age = timedelta(hours=self.config.matrix.max_command_age_hours if self.config.matrix else 24)
        return self.clock() - item.timestamp > max_age

    # ---- delivery -------------------------------------------------------------------------

    async def deliver_pending(self) -> int:
        """Deliver queued messages in order; returns how many were delivered or dropped."""
        delivered = 0
        while True:
            writes_before = self.storage.outbox_writes
            async with self.storage.transaction() as tx:
                batch = await tx.pending_outbox(_OUTBOX_BATCH)
            if not batch:
                return delivered
            # Marked sent once per batch, not per message: one commit instead of fifty. If the
            # bot dies before the mark, the resend reuses each message's transaction id and the
            # homeserver drops the duplicate.
            done: list[tuple[int, str | None]] = []
            try:
                for item in batch:
                    try:
                        event_id = await self.transport.deliver(item.out, txn_id=f"mab-{item.id}")
                    except DeliveryError as exc:
                        self.metrics.delivery_failures.inc()
                        if not exc.permanent:
                            raise
                        log.warning("dropping outbox message %d: %s", item.id, exc)
                        event_id = None
                    done.append((item.id, event_id))
            finally:
                if done:
                    async with self.storage.transaction() as tx:
                        await tx.mark_sent(done, self.clock())
                    self.metrics.deliveries.inc(len(done))
                    delivered += len(done)
            if len(batch) < _OUTBOX_BATCH and self.storage.outbox_writes == writes_before:
                # A short batch, and nothing was queued since it was read: the outbox is empty,
                # no need for another look to find that out.
                return delivered

    async def _outbox_loop(self) -> None:
        backoff = 1.0
        while True:
            await self._outbox_wakeup.wait()
            self._outbox_wakeup.clear()
            try:
                await self.deliver_pending()
                backoff = 1.0
            except DeliveryError as exc:
                log.warning("delivery failed (%s); retrying in %.0f s", exc, backoff)
                # A wake-up (new reply, or the transport seeing the server back) cuts the wait.
                try:
                    await asyncio.wait_for(self._outbox_wakeup.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 60.0)
                self._outbox_wakeup.set()

    def start(self) -> None:
        """Start background delivery and resume commands left in the inbox."""
        self._outbox_task = asyncio.create_task(self._outbox_loop(), name="outbox")
        self._outbox_wakeup.set()

    def wake_outbox(self) -> None:
        self._outbox_wakeup.set()

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Handle every queued command and deliver every reply (console and tests)."""
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

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop taking commands, let in-flight handlers finish (bounded), flush the outbox."""
        self._accepting = False
        workers = [w for w in self._room_workers.values() if not w.done()]
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout)
            for task in pending:
                task.cancel()
        if self._outbox_task is not None:
            self._outbox_task.cancel()
            try:
                await asyncio.wait_for(self.deliver_pending(), timeout=timeout)
            except (DeliveryError, TimeoutError, asyncio.CancelledError) as exc:
                log.warning("stopping with undelivered replies (%s); they go out on next start", exc)
