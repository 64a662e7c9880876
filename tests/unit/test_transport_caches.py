"""The Matrix transport's shortcuts must not change what it does: cached join marks, nio tuning."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from itertools import count
from types import SimpleNamespace

import pytest
from jsonschema import ValidationError
from nio import RoomMessageText
from nio.schemas import Checker, Schemas, Validator

from bot.config import BotConfig, MatrixConfig
from bot.storage import Storage
from bot.transport.matrix import MatrixTransport
from bot.transport.nio_tuning import BotCryptoStore, cached_validate_json, install_cached_validators

BOT = "@bot:test"
ALICE = "@alice:test"
POD = "!pod:test"
DM = "!dm:test"
_ids = count()


def _transport(storage: Storage, monkeypatch, rooms: list[str]) -> MatrixTransport:
    monkeypatch.setenv("MAB_TEST_SECRET", "x")
    matrix = MatrixConfig(homeserver="http://127.0.0.1:1", user_id=BOT,
                          password={"env": "MAB_TEST_SECRET"},
                          store_passphrase={"env": "MAB_TEST_SECRET"})
    transport = MatrixTransport(BotConfig(matrix=matrix), storage)
    transport.client = SimpleNamespace(
        rooms={r: SimpleNamespace(member_count=2, encrypted=True) for r in rooms})
    return transport


def _text(sender: str, body: str, ts: int | None = None) -> RoomMessageText:
    ts = ts if ts is not None else int(datetime.now(UTC).timestamp() * 1000)
    return RoomMessageText.parse_event({
        "type": "m.room.message", "event_id": f"$e{next(_ids)}", "sender": sender,
        "origin_server_ts": ts, "content": {"msgtype": "m.text", "body": body}})


async def _seen(transport: MatrixTransport, room: str, event) -> list[tuple[str, bool]]:
    return [(i.text, i.is_direct) for i in await transport._commands_from(room, [event])]


# ---- the DM partner is read fresh: DM rooms change under the transport ----------------------

async def test_dm_status_follows_forgetme_and_new_dm_rooms(tmp_path, monkeypatch):
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [POD, DM])
        async with storage.transaction() as tx:
            await tx.delivery.set_dm_room(ALICE, DM)
        assert await _seen(transport, DM, _text(ALICE, "hello")) == [("hello", True)]
        assert await _seen(transport, POD, _text(ALICE, "hello")) == []

        async with storage.transaction(bulk=True) as tx:  # what !forgetme does
            await tx.privacy.forget_person(ALICE, datetime.now(UTC))
        # No longer a DM: plain text is not a command there, and commands are not direct.
        assert await _seen(transport, DM, _text(ALICE, "hello")) == []
        assert await _seen(transport, DM, _text(ALICE, "!help")) == [("!help", False)]

        async with storage.transaction() as tx:  # a new direct chat, in the other room
            await tx.delivery.set_dm_room(ALICE, POD)
        assert await _seen(transport, POD, _text(ALICE, "hello")) == [("hello", True)]
        assert await _seen(transport, DM, _text(ALICE, "hello")) == []
    finally:
        await storage.close()


# ---- join marks: cached, and kept in step with what the transport writes --------------------

async def test_join_mark_is_read_once_and_updated_by_the_transport(tmp_path, monkeypatch):
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [POD])
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        async with storage.transaction() as tx:
            await tx.delivery.set_meta(f"joined:{POD}", str(now_ms - 60_000))
        before_join = _text(ALICE, "!help", now_ms - 120_000)
        after_join = _text(ALICE, "!help", now_ms - 30_000)
        assert await _seen(transport, POD, before_join) == []
        assert await _seen(transport, POD, after_join) == [("!help", False)]

        # The transport re-joins (an invite): older commands are now from before the join.
        joins = []

        async def join(room_id):
            joins.append(room_id)
            return SimpleNamespace()

        transport.client.join = join
        invite = SimpleNamespace(state_key=BOT, membership="invite", sender=ALICE, content={})
        monkeypatch.setattr("bot.transport.matrix.InviteMemberEvent", SimpleNamespace)
        await transport._on_invite(POD, [invite])
        assert joins == [POD]
        assert await _seen(transport, POD, _text(ALICE, "!help", now_ms - 30_000)) == []
        async with storage.transaction() as tx:
            stored = int(await tx.delivery.get_meta(f"joined:{POD}"))
        assert stored == transport._joined_ms[POD] >= now_ms
    finally:
        await storage.close()


async def test_a_room_the_bot_creates_has_its_join_mark_at_once(tmp_path, monkeypatch):
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [])
        now_ms = int(datetime.now(UTC).timestamp() * 1000)

        async def room_create(**kwargs):
            from nio import RoomCreateResponse

            return RoomCreateResponse("!new:test")

        transport.client.room_create = room_create
        room = await transport.create_private_room("intro", [ALICE])
        transport.client.rooms[room] = SimpleNamespace(member_count=2, encrypted=True)
        assert transport._pending_marks[f"joined:{room}"] == str(transport._joined_ms[room])
        assert await _seen(transport, room, _text(ALICE, "!help", now_ms - 60_000)) == []
    finally:
        await storage.close()


# ---- nio: one validator per schema, same results ---------------------------------------------

_EVENT = {"type": "m.room.message", "event_id": "$x", "sender": ALICE, "origin_server_ts": 1,
          "content": {"msgtype": "m.text", "body": "hi"}}
_CASES = [
    (Schemas.room_message_text, _EVENT),
    (Schemas.room_message_text, {**_EVENT, "content": {"msgtype": "m.text"}}),
    (Schemas.room_message_text, {**_EVENT, "sender": "not-a-user"}),
    (Schemas.room_megolm_encrypted, _EVENT),
    (Schemas.sync, {"next_batch": "s1"}),
    (Schemas.sync, {"next_batch": "s1", "rooms": {"join": {}}, "to_device": {"events": []}}),
    (Schemas.sync, {"rooms": 3}),
]


def nio_validate_json(instance, schema):
    """nio 0.26's own validate_json, verbatim: a new validator per call."""
    Validator(schema, format_checker=Checker).validate(instance)


