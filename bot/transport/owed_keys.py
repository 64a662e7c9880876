"""Room keys the bot still owes to devices it could not reach when it shared them.

Before its first message with a new Megolm session, nio shares the session with every member
device it has an Olm session for, claiming one-time keys for the rest first. A device whose
homeserver did not answer (or whose keys the bot had not fetched yet) is skipped, and nothing
tries again: that person can never read what the bot says with that session. The introduction
the bot sends the moment someone on another homeserver is invited is the common case.

So the bot remembers each session's key as it was before anything was encrypted with it (in
memory only, like nio's outbound sessions: a restart forgets both), notes after sharing whom it
missed, and retries in the background, backing off, until each such device has an Olm session;
it then sends that device the key (`m.room_key`, Olm-encrypted), which opens every message of
the session. Only people who were in the room when it was shared, and still are, get it; a
person whose keys the bot had not fetched yet gets it on the devices it then learns of. Nothing
here holds up a sync or a send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    KeysClaimResponse,
    LocalProtocolError,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
)
from nio.crypto import OlmDevice, OutboundGroupSession

log = logging.getLogger(__name__)

MEGOLM = "m.megolm.v1.aes-sha2"
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 300.0
# A device still unreachable after this is given up on (with a warning): a homeserver down for
# a day has bigger problems, and the bot keeps no key material for longer than it must.
GIVE_UP_AFTER_S = 24 * 3600.0
MAX_DEBTS = 500  # sessions; beyond it the oldest is given up (with a warning)
REQUEST_TIMEOUT_S = 20.0
_REQUEST_ERRORS = (OSError, TimeoutError, LocalProtocolError, aiohttp.ClientError)


def retry_delay(tries: int) -> float:
    """Seconds until the next try after `tries` failed ones: doubling, capped."""
    return min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(0, tries - 1))


def missed_devices(
    users: Iterable[str],
    devices_of: Callable[[str], Iterable[str]],
    reached: set[tuple[str, str]],
    unfetched: set[str],
) -> dict[str, set[str] | None]:
    """Whom a shared session did not reach: per person, the devices left out, or None when no
    device of theirs is known because their keys are not fetched yet (`unfetched`). Someone
    whose fetched keys list no device (no encrypting client) is owed nothing."""
    missed: dict[str, set[str] | None] = {}
    for user_id in users:
        devices = set(devices_of(user_id))
        if not devices:
            if user_id in unfetched:
                missed[user_id] = None
        elif left_out := {device for device in devices if (user_id, device) not in reached}:
            missed[user_id] = left_out
    return missed


@dataclass(frozen=True)
class Fresh:
    session: OutboundGroupSession
    key: str  # before anything was encrypted with it
    members: frozenset[str]  # the room's members just before it was shared


@dataclass
class Debt:
    room_id: str
    session_id: str
    session_key: str
    owed: dict[str, set[str] | None]  # user -> device ids; None: no device known yet
    since: float
    next_try: float
    tries: int = 0
    given: int = 0


class OwedRoomKeys:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 on_give_up: Callable[[int], None] = lambda devices: None) -> None:
        self._clock = clock
        self._on_give_up = on_give_up
        self._fresh: dict[str, Fresh] = {}  # by room: the session its next send shares
        self._debts: dict[str, Debt] = {}  # by session id, oldest first
        self._task: asyncio.Task[None] | None = None

    @property
    def debts(self) -> list[Debt]:
        return list(self._debts.values())

    @property
    def owed_count(self) -> int:
        """Devices owed a key, counting a member whose devices are not fetched yet as one."""
        return sum(len(ids) if ids is not None else 1
                   for debt in self._debts.values() for ids in debt.owed.values())

    def prepare(self, client: AsyncClient, room_id: str) -> None:
        """Before a send: if it will share a new session, make that session now, so its key is
        taken before anything is encrypted with it (nio uses an unshared session as it is), and
        note who is in the room: only they can be owed it."""
        olm = client.olm
        room = client.rooms.get(room_id)
        if olm is None or room is None or room_id in client.sharing_session:
            return
        if not olm.should_share_group_session(room_id):
            return
        session = olm.outbound_group_sessions.get(room_id)
        if session is None or session.shared:
            olm.create_outbound_group_session(room_id)
            session = olm.outbound_group_sessions[room_id]
        fresh = self._fresh.get(room_id)
        key = fresh.key if fresh is not None and fresh.session is session else session.session_key
        self._fresh[room_id] = Fresh(session, key, frozenset(room.users))

    def after_send(self, client: AsyncClient, room_id: str) -> None:
        """After a send: whom the session prepared for it did not reach becomes a debt. The
        session is the one kept from `prepare`: a member joining since may have made nio drop
        it, and someone who came in after it was shared is owed nothing."""
        fresh = self._fresh.get(room_id)
        if fresh is None or client.olm is None:
            return
        if not fresh.session.shared:
            if client.olm.outbound_group_sessions.get(room_id) is not fresh.session:
                del self._fresh[room_id]
            return  # the send failed before sharing: the next one shares this same session
        del self._fresh[room_id]
        room = client.rooms.get(room_id)
        members = fresh.members & set(room.users) if room is not None else frozenset()
        session = fresh.session
        others = members - {client.user_id}
        missed = missed_devices(sorted(others), lambda user: _devices(client, user),
                                session.users_shared_with | session.users_ignored,
                                {user for user in others if not _fetched(client, user)})
        if not missed:
            return
        now = self._clock()
        self._debts[session.id] = Debt(room_id, session.id, fresh.key, missed, since=now,
                                       next_try=now + FIRST_RETRY_S)
        log.info("owed room key: a message in %s did not reach %d member(s) (%d known "
                 "device(s)); retrying in the background", room_id, len(missed), _count(missed))
        while len(self._debts) > MAX_DEBTS:
            oldest = next(iter(self._debts.values()))
            self._give_up(oldest, "too many owed room keys")

    def note_sync(self, client: AsyncClient, response: SyncResponse) -> None:
        """Debts to people who just showed signs of life are due now; settle what is due, in
        the background."""
        if not self._debts:
            return
        active = set(response.device_list.changed)
        for info in response.rooms.join.values():
            active.update(getattr(event, "sender", "") for event in info.timeline.events)
        now = self._clock()
        for debt in self._debts.values():
            if active & debt.owed.keys():
                debt.next_try = min(debt.next_try, now)
        if (self._task is None or self._task.done()) and any(
                debt.next_try <= now for debt in self._debts.values()):
            self._task = asyncio.create_task(self._settle_logged(client))

    async def _settle_logged(self, client: AsyncClient) -> None:
        try:
            await self.settle(client)
        except Exception:  # a fault here must not end the retries, nor anything else
            log.exception("owed room key: a retry round failed")

    async def settle(self, client: AsyncClient) -> None:
        """One round over the debts that are due: fetch unknown devices, claim one-time keys for
        devices without an Olm session, send the key to those that have one."""
        olm = client.olm
        if olm is None:
            return
        now = self._clock()
        due = [debt for debt in self._debts.values() if debt.next_try <= now]
        for debt in due:
            self._forget_departed(client, debt)
        unknown = {user for debt in due for user, ids in debt.owed.items() if ids is None}
        if unknown:
            olm.users_for_key_query.update(unknown)
            await _request(client.keys_query(), "fetching device keys")
            for debt in due:
                self._learn_devices(client, debt)
        unclaimed: dict[str, set[str]] = {}
        for debt in due:
            for user, device_id in self._owed_devices(debt):
                device = _devices(client, user).get(device_id)
                if device is not None and olm.session_store.get(device.curve25519) is None:
                    unclaimed.setdefault(user, set()).add(device_id)
        if unclaimed:
            claimed = await _request(
                client.keys_claim({user: sorted(ids) for user, ids in unclaimed.items()}),
                "claiming one-time keys")
            if isinstance(claimed, KeysClaimResponse) and claimed.failures:
                log.info("owed room key: %d homeservers did not answer a key claim",
                         len(claimed.failures))
        sends: list[tuple[Debt, str, str, Awaitable[object]]] = []
        for debt in due:
            for user, device_id in self._owed_devices(debt):
                message = _room_key_message(client, debt, user, device_id)
                if message is not None:
                    sends.append((debt, user, device_id,
                                  _request(client.to_device(message), "sending a room key")))
        results = await asyncio.gather(*(send for *_, send in sends))
        for (debt, user, device_id, _), result in zip(sends, results, strict=True):
            if isinstance(result, ToDeviceResponse):
                ids = debt.owed.get(user)
                if ids is not None:
                    ids.discard(device_id)
                    if not ids:
                        del debt.owed[user]
                debt.given += 1
        now = self._clock()
        for debt in due:
            if not debt.owed:
                self._debts.pop(debt.session_id, None)
                if debt.given:  # otherwise everyone it was owed to left, or has no device
                    log.info("owed room key: given in %s to %d device(s)", debt.room_id,
                             debt.given)
            elif now - debt.since >= GIVE_UP_AFTER_S:
                self._give_up(debt, "still unreachable after a day")
            else:
                debt.tries += 1
                debt.next_try = now + retry_delay(debt.tries)

    def _forget_departed(self, client: AsyncClient, debt: Debt) -> None:
        """A person who left the room gets nothing more from it."""
        room = client.rooms.get(debt.room_id)
        members = set(room.users) if room is not None else set()
        for user in [user for user in debt.owed if user not in members]:
            del debt.owed[user]

    @staticmethod
    def _learn_devices(client: AsyncClient, debt: Debt) -> None:
        for user, ids in list(debt.owed.items()):
            if ids is not None:
                continue
            if devices := _devices(client, user):
                debt.owed[user] = set(devices)
            elif _fetched(client, user):
                del debt.owed[user]  # no encrypting client: nothing to give

    @staticmethod
    def _owed_devices(debt: Debt) -> list[tuple[str, str]]:
        return [(user, device) for user, ids in debt.owed.items() for device in ids or ()]

    def _give_up(self, debt: Debt, why: str) -> None:
        self._debts.pop(debt.session_id, None)
        known = _count(debt.owed)
        self._on_give_up(known)
        if known:
            log.warning("owed room key: gave up on %d device(s) in %s (%s); their people cannot "
                        "read some of the bot's messages there", known, debt.room_id, why)
        else:
            log.info("owed room key: nobody in %s it was owed to has a device (%s)",
                     debt.room_id, why)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _devices(client: AsyncClient, user_id: str) -> dict[str, OlmDevice]:
    """A person's devices the bot may share keys with: not deleted, not blacklisted."""
    olm = client.olm
    assert olm is not None
    return {device.id: device for device in olm.device_store.active_user_devices(user_id)
            if not olm.is_device_blacklisted(device)}


