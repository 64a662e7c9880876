"""Matrix transport: matrix-nio with end-to-end encryption.

It knows the network and nothing of mutual aid. It logs in (once, then reuses the saved session),
keeps a persistent crypto store, runs a supervised sync loop, turns decrypted command messages into
`Incoming` items for the app, and delivers `Outgoing` messages as encrypted `m.notice` events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinError,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    ReactionEvent,
    RedactionEvent,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomMemberEvent,
    RoomMessage,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPutStateResponse,
    RoomRedactResponse,
    RoomSendResponse,
    SyncError,
    SyncResponse,
    UploadFilterResponse,
    UploadResponse,
    WhoamiResponse,
)
from nio.crypto import ENCRYPTION_ENABLED  # noqa: F401 - fails early if the e2e extra is missing

from bot.actions import TAG_EVENT, request_dm_room, tag_mark
from bot.config import BotConfig, MatrixConfig
from bot.formatting import render
from bot.messages import (
    DeliveryError,
    Edit,
    Event,
    FatalTransportError,
    Incoming,
    Membership,
    NetworkEvent,
    Outgoing,
    Reaction,
    Redaction,
    RoomRequest,
)
from bot.networks import MATRIX
from bot.pod_network import KEY as NETWORK_KEY
from bot.secret_box import SecretBoxError, read_sealed, write_sealed
from bot.storage import Storage
from bot.transport.nio_tuning import BotClient, BotCryptoStore, install_nio_tunings
from bot.transport.owed_keys import OwedRoomKeys
from bot.transport.quiet_account import QuietAccount
from bot.transport.room_state import BULK_STATE_ROWS, MemberGaps, restore_rooms, sync_changes

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
READ_WAIT_SYNC_MS = 1_000
TIMELINE_LIMIT = 100
BACKFILL_PAGE = 100
BACKFILL_MAX_PAGES = 50
ROOM_WAIT_S = 15.0
MAX_BACKOFF_S = 60.0
INVITE_JOIN_ATTEMPTS = 3
# What a privileged room creator (room version 12+) counts as: above any power level.
CREATOR_POWER_LEVEL = 2**53 - 1
UNENCRYPTED_NOTE = "unencrypted-warning"
# Sent to the person by direct message (an encrypted one): nothing goes into a room in clear.
UNENCRYPTED_WARNING = (
    "You wrote to me in a room that is not end-to-end encrypted, so I did not act on it: I only "
    "work in encrypted rooms, to keep what people share private. Talk to me here instead. For a "
    "pod room, a room admin can turn on encryption in the room settings."
)
NOT_ENCRYPTED = "the room is not end-to-end encrypted; nothing is sent into it in clear"
UNREADABLE_NOTE = (
    "I couldn't read your last message: its encryption keys never reached me. "
    "Could you send it again? If this keeps happening, verify your session or re-join the room."
)
SYNC_FILTER = {
    "room": {
        "timeline": {"limit": TIMELINE_LIMIT},
        # Members come with the events they sent; rooms are read whole where that is not enough
        # (bot/transport/room_state.py).
        "state": {"lazy_load_members": True},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
}


@dataclass
class SavedSession:
    user_id: str
    device_id: str
    access_token: str


def _pickle_key(passphrase: str, user_id: str) -> str:
    # nio's default pickle key is a constant; derive ours from the configured secret instead.
    digest = hashlib.pbkdf2_hmac("sha256", passphrase.encode(), user_id.encode(), 200_000)
    return digest.hex()


def _session_path(matrix: MatrixConfig) -> Path:
    return matrix.store_dir / "session.json"


def _load_session(path: Path, passphrase: str) -> SavedSession | None:
    """The saved login, sealed with the store passphrase (a plaintext one is sealed on load)."""
    saved = read_sealed(path, passphrase, "session")
    if saved is None:
        return None
    data = json.loads(saved)
    return SavedSession(data["user_id"], data["device_id"], data["access_token"])


def _save_session(path: Path, session: SavedSession, passphrase: str) -> None:
    write_sealed(path, json.dumps(session.__dict__).encode("utf-8"), passphrase, "session")


def edited(event: RoomMessageText) -> tuple[str, str] | None:
    """(the event it replaces, the new text) for an edit; None for an ordinary message."""
    content = event.source.get("content", {})
    relates = content.get("m.relates_to") or {}
    if relates.get("rel_type") != "m.replace" or not isinstance(relates.get("event_id"), str):
        return None
    new = content.get("m.new_content") or {}
    text = new.get("body") if isinstance(new.get("body"), str) else ""
    return relates["event_id"], text


def event_text(event: RoomMessageText) -> str | None:
    """The text of an ordinary message; None for an edit (an `Edit` event, never a second
    command) and for a body that is not text."""
    if edited(event) is not None:
        return None
    return event.body if isinstance(event.body, str) else None


class MatrixTransport:
    network = MATRIX

    def __init__(self, config: BotConfig, storage: Storage) -> None:
        assert config.matrix is not None
        self.config = config
        self.matrix = config.matrix
        self.storage = storage
        self.app: App | None = None
        self.client: AsyncClient | None = None
        self.first_sync_done = asyncio.Event()
        self.caught_up = self.first_sync_done  # what the runtime waits for before scheduled sends
        self.secrets: set[str] = set()
        self._stopping = asyncio.Event()
        self._undecryptable: dict[str, tuple[MegolmEvent, str, float]] = {}
        self.sync_failures = 0
        self.last_good_sync: float | None = None
        self._privileged_creators: dict[str, set[str]] = {}
        # Rooms the bot created, with their invitees, until a sync shows them complete.
        self._being_created: dict[str, set[str]] = {}
        self._next_sync = asyncio.Event()
        # When the newest stored sync's request began (time.monotonic()): what it shows is at
        # least as new as anything done before then.
        self._synced_from = float("-inf")
        # room id -> when the bot joined it (ms), as in the "joined:<room>" meta rows. Only this
        # transport writes those rows, so it keeps them here instead of reading them every sync.
        self._joined_ms: dict[str, int] = {}
        # SYNC_FILTER, uploaded once: each sync then names it by id instead of carrying it as
        # URL-encoded JSON. The dict itself if the upload failed.
        self._sync_filter: dict[str, Any] | str = SYNC_FILTER
        self._members = MemberGaps(storage, self._note_creators)
        self._quiet = QuietAccount()
        self._owed_keys = OwedRoomKeys(on_give_up=self._count_keys_given_up)

    # ---- login and crypto store -----------------------------------------------------------

    async def connect(self) -> None:
        matrix = self.matrix
        matrix.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(matrix.store_dir, 0o700)
        password = matrix.password.read()
        passphrase = matrix.store_passphrase.read()
        install_nio_tunings()
        client_config = AsyncClientConfig(
            store=BotCryptoStore,
            store_sync_tokens=False,
            encryption_enabled=True,
            pickle_key=_pickle_key(passphrase, matrix.user_id),
            max_timeouts=0,  # connection errors come back to our supervised loop and its backoff
            request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
        )
        session_file = _session_path(matrix)
        try:
            session = _load_session(session_file, passphrase)
        except SecretBoxError as exc:
            raise FatalTransportError(str(exc)) from None
        client = BotClient(matrix.homeserver, matrix.user_id, store_path=str(matrix.store_dir),
                           config=client_config)
        self.client = client
        if session is None:
            response = await client.login(password, device_name=matrix.device_name)
            if not isinstance(response, LoginResponse):
                raise FatalTransportError(
                    f"login as {matrix.user_id} failed: {getattr(response, 'message', response)}. "
                    "Check matrix.user_id and the password secret."
                )
            session = SavedSession(response.user_id, response.device_id, response.access_token)
            _save_session(session_file, session, passphrase)
            log.info("logged in as %s, new device %s", session.user_id, session.device_id)
        else:
            if session.user_id != matrix.user_id:
                raise FatalTransportError(
                    f"the saved session in {session_file} is for {session.user_id}, but the config "
                    f"says {matrix.user_id}. Use a different matrix.store_dir for another account."
                )
            client.restore_login(session.user_id, session.device_id, session.access_token)
        for name in os.listdir(matrix.store_dir):
            _chmod_private(matrix.store_dir / name)
        whoami = await client.whoami()
        if not isinstance(whoami, WhoamiResponse):
            if getattr(whoami, "status_code", "") in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise FatalTransportError(
                    f"the homeserver no longer accepts the saved access token for {matrix.user_id}. "
                    f"Delete {session_file} to log in again (a new device will be created)."
                )
            raise FatalTransportError(f"whoami failed: {getattr(whoami, 'message', whoami)}")
        if whoami.user_id != matrix.user_id or (whoami.device_id and whoami.device_id != session.device_id):
            raise FatalTransportError(
                f"the homeserver says this token belongs to {whoami.user_id} device {whoami.device_id}, "
                f"but the config and crypto store are for {matrix.user_id} device {session.device_id}."
            )
        if client.should_upload_keys:
            await client.keys_upload()
        await self._cross_sign(password, passphrase)
        await self._upload_sync_filter()
        self._quiet.start(client)
        self.secrets |= {session.access_token, password, passphrase}

    async def _upload_sync_filter(self) -> None:
        try:
            response = await self.client.upload_filter(
                room=SYNC_FILTER["room"], presence=SYNC_FILTER["presence"],
                account_data=SYNC_FILTER["account_data"])
        except (OSError, TimeoutError, LocalProtocolError, aiohttp.ClientError) as exc:
            response = exc
        if isinstance(response, UploadFilterResponse):
            self._sync_filter = response.filter_id
        else:
            log.warning("could not store the sync filter (%s); sending it with each sync",
                        getattr(response, "message", None) or type(response).__name__)

    async def _cross_sign(self, password: str, passphrase: str) -> None:
        from bot.transport.cross_signing import CrossSigningError, ensure_cross_signing

        try:
            await ensure_cross_signing(self.client, password,
                                       self.matrix.store_dir / "cross_signing.json", passphrase)
        except SecretBoxError as exc:
            raise FatalTransportError(str(exc)) from None
        except CrossSigningError as exc:
            # The bot still works for clients that share keys with unverified devices.
            log.warning("cross-signing could not be set up: %s", exc)

    # ---- the sync loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Sync until stopped. Errors back off exponentially; bad credentials raise."""
        assert self.client is not None and self.app is not None
        async with self.storage.transaction() as tx:
            token = await tx.delivery.get_meta("sync_token")
            restorable = token is not None and await tx.rooms.complete()
        first_start = token is None
        # Full state once, unless the rooms' state stored with the token rebuilds nio's rooms.
        full_state = not restorable or not await self._restore_rooms()
        failures = 0
        metrics = self.app.metrics
        metrics.room_keys_owed.set_function(lambda: self._owed_keys.owed_count)
        while not self._stopping.is_set():
            metrics.sync_requests.inc()
            sync_started = time.monotonic()
            try:
                response = await self.client.sync(
                    timeout=self._sync_timeout_ms(first_start),
                    sync_filter=self._sync_filter, since=token, full_state=full_state)
            except (OSError, TimeoutError, LocalProtocolError, aiohttp.ClientError) as exc:
                # aiohttp.ServerDisconnectedError (a dropped long-poll) is not an OSError.
                response = exc
            if isinstance(response, SyncResponse):
                if failures:
                    log.info("sync recovered after %d failed attempts", failures)
                    self.app.wake_outbox()  # the homeserver is back: retry delivery now
                failures = 0
                self.sync_failures = 0
                try:
                    await self._after_sync(response, skip_commands=first_start,
                                           full_state=full_state)
                except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                    log.warning("processing a sync failed (%s); retrying", type(exc).__name__)
                    await self._backoff(1)
                    continue
                token = response.next_batch
                first_start = False
                self._synced_from = sync_started
                self._next_sync.set()
                self._next_sync = asyncio.Event()
                self.last_good_sync = time.time()
                metrics.sync_ok()
                if not self.first_sync_done.is_set():
                    self.first_sync_done.set()
                    log.info("first sync complete: %d rooms (%s)", len(self.client.rooms),
                             "full state" if full_state else "incremental")
                full_state = False
                continue
            if isinstance(response, SyncError) and response.status_code in (
                    "M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                raise FatalTransportError(
                    f"the homeserver rejected the access token for {self.matrix.user_id}. "
                    f"Delete {_session_path(self.matrix)} to log in again."
                )
            failures += 1
            self.sync_failures = failures
            metrics.sync_failures.inc()
            reason = getattr(response, "message", None) or type(response).__name__
            log.warning("sync failed (%s); attempt %d", reason, failures)
            await self._backoff(failures)

    def _sync_timeout_ms(self, first_start: bool) -> int:
        if first_start or not self.first_sync_done.is_set():
            return 0
        if self._members.reading:
            return READ_WAIT_SYNC_MS  # take in rooms read whole soon, even in quiet rooms
        if self._undecryptable:
            # Come back in time to give up on keys that never arrive, even in a quiet room.
            return int(min(SYNC_TIMEOUT_MS, max(1.0, self._patience()) * 1000))
        return SYNC_TIMEOUT_MS

    def _patience(self) -> float:
        return self.matrix.undecryptable_patience_seconds

    async def _backoff(self, failures: int) -> None:
        delay = min(MAX_BACKOFF_S, 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _restore_rooms(self) -> bool:
        """Rebuild the rooms from their stored state; False if that failed (a full state sync
        then rebuilds them from the homeserver)."""
        started = time.monotonic()
        try:
            async with self.storage.transaction(bulk=True) as tx:
                rows = await tx.rooms.load()
                gaps = await tx.rooms.gaps()
            count = await restore_rooms(self.client, rows, gaps, self._note_creators)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("the stored room state could not be read (%s); asking for the full state",
                        type(exc).__name__)
            self.client.rooms.clear()
            self._privileged_creators.clear()
            return False
        self._members.restored(self.client.rooms, gaps)
        log.info("restored %d rooms from the database in %.2f s", count, time.monotonic() - started)
        return True

    async def _store_room_state(self, response: SyncResponse, *, full_state: bool) -> None:
        """Before the sync token that covers it (see bot/transport/room_state.py)."""
        changes, left = sync_changes(response)
        if full_state:
            self._members.forget()
        gaps = self._members.note_sync(response)
        if full_state:
            async with self.storage.transaction(bulk=True) as tx:
                await tx.rooms.replace(changes, gaps)
        elif changes or left or gaps:
            async with self.storage.transaction(bulk=len(changes) > BULK_STATE_ROWS) as tx:
                await tx.rooms.update(changes, left, gaps)

    async def _after_sync(self, response: SyncResponse, *, skip_commands: bool,
                          full_state: bool) -> None:
        client = self.client
        await self._store_room_state(response, full_state=full_state)
        for room_id in response.rooms.leave:
            # nio keeps a room the bot left (or was removed from) as it was; a restart would
            # not rebuild it, and nothing is sent there any more.
            client.rooms.pop(room_id, None)
        # Before the commands: whom a room's replies are encrypted for, who counts as its
        # members, whether a direct chat holds anyone else.
        await self._members.fill(client)
        await self._keep_crypto_up_to_date()
        for room_id, info in response.rooms.invite.items():
            await self._on_invite(room_id, info.invite_state)
        items: list[Event] = []
        marks: dict[str, str] = {}
        for room_id, info in response.rooms.join.items():
            events = list(info.timeline.events)
            self._note_creators(room_id, [*info.state, *events])
            self._note_tags(room_id, [*info.state, *events], marks)
            if events:
                marks[f"seen:{room_id}"] = str(max(e.server_timestamp for e in events))
            if skip_commands:
                continue
            if info.timeline.limited:
                events = await self._backfill(room_id, info.timeline.prev_batch) + events
            items += await self._commands_from(room_id, events)
        items += await self._retry_undecryptable()
        self._quiet.note_sync(client, response)
        self._owed_keys.note_sync(client, response)
        assert self.app is not None
        await self.app.receive(items, sync_token=response.next_batch, marks=marks)
        self._retry_direct_chats_now_joined()
        if client.outgoing_to_device_messages:
            await client.send_to_device_messages()

    def _count_keys_given_up(self, devices: int) -> None:
        if self.app is not None:
            self.app.metrics.room_keys_given_up.inc(devices)

    async def _keep_crypto_up_to_date(self) -> None:
        client = self.client
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        if client.outgoing_to_device_messages:
            await client.send_to_device_messages()

    async def _backfill(self, room_id: str, prev_batch: str | None) -> list[Any]:
        """Events a `limited` timeline left out, back to what we have already seen."""
        async with self.storage.transaction() as tx:
            seen = int(await tx.delivery.get_meta(f"seen:{room_id}") or 0)
            joined = await self._joined(tx, room_id)
        floor = max(seen, joined, self._oldest_allowed_ms())
        collected: list[Any] = []
        start = prev_batch
        for _ in range(BACKFILL_MAX_PAGES):
            if start is None:
                break
            page = await self.client.room_messages(room_id, start=start, limit=BACKFILL_PAGE,
                                                   direction=MessageDirection.back)
            if not isinstance(page, RoomMessagesResponse):
                log.warning("backfill of %s failed: %s", room_id, getattr(page, "message", page))
                break
            reached_floor = False
            for event in page.chunk:
                if event.server_timestamp <= floor:
                    reached_floor = True
                    break
                collected.append(event)
            if reached_floor or not page.chunk or page.end == start:
                break
            start = page.end
        log.info("backfilled %d events in %s", len(collected), room_id)
        return list(reversed(collected))

    async def _joined(self, tx: Storage, room_id: str) -> int:
        joined = self._joined_ms.get(room_id)
        if joined is None:
            stored = int(await tx.delivery.get_meta(f"joined:{room_id}") or 0)
            # A mark written meanwhile (a room created while this read waited) is newer: keep it.
            joined = self._joined_ms.setdefault(room_id, stored)
        return joined

    def _note_joined(self, room_id: str) -> str:
        """Remember that the bot joins `room_id` now; the mark to store as "joined:<room>"."""
        joined = int(time.time() * 1000)
        self._joined_ms[room_id] = joined
        return str(joined)

    def _oldest_allowed_ms(self) -> int:
        return int((time.time() - self.matrix.max_command_age_hours * 3600) * 1000)

    async def _commands_from(self, room_id: str, events: list[Any]) -> list[Event]:
        room = self.client.rooms.get(room_id)
        if room is None or all(getattr(e, "sender", None) == self.matrix.user_id for e in events):
            return []  # in a busy room most syncs bring only the bot's own replies
        async with self.storage.transaction() as tx:
            joined = await self._joined(tx, room_id)
            # Not cached: handlers and !forgetme change dm_rooms too.
            dm_partner = await tx.delivery.dm_partner(room_id)
        oldest = max(joined, self._oldest_allowed_ms())
        items: list[Event] = []
        readable = room.encrypted  # nothing from a room in clear is acted on
        for event in events:
            if event.sender == self.matrix.user_id or event.server_timestamp < oldest:
                continue
            if isinstance(event, MegolmEvent):
                self._remember_undecryptable(room_id, event)
                continue
            # Anyone may invite the bot to a "direct chat": one that holds others is not one.
            is_direct = dm_partner == event.sender and room.member_count <= 2
            when = _from_ms(event.server_timestamp)
            if isinstance(event, RedactionEvent | ReactionEvent):
                # Someone deleted a message (the app withdraws a post whose command it was) or
                # reacted to one: typed events, handled once like commands.
                if readable and isinstance(event, RedactionEvent):
                    items.append(Redaction(event.event_id, room_id, event.sender, event.redacts,
                                           is_direct, when))
                elif readable:
                    items.append(Reaction(event.event_id, room_id, event.sender,
                                          event.reacts_to, event.key, is_direct, when))
                continue
            network = _network_payload(event)
            if network is not None:
                # Another bot's message to the network (what it says, and whether its sender is
                # a pod bot at all, is the handler's to judge); nothing from a room in clear.
                if readable:
                    items.append(NetworkEvent(event.event_id, room_id, event.sender, network,
                                              is_direct, when))
                continue
            if isinstance(event, RoomMemberEvent):
                # Someone joined or left: the pod's size changed (split alerts).
                if readable and _joins_or_leaves(event):
                    items.append(Membership(event.event_id, room_id, event.state_key, is_direct,
                                            when))
                continue
            if not isinstance(event, RoomMessageText):  # notices, images, state: not for us
                continue
            edit = edited(event)
            if edit is not None:
                if readable:
                    items.append(Edit(event.event_id, room_id, event.sender, *edit, is_direct,
                                      when))
                continue
            text = event_text(event)
            if text is None:
                continue
            if not is_direct and not text.lstrip().startswith(self.matrix.command_prefix):
                continue
            if not room.encrypted:
                await self._warn_unencrypted(room_id, event.sender)
                continue
            items.append(Incoming(event.event_id, room_id, event.sender, text, is_direct, when))
        return items

    def _remember_undecryptable(self, room_id: str, event: MegolmEvent) -> None:
        if event.event_id in self._undecryptable:
            return
        self._undecryptable[event.event_id] = (event, room_id, time.monotonic())
        log.info("cannot decrypt %s in %s yet; asking for its keys", event.event_id, room_id)
        asyncio.create_task(self._request_keys(event))

    async def _request_keys(self, event: MegolmEvent) -> None:
        try:
            await self.client.request_room_key(event)
        except LocalProtocolError:
            pass  # already requested

    async def _retry_undecryptable(self) -> list[Event]:
        recovered = []
        for event_id, (event, room_id, first_seen) in list(self._undecryptable.items()):
            try:
                decrypted = self.client.decrypt_event(event)
            except Exception:  # noqa: BLE001 - any failure means "still unreadable"
                decrypted = None
            if isinstance(decrypted, RoomMessageText):
                del self._undecryptable[event_id]
                recovered += await self._commands_from(room_id, [decrypted])
            elif time.monotonic() - first_seen > self._patience():
                del self._undecryptable[event_id]
                await self._tell_unreadable(room_id, event)
        return recovered

    async def _tell_unreadable(self, room_id: str, event: MegolmEvent) -> None:
        async with self.storage.transaction() as tx:
            first = await tx.delivery.note_once(room_id, f"unreadable:{event.sender}:{event.session_id}",
                                       self.app.clock())
            if first:
                await tx.delivery.enqueue([Outgoing(render(UNREADABLE_NOTE), room_id=room_id,
                                           reply_to=event.event_id)], self.app.clock())
        if first:
            self.app.wake_outbox()

    async def _warn_unencrypted(self, room_id: str, sender: str) -> None:
        """Tell the person, once per room, in an encrypted DM (never in the room itself)."""
        async with self.storage.transaction() as tx:
            first = await tx.delivery.note_once(room_id, f"{UNENCRYPTED_NOTE}:{sender}",
                                                self.app.clock())
            if first:
                await tx.delivery.enqueue([Outgoing(render(UNENCRYPTED_WARNING), user_id=sender)],
                                          self.app.clock())
        if first:
            self.app.wake_outbox()

    async def _on_invite(self, room_id: str, invite_state: list[Any]) -> None:
        invite = next((e for e in invite_state if isinstance(e, InviteMemberEvent)
                       and e.state_key == self.matrix.user_id and e.membership == "invite"), None)
        inviter = invite.sender if invite else None
        # A direct chat is one the inviter marked as such (is_direct on the invite), never
        # guessed from the member count: a small pod room is not a private conversation.
        direct = invite is not None and invite.content.get("is_direct") is True
        # Pod bots listed in [network] open direct chats with this bot (docs/network.md).
        trusted = direct and inviter in self.config.network.bots
        if inviter is None or not (self.matrix.inviter_allowed(inviter, direct=direct)
                                   or trusted):
            log.warning("declining invite to %s from %s (not an allowed inviter)", room_id, inviter)
            await self.client.room_leave(room_id)
            return
        joined = self._note_joined(room_id)
        async with self.storage.transaction() as tx:
            await tx.delivery.set_meta(f"joined:{room_id}", joined)
            if direct:
                await tx.delivery.set_dm_room(inviter, room_id)
        # An invite from another homeserver can reach us before that server has stored it, and
        # a join at once is then refused: a few tries, a second or two apart.
        for attempt in range(INVITE_JOIN_ATTEMPTS):
            response = await self.client.join(room_id)
            if not isinstance(response, JoinError):
                log.info("joined %s on invite from %s", room_id, inviter)
                return
            if attempt + 1 < INVITE_JOIN_ATTEMPTS:
                await asyncio.sleep(attempt + 1)
        log.warning("joining %s failed: %s", room_id, response.message)

    # ---- delivery -------------------------------------------------------------------------

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        await self._caught_up()
        room_id = out.room_id or await self._dm_room(out.user_id)
        await self._wait_for_room(room_id)
        if out.redacts is not None:
            # A redaction carries no content (and the spec sends it unencrypted in any room).
            return await self._redact(room_id, out.redacts, txn_id)
        self._require_encrypted(room_id)
        content: dict[str, Any] = {
            "msgtype": "m.notice",
            "body": out.message.body,
            "format": "org.matrix.custom.html",
            "formatted_body": out.message.html,
            # Always present: with m.mentions, clients ignore "@room" and names in the body.
            "m.mentions": {"user_ids": list(out.message.mentions)},
        }
        if out.network is not None:
            content[NETWORK_KEY] = json.loads(out.network)
        if out.attachment is not None:
            content = await self._upload(room_id, out)
        if out.reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": out.reply_to}}
        self._owed_keys.prepare(self.client, room_id)
        try:
            response = await self.client.room_send(room_id, "m.room.message", content,
                                                   tx_id=txn_id, ignore_unverified_devices=True)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(type(exc).__name__) from exc
        except LocalProtocolError as exc:
            raise DeliveryError(str(exc), permanent=True) from exc
        finally:
            self._owed_keys.after_send(self.client, room_id)
        if isinstance(response, RoomSendResponse):
            return response.event_id
        permanent = getattr(response, "status_code", "") in ("M_FORBIDDEN", "M_NOT_FOUND", "M_TOO_LARGE")
        raise DeliveryError(getattr(response, "message", str(response)), permanent=permanent)

    async def _redact(self, room_id: str, event_id: str, txn_id: str) -> str | None:
        """Redact one of the bot's own messages (after !forgetme or a deleted command)."""
        try:
            response = await self.client.room_redact(room_id, event_id, tx_id=txn_id)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(type(exc).__name__) from exc
        if isinstance(response, RoomRedactResponse):
            return response.event_id
        permanent = getattr(response, "status_code", "") in ("M_FORBIDDEN", "M_NOT_FOUND")
        raise DeliveryError(getattr(response, "message", str(response)), permanent=permanent)

    def _require_encrypted(self, room_id: str) -> None:
        """The one check before anything goes into a room: it must be end-to-end encrypted.
        Otherwise the message becomes a dead letter with this reason, never a clear-text send."""
        room = self.client.rooms.get(room_id)
        if room is None or not room.encrypted:
            raise DeliveryError(f"{room_id}: {NOT_ENCRYPTED}", permanent=True)

    async def _upload(self, room_id: str, out: Outgoing) -> dict[str, Any]:
        attachment = out.attachment
        self._require_encrypted(room_id)
        response, keys = await self.client.upload(
            lambda *_: attachment.data, content_type=attachment.mimetype,
            filename=attachment.filename, encrypt=True, filesize=len(attachment.data),
        )
        if not isinstance(response, UploadResponse):
            raise DeliveryError(f"upload failed: {getattr(response, 'message', response)}")
        content: dict[str, Any] = {
            "msgtype": "m.file", "body": attachment.filename, "filename": attachment.filename,
            "info": {"mimetype": attachment.mimetype, "size": len(attachment.data)},
            "file": {**keys, "url": response.content_uri},
        }
        if attachment.is_image:
            content["msgtype"] = "m.image"
            content["info"] |= {"w": attachment.width, "h": attachment.height}
        if out.message.body:
            # A caption (Matrix 1.10): the body differs from the file name and may be formatted.
            content |= {"body": out.message.body, "format": "org.matrix.custom.html",
                        "formatted_body": out.message.html,
                        "m.mentions": {"user_ids": list(out.message.mentions)}}
        return content

    async def _dm_room(self, user_id: str) -> str:
        """The person's direct chat; if there is none yet, a step makes it (bot/actions.py) and
        this message waits, backing off only its own destination, until it exists."""
        async with self.storage.transaction() as tx:
            room_id = await tx.delivery.get_dm_room(user_id)
            # A room just made may not have reached a sync yet (_wait_for_room waits for it);
            # one the bot is no longer in, one the person made without encryption or with
            # others in it, is replaced by a fresh encrypted one (deliver runs once caught up).
            known = self.client.rooms.get(room_id) if room_id is not None else None
            private = known is not None and known.encrypted and set(known.users) <= {
                self.matrix.user_id, user_id}
            if room_id is not None and (room_id in self._being_created or private):
                return room_id
            step = await request_dm_room(tx, user_id, self.app.clock())
        self.app.steps.wake()
        raise DeliveryError(f"waiting for a direct chat with them to be made (step {step.id})")

    # ---- rooms the bot makes (steps: bot/actions.py) ---------------------------------------

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        room_id = existing or await self._create_room(request)
        if existing is not None:
            # Made by an earlier attempt (found by its tag): whoever is not in it yet is invited.
            await self._invite_missing(existing, request.invitees)
        await self._grant_power(room_id, request.power_levels)
        self._being_created[room_id] = set(request.invitees)
        return room_id

    async def _create_room(self, request: RoomRequest) -> str:
        try:
            response = await self.client.room_create(
                name=request.name, is_direct=request.is_direct, invite=list(request.invitees),
                federate=True, preset=None,
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "",
                     "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                    {"type": TAG_EVENT, "state_key": "", "content": {"tag": request.tag}},
                ],
            )
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(f"creating a room: {type(exc).__name__}") from exc
        if not isinstance(response, RoomCreateResponse):
            raise DeliveryError(f"could not create a room: {getattr(response, 'message', response)}",
                                permanent=_is_refusal(response))
        return response.room_id

    async def _invite_missing(self, room_id: str, invitees: tuple[str, ...]) -> None:
        room = self.client.rooms.get(room_id)
        present = set(room.users) if room is not None else set()
        for user_id in invitees:
            if user_id in present:
                continue
            try:
                response = await self.client.room_invite(room_id, user_id)
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                raise DeliveryError(f"inviting into a room: {type(exc).__name__}") from exc
            if not isinstance(response, RoomInviteResponse):
                raise DeliveryError(f"could not invite: {getattr(response, 'message', response)}",
                                    permanent=_is_refusal(response))

    async def join_room(self, address: str) -> str:
        """Join a room by alias or id (maybe on another homeserver); refuse, and leave, one that
        is not end-to-end encrypted: nothing is ever sent into it."""
        try:
            response = await self.client.join(address)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(f"joining a room: {type(exc).__name__}") from exc
        if isinstance(response, JoinError):
            raise DeliveryError(f"could not join {address}: {response.message}",
                                permanent=_is_refusal(response))
        room_id = response.room_id
        joined = self._note_joined(room_id)
        async with self.storage.transaction() as tx:
            await tx.delivery.set_meta(f"joined:{room_id}", joined)
        deadline = time.monotonic() + ROOM_WAIT_S
        while room_id not in self.client.rooms and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._next_sync.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        room = self.client.rooms.get(room_id)
        if room is None:
            raise DeliveryError(f"joined {room_id}, but no sync has shown it yet")
        if not room.encrypted:
            await self.client.room_leave(room_id)
            raise DeliveryError(NOT_ENCRYPTED, permanent=True)
        return room_id

    async def _grant_power(self, room_id: str, levels: tuple[tuple[str, int], ...]) -> None:
        """Raise these people to their levels, read-modify-write, so that it works whatever the
        room version (from version 12 the creator must not be in the users map) and is safe to
        repeat on a retry."""
        if not levels:
            return
        try:
            current = await self.client.room_get_state_event(room_id, "m.room.power_levels")
            if not isinstance(current, RoomGetStateEventResponse):
                raise DeliveryError(f"could not read power levels: "
                                    f"{getattr(current, 'message', current)}")
            content = dict(current.content)
            users = dict(content.get("users") or {})
            default = content.get("users_default", 0)
            raised = {person: level for person, level in levels
                      if users.get(person, default) < level}
            if not raised:
                return
            content["users"] = users | raised
            response = await self.client.room_put_state(room_id, "m.room.power_levels", content)
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(f"setting power levels: {type(exc).__name__}") from exc
        if not isinstance(response, RoomPutStateResponse):
            raise DeliveryError(f"could not set power levels: "
                                f"{getattr(response, 'message', response)}",
                                permanent=_is_refusal(response))

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._synced_from < moment:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError("no sync with the homeserver since the last attempt")
            try:
                await asyncio.wait_for(self._next_sync.wait(), remaining)
            except TimeoutError:
                pass

    def _note_tags(self, room_id: str, events: list[Any], marks: dict[str, str]) -> None:
        """A room the bot made for a step carries the step's tag: recorded with the sync, so a
        step whose outcome was never committed finds its room instead of making another."""
        for event in events:
            source = getattr(event, "source", None) or {}
            if source.get("type") != TAG_EVENT or source.get("sender") != self.matrix.user_id:
                continue
            content = source.get("content")
            tag = content.get("tag") if isinstance(content, dict) else None
            if not isinstance(tag, str):
                continue
            marks[tag_mark(tag)] = room_id
            # The bot joined the room when it made it: nothing before that is a command for it.
            self._joined_ms[room_id] = event.server_timestamp
            marks[f"joined:{room_id}"] = str(event.server_timestamp)

    async def _caught_up(self) -> None:
        """Which rooms the bot is in is known once the first sync (full state) is done."""
        try:
            await asyncio.wait_for(self.first_sync_done.wait(), ROOM_WAIT_S)
        except TimeoutError:
            raise DeliveryError("not caught up with the homeserver yet") from None

    async def _wait_for_room(self, room_id: str) -> None:
        """A room the bot just created is usable once a sync has told nio about it, and (since
        a sync can show a room half-created) once nio knows it is encrypted and sees the invites:
        never send in clear, and never share the room key before the invitees are members (or,
        in a direct chat, before the person has joined: `_not_joined`).

        A room the bot is not in and is not creating (it left, was removed, or the room is
        gone, found after a restart) will never be usable: that is a permanent failure.
        """
        if room_id not in self.client.rooms and room_id not in self._being_created:
            raise DeliveryError("the bot is not in this room (it left or was removed)",
                                permanent=True)
        deadline = time.monotonic() + ROOM_WAIT_S

        def unready() -> bool:
            room = self.client.rooms.get(room_id)
            if room is None:
                return True
            invitees = self._being_created.get(room_id)
            return invitees is not None and (not room.encrypted or not invitees <= set(room.users))

        while unready() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._next_sync.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        if unready():
            raise DeliveryError(f"room {room_id} not known (as encrypted) yet")
        if self._not_joined(room_id):
            # Not waited for here: a sync showing them joined retries this destination at once.
            raise DeliveryError(f"waiting for the person invited to room {room_id} to join")
        self._being_created.pop(room_id, None)

    def _not_joined(self, room_id: str) -> set[str]:
        """The person a direct chat the bot made still waits for, until they have joined.

        A message sent there before they join is encrypted for the devices the bot knows then:
        someone whose homeserver was unreachable until just now would never get its key. A room
        for several people (an introduction, a new pod) is not held back for the last of them.
        """
        invitees = self._being_created.get(room_id, set())
        room = self.client.rooms.get(room_id)
        if room is None or len(invitees) != 1:
            return set()
        return invitees - (set(room.users) - set(room.invited_users))

    def _retry_direct_chats_now_joined(self) -> None:
        """A direct chat whose person has just joined: its held messages go at once."""
        assert self.app is not None
        for room_id, invitees in self._being_created.items():
            if (len(invitees) == 1 and room_id in self.client.rooms
                    and not self._not_joined(room_id)):
                (person,) = invitees
                self.app.retry_now(f"person:{person}")

    def power_level(self, room_id: str, user_id: str) -> int:
        room = self.client.rooms.get(room_id) if self.client else None
        if room is None:
            return 0
        if user_id in self._privileged_creators.get(room_id, ()):
            return CREATOR_POWER_LEVEL
        return room.power_levels.get_user_level(user_id)

    def _note_creators(self, room_id: str, events: list[Any]) -> None:
        """Room version 12 and later: creators outrank everyone and are absent from power levels."""
        for event in events:
            if not isinstance(event, RoomCreateEvent):
                continue
            version = str(event.room_version or "1")
            if version.isdigit() and int(version) >= 12:
                content = event.source.get("content", {})
                extra = content.get("additional_creators") or []
                self._privileged_creators[room_id] = {event.sender, *[u for u in extra
                                                                       if isinstance(u, str)]}

    def members(self, room_id: str) -> list[str]:
        """Joined members only: someone merely invited is not (yet) in the pod."""
        room = self.client.rooms.get(room_id) if self.client else None
        return sorted(user_id for user_id, user in room.users.items()
                      if user_id not in room.invited_users) if room else []

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        """Encrypted rooms only: an unencrypted room is never offered (or used) as a pod."""
        if self.client is None:
            return []
        return sorted((room_id, room.display_name) for room_id, room in self.client.rooms.items()
                      if room.encrypted and user_id in room.users
                      and self.matrix.user_id in room.users)

    def identity_unconfirmed(self, user_id: str) -> bool:
        return False  # Matrix shows key changes in the person's client; nothing to hold here

    async def confirm_identity(self, user_id: str) -> bool:
        return False

    async def close(self) -> None:
        self._stopping.set()
        await self._members.close()
        await self._quiet.close()
        await self._owed_keys.close()
        if self.client is not None:
            await self.client.close()

# Refusals a retry cannot change (forbidden, no such user or room, a malformed request).
_REFUSALS = ("M_FORBIDDEN", "M_NOT_FOUND", "M_INVALID_PARAM", "M_BAD_JSON")


def _joins_or_leaves(event: RoomMemberEvent) -> bool:
    """A join, or a leave (or kick or ban) of someone who had joined; not a name change."""
    return (event.membership == "join") != (event.prev_membership == "join")


def _is_refusal(response: object) -> bool:
    return getattr(response, "status_code", None) in _REFUSALS


def _network_payload(event: Any) -> str | None:
    """The network payload of a message (bot/pod_network.py) as JSON text, if it carries one."""
    if not isinstance(event, RoomMessage):
        return None
    content = (getattr(event, "source", None) or {}).get("content")
    value = content.get(NETWORK_KEY) if isinstance(content, dict) else None
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _chmod_private(path: Path) -> None:
    try:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    except OSError:
        pass


def _from_ms(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC)
