"""The bot's own account keeps no notification counts.

The bot has no pushers and never reads unread counts, yet a homeserver stores a push action for
each member an event notifies, in every room, and counts a member's unread actions on each of
their syncs that carries the room. For the bot that was a row per message in every room it is
in, and two counting queries on each sync with news (a few milliseconds each in a room with a
few thousand messages, on Synapse with SQLite: docs/performance.md, "notifications off").
Turning on the account's `.m.rule.master` push rule stops new actions. Actions stored before
are still counted until the homeserver drops them (Synapse: a day, mentions a month), so a room
whose sync still shows counts gets one private read receipt, which the counting starts after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    EnablePushRuleResponse,
    LocalProtocolError,
    PushRuleKind,
    RoomReadMarkersResponse,
    SyncResponse,
)

log = logging.getLogger(__name__)

MASTER_RULE = ".m.rule.master"
# Receipts are a courtesy to the homeserver: a few at a time, never a burst of one per room
# after a full-state sync.
RECEIPTS_AT_ONCE = 4
REQUEST_TIMEOUT_S = 20.0
_REQUEST_ERRORS = (OSError, TimeoutError, LocalProtocolError, aiohttp.ClientError)


def _reason(response: object) -> str:
    return getattr(response, "message", None) or type(response).__name__


def _counts(info: Any) -> int:
    counts = info.unread_notifications
    if counts is None:
        return 0
    return (counts.notification_count or 0) + (counts.highlight_count or 0)


class QuietAccount:
    def __init__(self) -> None:
        self.silenced = False
        self._marked: set[str] = set()  # rooms given a receipt (or tried) since the start
        self._slots = asyncio.Semaphore(RECEIPTS_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, client: AsyncClient) -> None:
        """Turn on the master push rule in the background: a slow homeserver delays nothing."""
        self._spawn(self.silence(client))

    async def silence(self, client: AsyncClient) -> None:
        """Turn on the master push rule; a failure is logged and the bot runs on regardless."""
        try:
            response: object = await asyncio.wait_for(
                client.enable_pushrule("global", PushRuleKind.override, MASTER_RULE, True),
                REQUEST_TIMEOUT_S)
        except _REQUEST_ERRORS as exc:
            response = exc
        self.silenced = isinstance(response, EnablePushRuleResponse)
        if not self.silenced:
            log.warning("could not turn off notifications for the bot's own account (%s); the "
                        "homeserver goes on counting them", _reason(response))

    def note_sync(self, client: AsyncClient, response: SyncResponse) -> None:
        """Mark read, once per room, the rooms in which this sync shows counts."""
        if not self.silenced:
            return  # new actions keep coming: a receipt would only be the first of many
        for room_id, info in response.rooms.join.items():
            events = info.timeline.events
            if room_id in self._marked or not events or not _counts(info):
                continue
            self._marked.add(room_id)
            self._spawn(self._mark_read(client, room_id, events[-1].event_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_read(self, client: AsyncClient, room_id: str, event_id: str) -> None:
        async with self._slots:
            try:
                response: object = await asyncio.wait_for(
                    client.room_read_markers(room_id, event_id, private_read_event=event_id),
                    REQUEST_TIMEOUT_S)
            except _REQUEST_ERRORS as exc:
                response = exc
        if not isinstance(response, RoomReadMarkersResponse):
            log.info("could not mark %s read (%s); its old counts stay until the homeserver "
                     "drops them", room_id, _reason(response))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
