"""Encrypted or nothing, at the transport's one chokepoint (the real end-to-end check is
tests/integration/test_privacy_e2e.py::test_every_event_the_bot_sent_is_encrypted)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from bot.config import BotConfig, MatrixConfig
from bot.formatting import render
from bot.messages import Attachment, DeliveryError, Outgoing
from bot.storage import Storage
from bot.store.actions import dm_key
from bot.transport.matrix import NOT_ENCRYPTED, MatrixTransport

BOT = "@bot:test"
ALICE = "@alice:test"
CLEAR = "!clear:test"
SEALED = "!sealed:test"
CROWDED = "!crowded:test"


class FakeClient:
    def __init__(self) -> None:
        self.rooms = {
            CLEAR: SimpleNamespace(encrypted=False, users={BOT: 0, ALICE: 0}, display_name="Clear"),
            SEALED: SimpleNamespace(encrypted=True, users={BOT: 0, ALICE: 0},
                                    display_name="Sealed"),
        }
        self.sent: list[tuple[str, str]] = []
        self.created: list[dict] = []

    async def room_send(self, room_id, event_type, content, **kwargs):
        self.sent.append((room_id, event_type))
        return SimpleNamespace()

    async def upload(self, *args, **kwargs):
        self.sent.append(("upload", str(kwargs.get("encrypt"))))
        return SimpleNamespace(), {}

    async def room_create(self, **kwargs):
        self.created.append(kwargs)
        return SimpleNamespace()


@pytest.fixture
async def transport(tmp_path, monkeypatch):
    monkeypatch.setenv("MAB_TEST_SECRET", "x")
    matrix = MatrixConfig(homeserver="http://127.0.0.1:1", user_id=BOT,
                          password={"env": "MAB_TEST_SECRET"},
                          store_passphrase={"env": "MAB_TEST_SECRET"})
    storage = await Storage.open(tmp_path / "bot.db")
    transport = MatrixTransport(BotConfig(matrix=matrix), storage)
    transport.client = FakeClient()
    transport.first_sync_done.set()  # caught up: rooms and their encryption are known
    yield transport
    await storage.close()


@pytest.mark.parametrize("attachment", [None, Attachment("shifts.ics", "text/calendar", b"x")])
async def test_nothing_is_sent_into_an_unencrypted_room(transport, attachment):
    out = Outgoing(render("hello"), room_id=CLEAR, attachment=attachment)
    with pytest.raises(DeliveryError) as refused:
        await transport.deliver(out, "mab-1")
    assert refused.value.permanent and NOT_ENCRYPTED in str(refused.value)
    assert transport.client.sent == []


async def test_an_unencrypted_dm_is_replaced_by_a_fresh_encrypted_one(transport):
    async with transport.storage.transaction() as tx:
        await tx.delivery.set_dm_room(ALICE, CLEAR)  # a direct-chat invite made without encryption
    woken = []
    transport.app = SimpleNamespace(clock=lambda: datetime.now(UTC),
                                    steps=SimpleNamespace(wake=lambda: woken.append(1)))

    # The clear room is never used: a step to make a fresh (encrypted) direct chat is recorded,
    # and this message waits for it, backing off only Alice's destination.
    with pytest.raises(DeliveryError) as waiting:
        await transport._dm_room(ALICE)
    assert not waiting.value.permanent and woken
    async with transport.storage.transaction() as tx:
        [step] = await tx.actions.pending()
    assert step.key == dm_key(ALICE) and step.params["invitees"] == [ALICE]
    assert transport.client.sent == []

    # Once the step has made the encrypted room, it is the person's DM from then on.
    async with transport.storage.transaction() as tx:
        await tx.delivery.set_dm_room(ALICE, SEALED)
    assert await transport._dm_room(ALICE) == SEALED


def test_only_encrypted_rooms_are_offered_as_pods(transport):
    assert transport.rooms_with(ALICE) == [(SEALED, "Sealed")]


async def test_a_direct_chat_invite_into_a_room_with_others_is_never_used_as_the_dm(transport):
    """Anyone may invite the bot to a direct chat (the front door), so a room marked direct that
    holds a third person gets none of the person's private messages: a fresh DM is made."""
    transport.client.rooms[CROWDED] = SimpleNamespace(
        encrypted=True, users={BOT: 0, ALICE: 0, "@eve:test": 0}, display_name="Crowded")
    async with transport.storage.transaction() as tx:
        await tx.delivery.set_dm_room(ALICE, CROWDED)
    transport.app = SimpleNamespace(clock=lambda: datetime.now(UTC),
                                    steps=SimpleNamespace(wake=lambda: None))
    with pytest.raises(DeliveryError) as waiting:
        await transport._dm_room(ALICE)
    assert not waiting.value.permanent
    async with transport.storage.transaction() as tx:
        [step] = await tx.actions.pending()
    assert step.params["invitees"] == [ALICE]