@pytest.mark.parametrize(("schema", "instance"), _CASES)
def test_cached_validation_matches_nio(schema, instance):
    def outcome(validate, instance):
        instance = copy.deepcopy(instance)
        try:
            validate(instance, schema)
        except ValidationError as exc:
            return ("invalid", exc.message, list(exc.absolute_path)), instance
        return ("valid",), instance  # with any defaults nio's validator filled in

    expected = outcome(nio_validate_json, instance)
    assert outcome(cached_validate_json, instance) == expected
    assert outcome(cached_validate_json, instance) == expected  # and again, from the cache


def test_install_points_nio_at_the_cached_validator():
    import nio.crypto.olm_machine
    import nio.events.misc
    import nio.responses
    import nio.schemas

    install_cached_validators()
    install_cached_validators()  # idempotent
    for module in (nio.schemas, nio.responses, nio.crypto.olm_machine, nio.events.misc):
        assert module.validate_json is cached_validate_json
    bad = RoomMessageText.parse_event({**_EVENT, "content": {"msgtype": "m.text"}})
    assert not isinstance(bad, RoomMessageText)  # still validated: a BadEvent


# ---- nio: the encrypted-room set is written only when it grows ------------------------------

def test_crypto_store_writes_only_new_encrypted_rooms(tmp_path, monkeypatch):
    from nio.crypto import OlmAccount
    from nio.store import DefaultStore

    store = BotCryptoStore("@bot:test", "DEVICE", str(tmp_path), "key")
    store.save_account(OlmAccount())
    writes: list[set[str]] = []
    real = DefaultStore.save_encrypted_rooms

    def counting(self, rooms):
        writes.append(set(rooms))
        return real(self, rooms)

    monkeypatch.setattr(DefaultStore, "save_encrypted_rooms", counting)
    store.save_encrypted_rooms(set())
    store.save_encrypted_rooms({"!a:test"})
    store.save_encrypted_rooms({"!a:test"})
    store.save_encrypted_rooms({"!a:test", "!b:test"})
    assert writes == [{"!a:test"}, {"!b:test"}]
    assert store.load_encrypted_rooms() == {"!a:test", "!b:test"}

    store.delete_encrypted_room("!a:test")
    store.save_encrypted_rooms({"!a:test"})
    assert writes[-1] == {"!a:test"}

    reopened = BotCryptoStore("@bot:test", "DEVICE", str(tmp_path), "key")
    assert reopened.load_encrypted_rooms() == {"!a:test", "!b:test"}
    reopened.save_encrypted_rooms({"!b:test"})  # loaded, so known to be stored
    assert len(writes) == 3


