"""The Matrix transport's shortcuts must not change what it does: cached join marks, nio tuning."""

from __future__ import annotations

import copy
import importlib
import logging
import os
from datetime import UTC, datetime
from itertools import count
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError
from nio import Event, RoomMessageText
from nio.schemas import Schemas

from bot.actions import TAG_EVENT, tag_mark
from bot.app import App
from bot.config import BotConfig, MatrixConfig
from bot.messages import DeliveryError
from bot.storage import Storage
from bot.store.actions import dm_key
from bot.transport import nio_tuning
from bot.transport.matrix import MatrixTransport
from bot.transport.nio_tuning import (
    NIO_VALIDATE_JSON,
    TUNINGS,
    BotCryptoStore,
    cached_validate_json,
    install_nio_tunings,
    source_fingerprint,
)

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


async def test_a_direct_chat_with_a_third_person_in_it_is_not_a_private_conversation(
        tmp_path, monkeypatch):
    """Anyone may invite the bot to a direct chat (the front door); one that holds others is
    treated as a group room: plain text is not for the bot and commands are not direct."""
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [DM])
        async with storage.transaction() as tx:
            await tx.delivery.set_dm_room(ALICE, DM)
        transport.client.rooms[DM].member_count = 3
        assert await _seen(transport, DM, _text(ALICE, "hello")) == []
        assert await _seen(transport, DM, _text(ALICE, "!help")) == [("!help", False)]
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


async def test_a_room_the_bot_made_for_a_step_is_recorded_by_its_tag_with_its_join_mark(
        tmp_path, monkeypatch):
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, ["!new:test"])
        now_ms = int(datetime.now(UTC).timestamp() * 1000)

        def tag_event(sender: str, tag: str) -> Event:
            return Event.parse_event({
                "type": TAG_EVENT, "state_key": "", "sender": sender, "event_id": f"$t{tag}",
                "origin_server_ts": now_ms, "content": {"tag": tag}})

        marks: dict[str, str] = {}
        transport._note_tags("!new:test", [tag_event(BOT, "abc"), tag_event(ALICE, "forged")],
                             marks)
        assert marks == {tag_mark("abc"): "!new:test", "joined:!new:test": str(now_ms)}
        # Nothing from before the bot made the room is taken as a command.
        assert await _seen(transport, "!new:test", _text(ALICE, "!help", now_ms - 60_000)) == []
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


@pytest.mark.parametrize(("schema", "instance"), _CASES)
def test_cached_validation_matches_nio(schema, instance):
    def outcome(validate, instance):
        instance = copy.deepcopy(instance)
        try:
            validate(instance, schema)
        except ValidationError as exc:
            return ("invalid", exc.message, list(exc.absolute_path)), instance
        return ("valid",), instance  # with any defaults nio's validator filled in

    expected = outcome(NIO_VALIDATE_JSON, instance)  # nio's live function
    assert outcome(cached_validate_json, instance) == expected
    assert outcome(cached_validate_json, instance) == expected  # and again, from the cache


