"""The harness itself: a real Synapse, real nio clients, real end-to-end encryption."""

from __future__ import annotations

import time
import uuid

import nio

from bot.devserver import Synapse

from .people import Person, contains


async def test_encrypted_message_reaches_the_other_person(person_factory):
    started = time.monotonic()
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    print(f"two people in {time.monotonic() - started:.2f}s")

    room_id = await alice.create_room("harness", invite=[bob.user_id])
    assert await bob.wait_for_invite(room_id) == room_id
    await bob.join(room_id)

    event_id = await alice.send(room_id, "hello bob, this is secret")
    got = await bob.wait_for(room_id, contains("secret"), timeout=30)

    assert isinstance(got, nio.RoomMessageText)
    assert got.body == "hello bob, this is secret"
    assert got.sender == alice.user_id
    assert got.event_id == event_id
    assert got.decrypted  # nio only sets this for events that arrived as m.room.encrypted

    raw = await bob.raw_event(room_id, event_id)
    assert raw["type"] == "m.room.encrypted"
    assert raw["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert "secret" not in str(raw)

    # And back the other way, plus the whole history through /messages.
    reply_id = await bob.send(room_id, "hi alice")
    reply = await alice.wait_for(room_id, sender=bob.user_id, after=event_id)
    assert reply.event_id == reply_id and reply.body == "hi alice"

    history = [e.body for e in await bob.messages(room_id) if isinstance(e, nio.RoomMessageText)]
    assert history == ["hello bob, this is secret", "hi alice"]
    assert alice.bodies(room_id) == ["hello bob, this is secret", "hi alice"]


async def test_registering_twice_returns_working_credentials(synapse: Synapse):
    localpart = f"twice-{uuid.uuid4().hex[:8]}"
    first_id, first_pw = await synapse.register(localpart, "first-password")
    second_id, second_pw = await synapse.register(localpart, "second-password")
    assert first_id == second_id == f"@{localpart}:{synapse.server_name}"
    assert second_pw == "second-password"

    third_id, generated = await synapse.register(localpart)
    assert third_id == first_id and generated

    # The password returned last is the one that works.
    person = await Person.create(synapse, localpart, password=generated)
    try:
        assert person.user_id == first_id
    finally:
        await person.close()


async def test_late_joiner_gets_keys_for_later_messages(person_factory):
    alice = await person_factory("alice")
    bob = await person_factory("bob")
    carol = await person_factory("carol")
    room_id = await alice.create_room("growing", invite=[bob.user_id])
    await bob.join(room_id)
    await alice.send(room_id, "before carol")
    await bob.wait_for_text(room_id, "before carol")

    await alice.invite(room_id, carol.user_id)
    await carol.wait_for_invite(room_id)
    await carol.join(room_id)
    after_id = await alice.send(room_id, "after carol")  # nio must rotate the Megolm session
    got = await carol.wait_for_text(room_id, "after carol")
    assert got.event_id == after_id and got.decrypted
    assert (await bob.wait_for_text(room_id, "after carol")).event_id == after_id

    # Carol sees that the earlier message exists but holds no key for it. (Had she been
    # invited before it was sent, nio would have shared the key with her invited device.)
    history = await carol.messages(room_id)
    assert any(isinstance(e, nio.MegolmEvent) for e in history)
    assert [e.body for e in history if isinstance(e, nio.RoomMessageText)] == ["after carol"]
