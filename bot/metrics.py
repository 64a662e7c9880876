"""Operational metrics: counters the app and transport update, and an optional HTTP endpoint.

The counters always exist (they are cheap); the endpoint is served only when `[metrics] enabled`.
It listens on 127.0.0.1 by default and offers:

- `/metrics`: Prometheus text format (commands handled by name and outcome, handler errors, sync
  requests and failures, sync lag, time of the last good sync, the scheduler's next wake-up, ...).
- `/healthz`: 200 when the last sync succeeded within `healthy_sync_age_seconds`, else 503.

No label ever carries message text or user ids: command names are limited to registered commands
(anything else is counted as "unknown").
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.config import MetricsConfig

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands = Counter("mab_commands_handled", "Commands handled, by command and outcome",
                                ["command", "outcome"], registry=r)
        self.errors = Counter("mab_handler_errors", "Handlers that raised (the user got an apology)",
                              registry=r)
        self.handle_seconds = Histogram("mab_handle_seconds", "Time to handle one command",
                                        registry=r,
                                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self.sync_requests = Counter("mab_sync_requests", "Sync requests made", registry=r)
        self.sync_failures = Counter("mab_sync_failures", "Sync requests that failed", registry=r)
        self.deliveries = Counter("mab_messages_delivered", "Outbox messages delivered", registry=r)
        self.delivery_failures = Counter("mab_delivery_failures",
                                         "Delivery attempts that failed (retried later)", registry=r)
        self.dead_letters = Counter("mab_dead_letters",
                                    "Messages given up as undeliverable (listed by !status)",
                                    registry=r)
        self.room_keys_given_up = Counter(
            "mab_room_keys_given_up", "Member devices given up on after a day unreachable: they "
            "cannot read some of the bot's messages", registry=r)
        # Set by the Matrix transport: what it still owes (docs/architecture.md, owed room keys).
        self.room_keys_owed = Gauge(
            "mab_room_keys_owed", "Member devices (or members whose devices are not fetched yet) "
            "still owed a room key: their homeserver did not answer", registry=r)
        self.last_good_sync: float | None = None
        Gauge("mab_last_good_sync_timestamp_seconds", "Unix time of the last successful sync",
              registry=r).set_function(lambda: self.last_good_sync or 0.0)
        Gauge("mab_sync_lag_seconds", "Seconds since the last successful sync (-1: none yet)",
              registry=r).set_function(self.sync_age)
        # Set by the scheduler each time it plans its next wake-up; one in the past means it is
        # stuck (it wakes at least every 10 minutes).
        self.next_scheduled_wake: float | None = None
        Gauge("mab_scheduler_next_wake_timestamp_seconds",
              "Unix time of the scheduler's next planned wake-up (0: not planned yet)",
              registry=r).set_function(lambda: self.next_scheduled_wake or 0.0)
        self._runner: web.AppRunner | None = None

    # ---- updates --------------------------------------------------------------------------

    def sync_ok(self) -> None:
        self.last_good_sync = time.time()

    def sync_age(self) -> float:
        return -1.0 if self.last_good_sync is None else time.time() - self.last_good_sync

    def healthy(self) -> bool:
        age = self.sync_age()
        return 0 <= age <= self.config.healthy_sync_age_seconds

    # ---- the endpoint ---------------------------------------------------------------------

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        age = self.sync_age()
        if self.healthy():
            return web.Response(text=f"ok: last sync {age:.0f} s ago\n")
        what = "no sync yet" if age < 0 else f"last good sync {age:.0f} s ago"
        return web.Response(status=503, text=f"unhealthy: {what}\n")

    async def start_server(self) -> None:
        if not self.config.enabled or self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        self._runner = runner
        log.info("metrics on http://%s:%d/metrics and /healthz", self.config.host, self.config.port)

    async def stop_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