def _fetched(client: AsyncClient, user_id: str) -> bool:
    """Whether the bot holds the person's current device list (nio keeps a user whose query
    failed, or whose devices changed, queued for the next one)."""
    olm = client.olm
    assert olm is not None
    return user_id in olm.tracked_users and user_id not in olm.users_for_key_query


def _count(owed: dict[str, set[str] | None]) -> int:
    return sum(len(ids) for ids in owed.values() if ids)


def _room_key_message(client: AsyncClient, debt: Debt, user: str,
                      device_id: str) -> ToDeviceMessage | None:
    """The session's key, Olm-encrypted for one device (None: no Olm session with it yet)."""
    olm = client.olm
    assert olm is not None
    device = _devices(client, user).get(device_id)
    if device is None:
        return None
    session = olm.session_store.get(device.curve25519)
    if session is None:
        return None
    content = {"algorithm": MEGOLM, "room_id": debt.room_id, "session_id": debt.session_id,
               "session_key": debt.session_key}
    # nio's own Olm encryption: the same payload (sender, keys, recipient) it shares keys with.
    encrypted = olm._olm_encrypt(session, device, "m.room_key", content)  # noqa: SLF001
    return ToDeviceMessage("m.room.encrypted", user, device_id, encrypted)


async def _request(request: Awaitable[Any], what: str) -> object:
    try:
        return await asyncio.wait_for(request, REQUEST_TIMEOUT_S)
    except _REQUEST_ERRORS as exc:
        log.info("owed room key: %s failed (%s)", what, type(exc).__name__)
        return exc