# ---- nio: the bot's own encrypted messages are not decrypted -------------------------------

def test_own_megolm_events_are_left_encrypted_others_are_decrypted(tmp_path):
    from nio import AsyncClientConfig, MegolmEvent
    from nio.rooms import MatrixRoom

    from bot.transport.nio_tuning import BotClient

    client = BotClient("http://127.0.0.1:1", BOT, store_path=str(tmp_path),
                       config=AsyncClientConfig(encryption_enabled=True))
    decrypted = []

    class Olm:
        def _decrypt_megolm_no_error(self, event, room_id=None):
            decrypted.append(event.sender)
            return _text(event.sender, "!help")

    client.olm = Olm()
    client.user_id = BOT  # as login / restore_login set it
    room = MatrixRoom(POD, BOT, encrypted=True)

    def megolm(sender):
        return MegolmEvent.from_dict({
            "type": "m.room.encrypted", "event_id": f"$m{next(_ids)}", "sender": sender,
            "origin_server_ts": 1, "content": {
                "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "sender_key": "key",
                "session_id": "session", "device_id": "DEVICE"}})

    own = megolm(BOT)
    assert client._handle_timeline_event(own, POD, room, set()) is None
    assert own.room_id == POD
    theirs = client._handle_timeline_event(megolm(ALICE), POD, room, set())
    assert isinstance(theirs, RoomMessageText)
    assert decrypted == [ALICE]


# ---- the sync filter is stored once and named by id ----------------------------------------

async def test_sync_filter_is_uploaded_once_or_sent_inline(tmp_path, monkeypatch):
    from nio import UploadFilterError, UploadFilterResponse

    from bot.transport.matrix import SYNC_FILTER

    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [])
        uploaded = []

        async def upload_filter(**kwargs):
            uploaded.append(kwargs)
            return UploadFilterResponse("7")

        transport.client.upload_filter = upload_filter
        assert transport._sync_filter == SYNC_FILTER
        await transport._upload_sync_filter()
        assert transport._sync_filter == "7"
        assert uploaded == [{"room": SYNC_FILTER["room"], "presence": SYNC_FILTER["presence"],
                             "account_data": SYNC_FILTER["account_data"]}]
        assert set(SYNC_FILTER) == {"room", "presence", "account_data"}  # nothing left out

        failing = _transport(storage, monkeypatch, [])

        async def refuse(**kwargs):
            return UploadFilterError("nope", "M_UNKNOWN")

        failing.client.upload_filter = refuse
        await failing._upload_sync_filter()
        assert failing._sync_filter == SYNC_FILTER
    finally:
        await storage.close()


def test_crypto_store_uses_wal_and_keeps_nio_pragmas(tmp_path):
    from nio.crypto import OlmAccount
    from nio.store import DefaultStore

    store = BotCryptoStore("@bot:test", "DEVICE", str(tmp_path), "key")
    store.save_account(OlmAccount())
    pragma = {name: store.database.execute_sql(f"PRAGMA {name}").fetchone()[0]
              for name in ("journal_mode", "synchronous", "foreign_keys", "secure_delete")}
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}
    store.database.close()
    # A store written in WAL mode opens as before with nio's own store class.
    plain = DefaultStore("@bot:test", "DEVICE", str(tmp_path), "key")
    assert plain.load_account() is not None