# Events as a homeserver sends them, one per common schema, for the fast check to be tried on
# as they are and changed at one place.
_SEEDS = [
    {"type": "m.room.member", "state_key": ALICE, "sender": ALICE, "event_id": "$m",
     "origin_server_ts": 1, "content": {"membership": "join", "displayname": "Alice"},
     "unsigned": {"age": 5}},
    {"type": "m.room.create", "state_key": "", "sender": ALICE, "event_id": "$c",
     "origin_server_ts": 1, "content": {"creator": ALICE, "room_version": "10"}},
    {"type": "m.room.power_levels", "state_key": "", "sender": ALICE, "event_id": "$p",
     "origin_server_ts": 1, "content": {"users": {ALICE: 100}, "users_default": 0,
                                        "events": {"m.room.name": 50}, "ban": 50}},
    {"type": "m.room.encryption", "state_key": "", "sender": ALICE, "event_id": "$e",
     "origin_server_ts": 1, "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
    {"type": "m.room.name", "state_key": "", "sender": ALICE, "event_id": "$n",
     "origin_server_ts": 1, "content": {"name": "Elm Street"}},
    {"type": "m.room.history_visibility", "state_key": "", "sender": ALICE, "event_id": "$h",
     "origin_server_ts": 1, "content": {"history_visibility": "shared"}},
    {"type": "m.room.encrypted", "sender": ALICE, "event_id": "$x", "origin_server_ts": 1,
     "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "sender_key": "k",
                 "device_id": "D", "session_id": "s"}},
    {"type": "m.reaction", "sender": ALICE, "event_id": "$r", "origin_server_ts": 1,
     "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}},
    _EVENT,
    {"next_batch": "s1", "rooms": {"join": {POD: {"timeline": {"events": [], "limited": False},
                                                 "state": {"events": []}}}},
     "device_one_time_keys_count": {"signed_curve25519": 50},
     "device_lists": {"changed": [ALICE], "left": []}, "to_device": {"events": []}},
]
# Every schema of nio's, and more often the ones the seeds are written for (so that the fast
# check's "valid" is tried as often as its "cannot tell").
_SCHEMAS = st.sampled_from(sorted(name for name in vars(Schemas) if not name.startswith("_"))) | \
    st.sampled_from(["room_event", "room_membership", "room_create", "room_power_levels",
                     "room_encryption", "room_name", "room_history_visibility",
                     "room_megolm_encrypted", "reaction", "room_message_text", "sync"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2)
    | st.sampled_from(["", "join", "leave", ALICE, "alice", POD, "$x", "m.text", "m.room.member",
                       "m.megolm.v1.aes-sha2", "curve25519:AAAA", "https://x.example"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["membership", "body", "msgtype", "type", "content",
                                       "state_key", "users", "events", "key", "url"]),
                      inner, max_size=3),
    max_leaves=6)


def _outcome(validate, schema, instance):
    instance = copy.deepcopy(instance)
    try:
        validate(instance, schema)
    except ValidationError as exc:
        return ("invalid", exc.message, list(exc.absolute_path)), instance
    except Exception as exc:  # noqa: BLE001 - nio's own validator raises some; so must we
        return ("raised", type(exc).__name__), instance
    return ("valid",), instance  # with any defaults nio's validator filled in


@given(seed=st.sampled_from(_SEEDS), schema_name=_SCHEMAS,
       path=st.lists(st.integers(0, 20), max_size=3), change=st.sampled_from(["keep", "set", "drop"]),
       value=_VALUES)
@settings(max_examples=int(os.environ.get("MAB_HYPOTHESIS_EXAMPLES", "1000")) // 2, deadline=None)
def test_the_fast_check_gives_nio_s_outcome_on_changed_events(seed, schema_name, path, change,
                                                                 value):
    instance = copy.deepcopy(seed)
    holder, key = None, None
    node = instance
    for step in path:  # walk to one place in the event: that place is changed
        if isinstance(node, dict) and node:
            holder, key = node, sorted(node)[step % len(node)]
        elif isinstance(node, list) and node:
            holder, key = node, step % len(node)
        else:
            break
        node = holder[key]
    if holder is not None and change == "set":
        holder[key] = value
    elif holder is not None and change == "drop":
        del holder[key]
    schema = getattr(Schemas, schema_name)
    assert _outcome(cached_validate_json, schema, instance) == _outcome(NIO_VALIDATE_JSON, schema,
                                                                        instance)


@pytest.mark.parametrize(("seed", "schema_name"), list(zip(_SEEDS, [
    "room_membership", "room_create", "room_power_levels", "room_encryption", "room_name",
    "room_history_visibility", "room_megolm_encrypted", "reaction", "room_message_text", "sync"],
    strict=True)))
def test_the_fast_check_vouches_for_ordinary_events(seed, schema_name):
    """What it is for: the events of a sync pass without jsonschema's walk."""
    event = copy.deepcopy(seed)
    if schema_name != "sync":
        assert nio_tuning.compile_fast_check(Schemas.room_event)(event, [])
    assert nio_tuning.compile_fast_check(getattr(Schemas, schema_name))(event, [])


@pytest.mark.parametrize("value", [None, True, False, 0, 1, -1, 1.0, 1.5, "", "x", [], {}, [1], {"a": 1}])
def test_draft4_types_are_jsonschema_s(value):
    from nio.schemas import Validator

    for name, check in nio_tuning.DRAFT4_TYPES.items():
        assert check(value) == Validator.TYPE_CHECKER.is_type(value, name), (name, value)


def test_install_points_nio_at_the_cached_validator():
    import nio.crypto.olm_machine
    import nio.events.misc
    import nio.responses
    import nio.schemas

    install_nio_tunings()
    install_nio_tunings()  # idempotent
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


# ---- nio: each change only on the nio versions it was tested on -----------------------------

def _live(dotted: str):
    module, _, qualname = dotted.partition(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    # Once installed, nio.schemas names the cached validator; nio's own function is kept aside.
    return NIO_VALIDATE_JSON if target is cached_validate_json else target


@pytest.mark.parametrize("tuning", TUNINGS, ids=lambda t: t.what)
def test_nio_functions_each_change_relies_on_are_as_tested(tuning):
    if not tuning.active:
        pytest.skip(f"off on matrix-nio {nio_tuning.NIO_VERSION}: {tuning.what}")
    live = {name: source_fingerprint(_live(name)) for name, _ in tuning.fingerprints}
    # A difference means nio changed this function: re-check the change before trusting it.
    assert live == dict(tuning.fingerprints)


def test_the_installed_nio_is_one_the_changes_were_tested_on():
    # The lock file pins nio; if it moves, the changes must be re-checked and `tested_on` updated.
    assert all(tuning.active for tuning in TUNINGS), nio_tuning.NIO_VERSION


def test_on_an_untested_nio_every_change_is_off_with_one_log_line(tmp_path, monkeypatch, caplog):
    import nio.crypto.olm_machine
    import nio.events.misc
    import nio.responses
    from nio import AsyncClientConfig
    from nio.crypto import OlmAccount
    from nio.rooms import MatrixRoom
    from nio.store import DefaultStore

    from bot.transport.nio_tuning import BotClient

    monkeypatch.setattr(nio_tuning, "NIO_VERSION", "0.99.0")
    monkeypatch.setattr(nio_tuning, "_installed", False)
    modules = (nio.schemas, nio.responses, nio.crypto.olm_machine, nio.events.misc)
    for module in modules:
        monkeypatch.setattr(module, "validate_json", NIO_VALIDATE_JSON)
    with caplog.at_level(logging.WARNING, logger=nio_tuning.__name__):
        install_nio_tunings()
        install_nio_tunings()
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "0.99.0" in message and all(tuning.what in message for tuning in TUNINGS)
    assert all(module.validate_json is NIO_VALIDATE_JSON for module in modules)

    store = BotCryptoStore("@bot:test", "DEVICE", str(tmp_path), "key")
    store.save_account(OlmAccount())
    writes = []
    real = DefaultStore.save_encrypted_rooms
    monkeypatch.setattr(DefaultStore, "save_encrypted_rooms",
                        lambda self, rooms: (writes.append(set(rooms)), real(self, rooms)))
    store.save_encrypted_rooms({"!a:test"})
    store.save_encrypted_rooms({"!a:test"})
    assert writes == [{"!a:test"}, {"!a:test"}]  # as nio does: every time
    assert store.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "delete"

    client = BotClient("http://127.0.0.1:1", BOT, store_path=str(tmp_path / "c"),
                       config=AsyncClientConfig(encryption_enabled=True))
    decrypted = []

    class Olm:
        def _decrypt_megolm_no_error(self, event, room_id=None):
            decrypted.append(event.sender)

    client.olm = Olm()
    client.user_id = BOT
    client._handle_timeline_event(_megolm(BOT), POD, MatrixRoom(POD, BOT, encrypted=True), set())
    assert decrypted == [BOT]  # nio's own path: it tries to decrypt


def _megolm(sender: str):
    from nio import MegolmEvent

    return MegolmEvent.from_dict({
        "type": "m.room.encrypted", "event_id": f"$m{next(_ids)}", "sender": sender,
        "origin_server_ts": 1, "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "sender_key": "key",
            "session_id": "session", "device_id": "DEVICE"}})


def test_own_megolm_event_is_handled_as_nio_handles_one_it_cannot_decrypt(tmp_path):
    """BotClient's shortcut against nio's live method, with decryption failing."""
    from nio import AsyncClient, AsyncClientConfig
    from nio.rooms import MatrixRoom

    from bot.transport.nio_tuning import BotClient

    class NoKeys:
        def _decrypt_megolm_no_error(self, event, room_id=None):
            return None

    outcomes = []
    for kind in (AsyncClient, BotClient):
        client = kind("http://127.0.0.1:1", BOT, store_path=str(tmp_path / kind.__name__),
                      config=AsyncClientConfig(encryption_enabled=True))
        client.olm = NoKeys()
        client.user_id = BOT
        room = MatrixRoom(POD, BOT, encrypted=True)
        event = _megolm(BOT)
        returned = AsyncClient._handle_timeline_event(client, event, POD, room, set()) \
            if kind is AsyncClient else client._handle_timeline_event(event, POD, room, set())
        outcomes.append((returned, event.room_id, room.summary, sorted(room.users)))
    assert outcomes[0] == outcomes[1]


async def test_a_dm_to_someone_without_a_dm_room_asks_for_one_room_step_and_waits(
        tmp_path, monkeypatch):
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = _transport(storage, monkeypatch, [POD])
        transport.app = App(storage, transport.config, transport)
        transport.first_sync_done.set()
        for _ in range(3):  # each retry of the message finds the same step
            with pytest.raises(DeliveryError, match="waiting for a direct chat"):
                await transport._dm_room(ALICE)
        async with storage.transaction() as tx:
            (step,) = await tx.actions.pending()
            assert step.key == dm_key(ALICE) and step.params["invitees"] == [ALICE]
            await tx.delivery.set_dm_room(ALICE, DM)
        # Made but not yet seen in a sync: waited for, never replaced by another.
        transport._being_created[DM] = {ALICE}
        assert await transport._dm_room(ALICE) == DM
    finally:
        await storage.close()
