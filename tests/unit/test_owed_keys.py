"""Room keys the bot owes: a device its session was not shared with (its homeserver was down, or
its keys unknown) gets the key later, and reads every message of that session.

The crypto is real: the bot and each person are nio Olm machines with their own accounts, and a
person decrypts what the bot encrypted. Only the homeserver is a fake at the transport seam: it
answers key queries, claims and to-device sends while `up`, and hands each to-device message to
the person's machine as their client's sync would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from nio import (
    EncryptedToDeviceEvent,
    KeysClaimResponse,
    MegolmEvent,
    RoomKeyEvent,
    RoomMessageText,
    SyncResponse,
    ToDeviceResponse,
)
from nio.crypto import Olm, OlmDevice
from nio.store import SqliteMemoryStore

from bot.transport.owed_keys import (
    FIRST_RETRY_S,
    GIVE_UP_AFTER_S,
    MAX_RETRY_S,
    OwedRoomKeys,
    missed_devices,
    retry_delay,
)

ROOM = "!pod:a"
BOT = "@bot:a"


def machine(user_id: str, device_id: str) -> Olm:
    return Olm(user_id, device_id, SqliteMemoryStore(user_id, device_id, ""))


def device_of(olm: Olm) -> OlmDevice:
    return OlmDevice(olm.user_id, olm.device_id, dict(olm.account.identity_keys))


class Homeserver:
    """What OwedRoomKeys asks of the client, for a bot and the people in one room."""

    def __init__(self, people: dict[str, Olm], *, up: bool = False) -> None:
        self.olm = machine(BOT, "BOTDEVICE")
        self.user_id = BOT
        self.people = people
        self.up = up
        self.published: set[str] = set()  # people whose device keys the bot can fetch
        self.rooms = {ROOM: SimpleNamespace(users=dict.fromkeys([BOT, *people]))}
        self.sharing_session: dict[str, asyncio.Event] = {}
        self.queries: list[set[str]] = []
        self.claims: list[dict[str, list[str]]] = []
        self.keys: dict[str, list[RoomKeyEvent]] = {user: [] for user in people}
        for person in people.values():
            person.device_store.add(device_of(self.olm))

    def know(self, user_id: str) -> None:
        self.olm.device_store.add(device_of(self.people[user_id]))
        self.olm.tracked_users.add(user_id)

    async def keys_query(self):
        self.queries.append(set(self.olm.users_for_key_query))
        if not self.up:
            raise TimeoutError
        for user_id in list(self.olm.users_for_key_query):
            if user_id in self.published:
                self.know(user_id)
            self.olm.users_for_key_query.discard(user_id)
            self.olm.tracked_users.add(user_id)
        return object()

    async def keys_claim(self, users: dict[str, list[str]]):
        self.claims.append(users)
        if not self.up:
            return KeysClaimResponse({}, {"b": "unreachable"})
        keys: dict[str, dict] = {}
        for user_id, devices in users.items():
            person = self.people[user_id]
            person.account.generate_one_time_keys(1)
            key_id, key = next(iter(person.account.one_time_keys["curve25519"].items()))
            person.account.mark_keys_as_published()
            signed = {"key": key}
            signed["signatures"] = {user_id: {f"ed25519:{person.device_id}":
                                              person.sign_json(signed)}}
            keys[user_id] = {device: {f"signed_curve25519:{key_id}": signed}
                             for device in devices}
        response = KeysClaimResponse(keys, {})
        self.olm.handle_response(response)
        return response

    async def to_device(self, message):
        if not self.up:
            raise TimeoutError
        person = self.people[message.recipient]
        event = EncryptedToDeviceEvent.parse_event(
            {"sender": BOT, "type": message.type, "content": message.as_dict()["messages"][
                message.recipient][message.recipient_device]})
        decrypted = person.handle_to_device_event(event)
        assert isinstance(decrypted, RoomKeyEvent), decrypted
        self.keys[message.recipient].append(decrypted)
        return ToDeviceResponse(message)

    def send(self, owed: OwedRoomKeys, texts: list[str], *, reached: tuple[str, ...] = (),
             while_sending: Callable[[], None] = lambda: None) -> list[MegolmEvent]:
        """A send as nio makes it: the session shared (with `reached` only), then encrypted;
        `while_sending` is what a sync does before the send returns."""
        owed.prepare(self, ROOM)
        session = self.olm.outbound_group_sessions[ROOM]
        session.users_shared_with.update((user, self.people[user].device_id) for user in reached)
        session.shared = True
        events = []
        for n, text in enumerate(texts):
            content = self.olm.group_encrypt(ROOM, {"type": "m.room.message", "room_id": ROOM,
                                                    "content": {"msgtype": "m.text",
                                                                "body": text}})
            events.append(MegolmEvent.from_dict({
                "type": "m.room.encrypted", "sender": BOT, "event_id": f"$e{n}{text}",
                "origin_server_ts": 1, "room_id": ROOM, "content": content}))
        while_sending()
        owed.after_send(self, ROOM)
        return events


def pod(*devices: tuple[str, str], up: bool) -> tuple[Homeserver, list[Olm]]:
    """The bot's room with these people (user id, device id), whose devices the bot knows."""
    people = [machine(user_id, device_id) for user_id, device_id in devices]
    server = Homeserver({person.user_id: person for person in people}, up=up)
    for person in people:
        server.know(person.user_id)
    return server, people


