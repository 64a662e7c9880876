"""People for end-to-end tests: real matrix-nio clients with real E2EE, driven step by step.

There is no background task: a `Person` talks to the homeserver only inside the awaited calls
below (`sync_once`, `wait_for`, `send`, ...), and every loop is bounded in both iterations and
time, so a broken test fails with a readable `TimeoutError` rather than hanging.

    alice = await Person.create(synapse, "alice")
    room = await alice.create_room("pod", invite=[bob.user_id])
    await bob.join(room)
    await alice.send(room, "hello")
    event = await bob.wait_for(room, lambda e: e.body == "hello")
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    EncryptionError,
    Event,
    JoinError,
    KeysQueryError,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    RoomCreateError,
    RoomInviteResponse,
    RoomMessage,
    RoomMessagesError,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
)
from nio.api import Api

from bot.devserver import Synapse

Predicate = Callable[[Event], bool]

MEGOLM = "m.megolm.v1.aes-sha2"
MAX_SYNC_WAIT = 1.0  # seconds a single long-poll may take inside wait loops


def body_of(event: Event) -> str | None:
    return getattr(event, "body", None)


def contains(text: str) -> Predicate:
    """Predicate: a message whose body contains `text`."""
    return lambda event: text in (body_of(event) or "")


class Person:
    """A Matrix user with one E2EE device, a local crypto store and a recorded timeline."""

    def __init__(
        self,
        synapse: Synapse,
        name: str,
        user_id: str,
        password: str,
        client: AsyncClient,
        store_dir: Path,
        *,
        owns_store_dir: bool,
    ) -> None:
        self.synapse = synapse
        self.name = name
        self.user_id = user_id
        self.password = password
        self.client = client
        self.store_dir = store_dir
        self._owns_store_dir = owns_store_dir
        # Every timeline event received by sync, per room, in order; undecryptable events are
        # replaced in place once their key arrives.
        self.timeline: dict[str, list[Event]] = {}
        # Rooms we are invited to and have not joined.
        self.invites: set[str] = set()
        self._seen: set[str] = set()
        self._consumed: set[str] = set()
        self._undecrypted: list[tuple[str, int]] = []
        self._closed = False

    @property
    def device_id(self) -> str:
        return self.client.device_id

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        synapse: Synapse,
        localpart: str,
        *,
        password: str | None = None,
        store_dir: Path | None = None,
        device_name: str | None = None,
    ) -> Person:
        """Register (or reuse) the user, log in a fresh E2EE device, upload its keys, sync once."""
        user_id, password = await synapse.register(localpart, password)
        owns = store_dir is None
        store = (
            Path(tempfile.mkdtemp(prefix=f"mab-{localpart}-")) if store_dir is None else store_dir
        )
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=True,
            request_timeout=30,
            max_timeouts=3,
            max_limit_exceeded=20,  # nio's default (None) retries 429s forever
            max_timeout_retry_wait_time=5,
        )
        client = AsyncClient(synapse.base_url, user_id, store_path=str(store), config=config)
        person = cls(synapse, localpart, user_id, password, client, store, owns_store_dir=owns)
        try:
            resp = await client.login(password, device_name=device_name or f"{localpart} (test)")
            if not isinstance(resp, LoginResponse):
                raise RuntimeError(f"{localpart}: login failed: {resp}")
            if client.should_upload_keys:
                await client.keys_upload()
            await person.sync_once()
        except BaseException:
            await person.close()
            raise
        return person

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.client.close()
        if self._owns_store_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    # -- syncing ---------------------------------------------------------------------------------

    async def sync_once(self, timeout: float = 0) -> SyncResponse:  # noqa: ASYNC109
        """One /sync (long-polling up to `timeout` seconds), then the E2EE housekeeping that
        nio's sync_forever would do: upload/query/claim keys and flush to-device messages."""
        resp = await self.client.sync(timeout=int(timeout * 1000))
        if not isinstance(resp, SyncResponse):
            raise RuntimeError(f"{self.name}: sync failed: {resp}")
        self._record(resp)
        await self._crypto_housekeeping()
        self._retry_decryption()
        return resp

    async def _crypto_housekeeping(self) -> None:
        c = self.client
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            resp = await c.keys_query()
            if isinstance(resp, KeysQueryError):
                raise RuntimeError(f"{self.name}: keys_query failed: {resp}")
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()

    def _record(self, resp: SyncResponse) -> None:
        for room_id in resp.rooms.invite:
            self.invites.add(room_id)
        for room_id in (*resp.rooms.join, *resp.rooms.leave):
            self.invites.discard(room_id)
        for room_id, info in resp.rooms.join.items():
            self._append(room_id, info.timeline.events)
        for room_id, info in resp.rooms.leave.items():
            self._append(room_id, info.timeline.events)

    def _append(self, room_id: str, events: Iterable[Event]) -> None:
        timeline = self.timeline.setdefault(room_id, [])
        for event in events:
            event_id = getattr(event, "event_id", None)
            if event_id is not None:
                if event_id in self._seen:
                    continue
                self._seen.add(event_id)
            if isinstance(event, MegolmEvent):
                self._undecrypted.append((room_id, len(timeline)))
            timeline.append(event)

    def _retry_decryption(self) -> None:
        still: list[tuple[str, int]] = []
        for room_id, index in self._undecrypted:
            event = self.timeline[room_id][index]
            assert isinstance(event, MegolmEvent)
            event.room_id = room_id
            try:
                self.timeline[room_id][index] = self.client.decrypt_event(event)
            except EncryptionError:
                still.append((room_id, index))
        self._undecrypted = still

    # -- rooms -----------------------------------------------------------------------------------

    async def create_room(
        self,
        name: str,
        invite: Iterable[str] = (),
        encrypted: bool = True,
        power_levels: dict[str, Any] | None = None,
        *,
        is_direct: bool = False,
        topic: str | None = None,
    ) -> str:
        """A private room (private_chat preset), end-to-end encrypted unless told otherwise."""
        initial_state = []
        if encrypted:
            initial_state.append(
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
            )
        resp = await self.client.room_create(
            name=name,
            topic=topic,
            invite=list(invite),
            is_direct=is_direct,
            preset=RoomPreset.private_chat,
            initial_state=initial_state,
            power_level_override=power_levels,
        )
        if isinstance(resp, RoomCreateError):
            raise RuntimeError(f"{self.name}: creating room {name!r} failed: {resp}")
        await self._sync_until(lambda: resp.room_id in self.client.rooms, 10, "the new room")
        return resp.room_id

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        if isinstance(resp, JoinError):
            raise RuntimeError(f"{self.name}: joining {room_id} failed: {resp}")
        await self._sync_until(lambda: room_id in self.client.rooms, 10, f"joined {room_id}")

    async def invite(self, room_id: str, user_id: str) -> None:
        resp = await self.client.room_invite(room_id, user_id)
        if not isinstance(resp, RoomInviteResponse):
            raise RuntimeError(f"{self.name}: inviting {user_id} to {room_id} failed: {resp}")

    async def leave(self, room_id: str) -> None:
        await self.client.room_leave(room_id)
        await self.sync_once()

    async def wait_for_invite(
        self,
        room_id: str | None = None,
        timeout: float = 30,  # noqa: ASYNC109
    ) -> str:
        """Wait until we are invited to `room_id` (or to any room) and return the room id."""
        if room_id is not None:
            await self._sync_until(lambda: room_id in self.invites, timeout, f"invite to {room_id}")
            return room_id
        await self._sync_until(lambda: bool(self.invites), timeout, "invite")
        return sorted(self.invites)[0]

    async def _sync_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 2):
            if ready():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.sync_once(min(MAX_SYNC_WAIT, remaining))
        if not ready():
            raise TimeoutError(f"{self.name}: no {what} after {timeout:.0f}s")

    # -- messages --------------------------------------------------------------------------------

    async def send(self, room_id: str, text: str, *, notice: bool = False) -> str:
        """Send a text message (encrypted in encrypted rooms); returns its event id.

        Syncs first so that members who joined recently are known, and queries their device keys,
        so nio shares the Megolm session with every member device before encrypting.
        """
        await self.sync_once()
        if room_id not in self.client.rooms:
            raise RuntimeError(f"{self.name} is not in room {room_id}")
        if self.client.should_query_keys:
            await self.client.keys_query()
        content = {"msgtype": "m.notice" if notice else "m.text", "body": text}
        resp = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        if not isinstance(resp, RoomSendResponse):
            raise RuntimeError(f"{self.name}: sending to {room_id} failed: {resp}")
        return resp.event_id

    def received(self, room_id: str) -> list[RoomMessage]:
        """Decrypted message events received so far in the room, in order."""
        return [e for e in self.timeline.get(room_id, []) if isinstance(e, RoomMessage)]

    def bodies(self, room_id: str, sender: str | None = None) -> list[str]:
        return [
            e.body
            for e in self.received(room_id)
            if (sender is None or e.sender == sender) and hasattr(e, "body")
        ]

    def _find(
        self, room_id: str, predicate: Predicate | None, sender: str | None, after: str | None
    ) -> RoomMessage | None:
        events = self.timeline.get(room_id, [])
        start = 0
        if after is not None:
            ids = [getattr(e, "event_id", None) for e in events]
            if after not in ids:
                return None  # the reference event has not reached us yet
            start = ids.index(after) + 1
        for event in events[start:]:
            if not isinstance(event, RoomMessage) or event.event_id in self._consumed:
                continue
            if sender is not None and event.sender != sender:
                continue
            if predicate is None or predicate(event):
                return event
        return None

    async def wait_for(
        self,
        room_id: str,
        predicate: Predicate | None = None,
        timeout: float = 30,  # noqa: ASYNC109
        *,
        sender: str | None = None,
        after: str | None = None,
    ) -> RoomMessage:
        """The first decrypted message in the room that matches, syncing until it arrives.

        Considers messages (text, notice, emote, files...) not already returned by an earlier
        `wait_for`, optionally only from `sender` and only after event `after`. Raises
        TimeoutError, listing what did arrive, if nothing matches within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 2):
            found = self._find(room_id, predicate, sender, after)
            if found is not None:
                self._consumed.add(found.event_id)
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self.sync_once(min(MAX_SYNC_WAIT, remaining))
        found = self._find(room_id, predicate, sender, after)
        if found is not None:
            self._consumed.add(found.event_id)
            return found
        seen = [f"{e.sender}: {body_of(e)!r}" for e in self.received(room_id)][-10:]
        undecrypted = sum(1 for r, _ in self._undecrypted if r == room_id)
        raise TimeoutError(
            f"{self.name}: no matching message in {room_id} after {timeout:.0f}s; "
            f"last messages: {seen}; undecryptable events: {undecrypted}"
        )

    async def wait_for_text(
        self,
        room_id: str,
        text: str,
        timeout: float = 30,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> RoomMessage:
        return await self.wait_for(room_id, contains(text), timeout, **kwargs)

    async def messages(self, room_id: str, max_pages: int = 50) -> list[Event]:
        """The room's whole visible history via /messages, oldest first, decrypted where the
        keys are known (undecryptable events stay MegolmEvent)."""
        events: list[Event] = []
        token: str | None = None
        for _ in range(max_pages):
            resp = await self.client.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=100
            )
            if isinstance(resp, RoomMessagesError):
                raise RuntimeError(f"{self.name}: /messages in {room_id} failed: {resp}")
            for event in resp.chunk:
                if isinstance(event, MegolmEvent):
                    event.room_id = room_id
                    try:
                        event = self.client.decrypt_event(event)
                    except EncryptionError:
                        pass
                events.append(event)
            if not resp.chunk or not resp.end or resp.end == token:
                break
            token = resp.end
        else:
            raise RuntimeError(f"{self.name}: {room_id} has more than {max_pages} pages")
        events.reverse()
        return events

    async def raw_event(self, room_id: str, event_id: str) -> dict[str, Any]:
        """The event exactly as the server stores it (e.g. still m.room.encrypted)."""
        method, path = Api.room_get_event(self.client.access_token, room_id, event_id)
        resp = await self.client.send(method, path)
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{self.name}: fetching {event_id} failed: {body}")
        return body

    def __repr__(self) -> str:
        return f"<Person {self.user_id} device={self.client.device_id}>"
