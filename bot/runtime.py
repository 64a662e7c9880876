"""The composition root: one start-up path for `run`, `console`, the demo and the tests.

`Runtime` builds storage, the command registry, the app, the scheduler, the report runner, privacy
housekeeping and metrics once, and attaches any number of transports (one per network: Matrix, Signal, or the
console standing in for Matrix) through a `Router`. It starts them, waits until each has caught up
with its network before scheduled sends go out, and stops everything in the reverse order.

    runtime = await Runtime.open(config)
    runtime.attach(MatrixTransport(config, runtime.storage))
    runtime.attach(SignalTransport(config, runtime.storage))
    exit_code = await runtime.serve()   # until stop(), SIGTERM/SIGINT, or a fatal error
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from datetime import datetime

from bot import parsing
from bot.app import App, utc_now
from bot.commands import build_registry
from bot.commands.privacy import housekeeping
from bot.commands.records import runner_for
from bot.config import BotConfig
from bot.logs import SecretFilter
from bot.messages import FatalTransportError
from bot.router import NetworkTransport, Router
from bot.scheduler import Scheduler
from bot.storage import Storage

log = logging.getLogger(__name__)


def prepare_long_lived_state() -> None:
    """Build now what would otherwise be built on first use, on the loop (the category
    vocabulary), then take what exists (modules, classes, the registry, a network's state after
    its first sync) out of the garbage collector's sight for good. A full collection walks every
    tracked object, and a start-up heap of about 90,000 made each one a 120-150 ms stall of the
    event loop (bench/looplag.py); frozen objects are never walked again. Garbage is collected
    first so that none is frozen."""
    parsing.prepare()
    gc.collect()
    gc.freeze()


class Runtime:
    def __init__(self, config: BotConfig, storage: Storage, *,
                 clock: Callable[[], datetime] = utc_now,
                 secret_filter: SecretFilter | None = None,
                 background_delivery: bool = True) -> None:
        """`background_delivery`: an outbox loop delivers as messages arrive; without it (the
        console) the caller delivers with `app.run_until_idle()` and scheduled runs deliver."""
        self.config = config
        self.storage = storage
        self.router = Router()
        self.app = App(storage, config, self.router, clock=clock, registry=build_registry())
        self.scheduler = Scheduler(self.app, deliver=not background_delivery)
        # Draws !report charts in a worker process; picks up reports asked for before a restart.
        self.reports = runner_for(self.app, deliver=not background_delivery)
        self.secret_filter = secret_filter
        self._background_delivery = background_delivery
        self.transports: list[NetworkTransport] = []
        self._ready_task: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None  # started once ready
        self._housekeeping_stop = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []  # one per transport: ends only by failing
        self._stopping = asyncio.Event()
        self._started = False

    @classmethod
    async def open(cls, config: BotConfig, **kwargs: object) -> Runtime:
        return cls(config, await Storage.open(config.storage.database), **kwargs)  # type: ignore[arg-type]

    def attach(self, transport: NetworkTransport) -> NetworkTransport:
        self.router.attach(transport)
        transport.app = self.app
        self.transports.append(transport)
        return transport

    async def start(self) -> None:
        """Connect every transport, then start delivery, the scheduler, housekeeping and the
        transports' loops. A transport that cannot connect raises; `close()` still stops what
        was started."""
        self._started = True
        await self.app.metrics.start_server()
        for transport in self.transports:
            await transport.connect()
            if self.secret_filter is not None:
                self.secret_filter.secrets |= transport.secrets
        if self._background_delivery:
            self.app.start()
        await self.app.start_pending_workers()
        self.scheduler.start()  # its first run waits for app.ready
        self.reports.start()
        prepare_long_lived_state()
        self._ready_task = asyncio.create_task(self._ready_when_caught_up(), name="ready")
        self._loops += [asyncio.create_task(t.run(), name=f"{t.network} transport")
                        for t in self.transports]

    async def _ready_when_caught_up(self) -> None:
        # Scheduled sends wait for every network: nothing goes out from a stale view of a room.
        await asyncio.gather(*(t.caught_up.wait() for t in self.transports))
        prepare_long_lived_state()  # the first syncs' state, kept for the whole run
        self.app.ready.set()
        self._housekeeping = asyncio.create_task(
            housekeeping(self.app, self._housekeeping_stop), name="privacy housekeeping")

    def stop(self) -> None:
        """Ask `serve()` to finish (signal handlers call this)."""
        self._stopping.set()

    async def serve(self) -> int:
        """Start, run until `stop()` (or SIGTERM/SIGINT) or a transport fails, and close.
        0 when stopped, 3 when a transport could not go on, 1 when stopping itself failed."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        exit_code = 0
        try:
            await self.start()
            stop_wait = asyncio.create_task(self._stopping.wait(), name="stop")
            done, _ = await asyncio.wait({stop_wait, *self._loops},
                                         return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            for task in done - {stop_wait}:
                task.result()  # a transport's loop only ends by failing
                raise FatalTransportError(f"{task.get_name()} stopped")
            log.info("stopping: finishing handlers in progress")
        except FatalTransportError as exc:
            log.error("%s", exc)
            exit_code = 3
        finally:
            try:
                await self.close()
            except Exception:
                exit_code = exit_code or 1  # what failed was logged by close()
            for sig in signals:
                loop.remove_signal_handler(sig)
        log.info("stopped")
        return exit_code

    async def close(self) -> None:
        """Stop everything, the transports last: the app's final delivery still goes out through
        them (what they receive meanwhile is refused and comes again on the next start). A step
        that fails is logged and the rest still run: a database left open kept its thread, and
        the process, alive after the bot had stopped."""
        steps = [("the scheduler", self.scheduler.shutdown), ("reports", self.reports.shutdown),
                 ("housekeeping", self._stop_background), ("the app", self.app.stop),
                 *((f"the {t.network} transport", t.close) for t in self.transports),
                 ("the transports' loops", self._stop_loops), ("the database", self.storage.close),
                 ("metrics", self._stop_metrics)]
        failures: list[Exception] = []
        for what, step in steps:
            try:
                await step()
            except Exception as exc:
                log.error("stopping %s failed: %s", what, exc)
                failures.append(exc)
        if failures:
            raise failures[0]

    async def _stop_background(self) -> None:
        if self._ready_task is not None:
            self._ready_task.cancel()
            await asyncio.gather(self._ready_task, return_exceptions=True)
        # Housekeeping finishes its step (never cancelled inside a transaction) before the app
        # delivers what is left.
        self._housekeeping_stop.set()
        if self._housekeeping is not None:
            await asyncio.gather(self._housekeeping, return_exceptions=True)

    async def _stop_loops(self) -> None:
        for task in self._loops:
            task.cancel()  # a loop that ended after close() is not affected
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()

    async def _stop_metrics(self) -> None:
        if self._started:
            await self.app.metrics.stop_server()


async def serve_networks(config: BotConfig, secret_filter: SecretFilter | None = None) -> int:
    """`mutual-aid-bot run`: every network the config names (Matrix, Signal, or both), until
    SIGTERM/SIGINT (0) or a fatal problem (3)."""
    runtime = await Runtime.open(config, secret_filter=secret_filter)
    if config.matrix is not None:
        from bot.transport.matrix import MatrixTransport

        runtime.attach(MatrixTransport(config, runtime.storage))
    if config.signal is not None:
        from bot.transport.signal import SignalTransport

        runtime.attach(SignalTransport(config, runtime.storage))
    return await runtime.serve()