def readable(person: Olm, events: list[MegolmEvent]) -> list[str]:
    bodies = []
    for event in events:
        decrypted = person.decrypt_event(event, ROOM)
        if isinstance(decrypted, RoomMessageText):
            bodies.append(decrypted.body)
    return bodies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_whom_a_session_missed():
    devices = {"@bob:b": ["B1", "B2"], "@carol:b": [], "@dan:a": ["D1"], "@erin:a": []}
    reached = {("@bob:b", "B1"), ("@dan:a", "D1")}
    # Carol's keys are not fetched yet; Erin's are, and list no device: she has no encrypting
    # client and is owed nothing.
    assert missed_devices(devices, devices.__getitem__, reached, {"@carol:b"}) == {
        "@bob:b": {"B2"}, "@carol:b": None}
    assert missed_devices(["@dan:a"], devices.__getitem__, reached, set()) == {}


def test_retries_back_off_doubling_up_to_a_cap():
    delays = [retry_delay(tries) for tries in range(1, 10)]
    assert delays[:4] == [FIRST_RETRY_S, 2 * FIRST_RETRY_S, 4 * FIRST_RETRY_S, 8 * FIRST_RETRY_S]
    assert delays[-1] == MAX_RETRY_S and delays == sorted(delays)


async def test_a_device_skipped_while_its_server_was_down_gets_the_key_and_reads_everything():
    server, (bob, carol) = pod(("@bob:b", "BOBDEVICE"), ("@carol:a", "CAROLDEV"), up=True)
    clock = Clock()
    owed = OwedRoomKeys(clock)
    await server.keys_claim({"@carol:a": ["CAROLDEV"]})
    server.up = False
    # Carol (reachable) got the key when it was shared; Bob's server did not answer the claim.
    events = server.send(owed, ["first", "second"], reached=("@carol:a",))
    assert [(debt.room_id, debt.owed) for debt in owed.debts] == [
        (ROOM, {"@bob:b": {"BOBDEVICE"}})]
    assert readable(bob, events) == []

    # Still down when the first retry is due: the debt waits longer.
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert server.claims[-1] == {"@bob:b": ["BOBDEVICE"]}
    assert len(owed.debts) == 1 and owed.debts[0].next_try == clock.now + FIRST_RETRY_S
    await owed.settle(server)  # not due yet: nothing is asked
    assert len(server.claims) == 2

    server.up = True
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert owed.debts == []
    assert readable(bob, events) == ["first", "second"]
    assert server.keys == {"@bob:b": [server.keys["@bob:b"][0]], "@carol:a": []}


async def test_someone_whose_devices_were_unknown_gets_the_key_once_they_are_fetched():
    hank = machine("@hank:b", "HANKDEV")
    server = Homeserver({"@hank:b": hank}, up=False)
    server.olm.users_for_key_query.add("@hank:b")  # invited just now: his keys are not fetched
    clock = Clock()
    owed = OwedRoomKeys(clock)
    events = server.send(owed, ["you are introduced"])
    assert owed.debts[0].owed == {"@hank:b": None}

    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert server.queries[-1] == {"@hank:b"} and len(owed.debts) == 1

    server.up = True
    server.published.add("@hank:b")
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert owed.debts == []
    assert readable(hank, events) == ["you are introduced"]


async def test_someone_whose_keys_list_no_device_is_dropped_once_fetched():
    """A member with no encrypting client: owed while their keys are not fetched, dropped (not
    retried for a day) once the homeserver says they have no device."""
    server = Homeserver({"@bridged:b": machine("@bridged:b", "UNUSED")}, up=True)
    server.olm.users_for_key_query.add("@bridged:b")
    clock = Clock()
    owed = OwedRoomKeys(clock)
    server.send(owed, ["hi"])
    assert owed.debts[0].owed == {"@bridged:b": None}
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert server.queries == [{"@bridged:b"}] and owed.debts == []
    server.olm.outbound_group_sessions.pop(ROOM)  # a member change: the next send, a new one
    server.send(owed, ["again"])
    assert owed.debts == []


