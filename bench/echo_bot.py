"""A bare matrix-nio echo bot: the baseline mutual-aid-bot is measured against.

It does the least a correct E2EE bot must do: log in, keep a crypto store, join rooms it is
invited to, sync (retrying messages whose keys arrive late), and answer every `!` message with an encrypted `m.notice` that replies to it.
No database, no parsing, no outbox: whatever the real bot costs beyond this is its own overhead.

    python bench/echo_bot.py HOMESERVER USER_ID PASSWORD STORE_DIR
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    LoginResponse,
    MegolmEvent,
    RoomMessageText,
    SyncResponse,
)


async def main(homeserver: str, user_id: str, password: str, store: str) -> int:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                               request_timeout=60)
    client = AsyncClient(homeserver, user_id, store_path=store, config=config)
    response = await client.login(password, device_name="echo-bench")
    if not isinstance(response, LoginResponse):
        print(f"login failed: {response}", file=sys.stderr)
        return 1
    if client.should_upload_keys:
        await client.keys_upload()
    first = await client.sync(timeout=0, full_state=True)
    assert isinstance(first, SyncResponse)
    started_ms = int(time.time() * 1000)
    waiting: list[tuple[str, MegolmEvent]] = []  # keys not here yet: retried after each sync

    async def answer(room_id: str, event: RoomMessageText) -> None:
        if event.sender == user_id or event.server_timestamp < started_ms:
            return
        if not event.body.startswith("!"):
            return
        content = {
            "msgtype": "m.notice", "body": "echo: " + event.body[:200],
            "m.mentions": {},
            "m.relates_to": {"m.in_reply_to": {"event_id": event.event_id}},
        }
        await client.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("echo bot ready", flush=True)
    token = first.next_batch
    while not stop.is_set():
        try:
            response = await client.sync(timeout=30_000, since=token)
            if not isinstance(response, SyncResponse):
                await asyncio.sleep(1)
                continue
            token = response.next_batch
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            await client.send_to_device_messages()
            for room_id, info in response.rooms.invite.items():
                if any(isinstance(e, InviteMemberEvent) and e.state_key == user_id
                       for e in info.invite_state):
                    await client.join(room_id)
            ready: list[tuple[str, RoomMessageText]] = []
            for room_id, info in response.rooms.join.items():
                for event in info.timeline.events:
                    if isinstance(event, MegolmEvent):
                        waiting.append((room_id, event))
                    elif isinstance(event, RoomMessageText):
                        ready.append((room_id, event))
            still = []
            for room_id, event in waiting:
                event.room_id = room_id
                try:
                    decrypted = client.decrypt_event(event)
                except Exception:  # noqa: BLE001 - key not here yet
                    still.append((room_id, event))
                    continue
                if isinstance(decrypted, RoomMessageText):
                    ready.append((room_id, decrypted))
            waiting[:] = still[-1000:]
            for room_id, event in ready:
                try:
                    await asyncio.wait_for(answer(room_id, event), 30)
                except TimeoutError:
                    print(f"echo: reply to {event.event_id} timed out", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - a benchmark baseline must not die quietly
            print(f"echo: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(1)
    await client.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
