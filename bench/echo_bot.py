"""A bare matrix-nio echo bot: the baseline mutual-aid-bot is measured against.

It does the least a correct E2EE bot must do, and nothing more:

- log in, keep a crypto store, upload its device and one-time keys;
- after every sync, the crypto housekeeping: upload keys when the server runs low, query the
  device lists that changed, claim one-time keys for missing Olm sessions, and send the queued
  to-device messages (room keys, key requests, Olm unwedging);
- join rooms it is invited to;
- never miss a message: sync with a 100-event timeline (Synapse's default is 10) and, when a
  sync's timeline is `limited` anyway, page back (`/messages`) to the last event it has seen;
- a message that arrives before its Megolm key is kept, its key is requested once per session
  (`request_room_key`, off the sync loop), and it is retried after every sync until the key
  has arrived (room keys come as to-device events in a later sync);
- answer every `!` message with an encrypted `m.notice` replying to it (`m.in_reply_to`).

Replies go through a queue to one sender task, so the sync loop never waits on `room_send` (as
in mutual-aid-bot, whose outbox delivers in order from its own task). No database, no parsing,
no outbox table: whatever the real bot costs beyond this is its own overhead.

    python bench/echo_bot.py HOMESERVER USER_ID PASSWORD STORE_DIR
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

WAITING_MAX = 5000  # undecryptable events kept for retry; the oldest are dropped past this
SEND_ATTEMPTS = 5
SEEN_PER_ROOM = 1000  # recent event ids per room: where a backfill stops
BACKFILL_PAGES = 50
SYNC_FILTER = {  # what mutual-aid-bot asks for too: a long timeline, nothing it does not use
    "room": {
        "timeline": {"limit": 100},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}


def log(text: str) -> None:
    print(f"echo: {text}", file=sys.stderr, flush=True)


class EchoBot:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.started_ms = int(time.time() * 1000)
        self.waiting: dict[str, tuple[str, MegolmEvent]] = {}  # event id -> (room, event)
        self.requested: set[str] = set()  # Megolm session ids whose key we asked for
        self.replies: asyncio.Queue[tuple[str, RoomMessageText]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.seen: dict[str, deque[str]] = {}

    async def housekeeping(self) -> None:
        client = self.client
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        if client.outgoing_to_device_messages:
            await client.send_to_device_messages()

    async def after_sync(self, response: SyncResponse) -> None:
        client = self.client
        await self.housekeeping()
        for room_id, info in response.rooms.invite.items():
            if any(isinstance(e, InviteMemberEvent) and e.state_key == client.user_id
                   and e.membership == "invite" for e in info.invite_state):
                await client.join(room_id)
        for room_id, info in response.rooms.join.items():
            events = list(info.timeline.events)
            if info.timeline.limited:
                events = await self.backfill(room_id, info.timeline.prev_batch) + events
            seen = self.seen.setdefault(room_id, deque(maxlen=SEEN_PER_ROOM))
            seen.extend(e.event_id for e in events)
            for event in events:
                # nio has already decrypted what it could; a MegolmEvent here lacks its key.
                if isinstance(event, MegolmEvent):
                    self.wait_for_key(room_id, event)
                elif isinstance(event, RoomMessageText):
                    self.consider(room_id, event)
        self.retry_waiting()

    async def backfill(self, room_id: str, start: str | None) -> list[Any]:
        """The events a limited timeline left out, oldest first."""
        seen = set(self.seen.get(room_id, ()))
        collected: list[Any] = []
        for _ in range(BACKFILL_PAGES):
            if start is None:
                break
            page = await self.client.room_messages(room_id, start=start, limit=100,
                                                   direction=MessageDirection.back)
            if not isinstance(page, RoomMessagesResponse):
                log(f"backfill of {room_id} failed: {page}")
                break
            done = not page.chunk or page.end == start
            for event in page.chunk:
                if event.event_id in seen or event.server_timestamp < self.started_ms:
                    done = True
                    break
                collected.append(event)
            if done:
                break
            start = page.end
        return collected[::-1]

    def consider(self, room_id: str, event: RoomMessageText) -> None:
        if event.sender == self.client.user_id or event.server_timestamp < self.started_ms:
            return
        if isinstance(event.body, str) and event.body.startswith("!"):
            self.replies.put_nowait((room_id, event))

    def wait_for_key(self, room_id: str, event: MegolmEvent) -> None:
        if event.server_timestamp < self.started_ms or event.event_id in self.waiting:
            return
        event.room_id = room_id
        self.waiting[event.event_id] = (room_id, event)
        while len(self.waiting) > WAITING_MAX:
            del self.waiting[next(iter(self.waiting))]
        if event.session_id not in self.requested:
            self.requested.add(event.session_id)
            task = asyncio.create_task(self.request_key(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def request_key(self, event: MegolmEvent) -> None:
        try:  # an m.room_key_request, as mutual-aid-bot sends for a message it cannot read
            await self.client.request_room_key(event)
        except LocalProtocolError:
            pass  # already requested
        except Exception as exc:  # noqa: BLE001 - the retry after each sync still applies
            log(f"key request failed: {type(exc).__name__}: {exc}")

    def retry_waiting(self) -> None:
        for event_id, (room_id, event) in list(self.waiting.items()):
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception:  # noqa: BLE001 - the key is not here yet
                continue
            del self.waiting[event_id]
            if isinstance(decrypted, RoomMessageText):
                self.consider(room_id, decrypted)

    async def sender(self) -> None:
        """Send replies in order, off the sync loop; a failed send is retried a few times."""
        while True:
            room_id, event = await self.replies.get()
            content: dict[str, Any] = {
                "msgtype": "m.notice", "body": "echo: " + event.body[:200],
                "m.mentions": {},
                "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
            }
            for attempt in range(SEND_ATTEMPTS):
                try:
                    response = await self.client.room_send(room_id, "m.room.message", content,
                                                           ignore_unverified_devices=True)
                except Exception as exc:  # noqa: BLE001 - retried below
                    response = exc
                if isinstance(response, RoomSendResponse):
                    break
                log(f"reply to {event.event_id} failed ({response}); attempt {attempt + 1}")
                await asyncio.sleep(min(8, 2**attempt))

    async def run(self, stop: asyncio.Event) -> None:
        client = self.client
        first = await client.sync(timeout=0, full_state=True, sync_filter=SYNC_FILTER)
        assert isinstance(first, SyncResponse), first
        await self.housekeeping()
        token = first.next_batch
        sender = asyncio.create_task(self.sender())
        print("echo bot ready", flush=True)
        try:
            while not stop.is_set():
                try:
                    response = await client.sync(timeout=30_000, since=token,
                                                 sync_filter=SYNC_FILTER)
                    if not isinstance(response, SyncResponse):
                        log(f"sync failed: {response}")
                        await asyncio.sleep(1)
                        continue
                    await self.after_sync(response)
                    token = response.next_batch  # only once its events are taken care of
                except Exception as exc:  # noqa: BLE001 - a benchmark baseline must not die quietly
                    log(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(1)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


async def main(homeserver: str, user_id: str, password: str, store: str) -> int:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                               request_timeout=60)
    client = AsyncClient(homeserver, user_id, store_path=store, config=config)
    response = await client.login(password, device_name="echo-bench")
    if not isinstance(response, LoginResponse):
        log(f"login failed: {response}")
        return 1
    if client.should_upload_keys:
        await client.keys_upload()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run = asyncio.create_task(EchoBot(client).run(stop))
    halt = asyncio.create_task(stop.wait())
    await asyncio.wait({run, halt}, return_when=asyncio.FIRST_COMPLETED)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await client.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