async def test_a_person_who_left_the_room_is_given_nothing():
    server, (bob,) = pod(("@bob:b", "BOBDEVICE"), up=False)
    clock = Clock()
    owed = OwedRoomKeys(clock)
    events = server.send(owed, ["after you left"])
    del server.rooms[ROOM].users["@bob:b"]
    server.up = True
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert owed.debts == [] and server.claims == []
    assert server.keys["@bob:b"] == [] and readable(bob, events) == []


async def test_someone_invited_while_the_message_went_out_is_owed_nothing():
    bob, eve = machine("@bob:b", "BOBDEVICE"), machine("@eve:b", "EVEDEVICE")
    server = Homeserver({"@bob:b": bob}, up=False)
    server.know("@bob:b")
    server.people["@eve:b"] = eve
    server.keys["@eve:b"] = []
    server.olm.device_store.add(device_of(eve))
    clock = Clock()
    owed = OwedRoomKeys(clock)

    def eve_is_invited() -> None:
        server.rooms[ROOM].users["@eve:b"] = None

    events = server.send(owed, ["before eve came"], while_sending=eve_is_invited)
    assert [debt.owed for debt in owed.debts] == [{"@bob:b": {"BOBDEVICE"}}]
    server.up = True
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert readable(bob, events) == ["before eve came"]
    assert server.keys["@eve:b"] == [] and readable(eve, events) == []


async def test_a_join_that_makes_nio_drop_the_session_mid_send_still_leaves_the_debt():
    server, (bob,) = pod(("@bob:b", "BOBDEVICE"), up=False)
    clock = Clock()
    owed = OwedRoomKeys(clock)

    def someone_joins() -> None:  # nio's answer to a member event: a shared session is dropped
        server.olm.outbound_group_sessions.pop(ROOM)

    events = server.send(owed, ["hello"], while_sending=someone_joins)
    server.up = True
    clock.now += FIRST_RETRY_S
    await owed.settle(server)
    assert owed.debts == [] and readable(bob, events) == ["hello"]


async def test_a_session_that_reached_everyone_owes_nothing():
    server, (bob,) = pod(("@bob:b", "BOBDEVICE"), up=True)
    owed = OwedRoomKeys(Clock())
    server.send(owed, ["hi"], reached=("@bob:b",))
    assert owed.debts == []


async def test_an_unreachable_device_is_given_up_after_a_day_with_a_warning(caplog):
    server, (bob,) = pod(("@bob:b", "BOBDEVICE"), up=False)
    clock = Clock()
    given_up: list[int] = []
    owed = OwedRoomKeys(clock, on_give_up=given_up.append)
    server.send(owed, ["hi"])
    assert owed.owed_count == 1
    for _ in range(400):  # bounded: a day at the capped back-off is under 300 rounds
        if not owed.debts:
            break
        clock.now = owed.debts[0].next_try
        with caplog.at_level(logging.INFO, logger="bot.transport.owed_keys"):
            await owed.settle(server)
    assert owed.debts == [] and owed.owed_count == 0 and given_up == [1]
    assert clock.now - 1000.0 >= GIVE_UP_AFTER_S
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gave up on 1 device(s) in !pod:a" in warnings[0]
    assert "hi" not in " ".join(r.getMessage() for r in caplog.records)


def sync_with(sender: str) -> SyncResponse:
    event = {"type": "m.room.message", "sender": sender, "event_id": "$x",
             "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "back online"}}
    response = SyncResponse.from_dict({"next_batch": "s1", "rooms": {"join": {ROOM: {
        "timeline": {"events": [event], "limited": False}, "state": {"events": []},
        "ephemeral": {"events": []}, "account_data": {"events": []}}}}})
    assert isinstance(response, SyncResponse), response
    return response


@pytest.mark.parametrize("sender", ["@bob:b", "@carol:a"])
async def test_a_sign_of_life_from_the_person_makes_their_debt_due_now(sender):
    server, (bob, carol) = pod(("@bob:b", "BOBDEVICE"), ("@carol:a", "CAROLDEV"), up=False)
    clock = Clock()
    owed = OwedRoomKeys(clock)
    events = server.send(owed, ["hi"], reached=("@carol:a",))
    server.up = True
    owed.note_sync(server, sync_with(sender))  # before the first retry is due
    for _ in range(50):
        await asyncio.sleep(0)
    await owed.close()
    if sender == "@bob:b":
        assert readable(bob, events) == ["hi"] and owed.debts == []
    else:
        assert server.claims == [] and len(owed.debts) == 1
