"""Costs matrix-nio pays for every sync or reply that buy the bot nothing, removed without
changing what it does.

* nio writes the set of encrypted rooms to its SQLite crypto store after *every* sync, even when
  the set is empty or every room in it is already stored: a peewee transaction and an account
  look-up each time (about an eighth of the bot's CPU under load). `BotCryptoStore` writes only
  rooms this store has not stored (or loaded) already. The rows are insert-or-ignore, so skipping
  a room known to be there writes exactly what nio would have written: nothing.

* nio validates every response and event against its JSON schemas with
  `Validator(schema, format_checker=Checker).validate(instance)`, building a new validator (and
  its reference resolver) on each call. `install_nio_tunings()` keeps one validator per
  schema and calls the same `validate`: the same checks, the same errors, the same defaults
  filled in. Validation stays on.

* nio's crypto store keeps SQLite's rollback journal: every write (an Olm session after each
  room-key share, a received room key) creates, syncs and deletes a journal file.
  `BotCryptoStore` opens it in WAL mode, with nio's synchronous=FULL kept: each commit is just
  as durable, at one sync of the log instead.

* nio decrypts every Megolm event in a sync, the bot's own replies included (one in two events
  in a busy room), though the transport never reads its own messages. `BotClient` leaves the
  bot's own encrypted events as they arrive, as nio leaves any event it cannot decrypt.

Each change relies on how nio's functions work inside, so each is applied only on the nio versions
it was tested against (`Tuning.tested_on`); on any other version nio's own behaviour is kept and
`install_nio_tunings` says so in one log line. `fingerprints` are hashes of the source of the nio
functions each change replaces or relies on; the unit tests compare them with the installed nio, so
adding a version to `tested_on` without re-checking the change fails there.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import nio.schemas
from nio import AsyncClient, MegolmEvent
from nio.store import DefaultStore
from peewee import SqliteDatabase

log = logging.getLogger(__name__)

_MAX_CACHED_SCHEMAS = 512
NIO_VERSION = version("matrix-nio")
# nio's own validate_json, kept before install_nio_tunings() replaces it (and for the tests).
NIO_VALIDATE_JSON = nio.schemas.validate_json


def source_fingerprint(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Tuning:
    what: str
    tested_on: tuple[str, ...]
    # "module:qualified.name" of each nio function relied on -> source_fingerprint when tested
    fingerprints: tuple[tuple[str, str], ...]

    @property
    def active(self) -> bool:
        return NIO_VERSION in self.tested_on


OWN_EVENTS_UNDECRYPTED = Tuning(
    "the bot's own messages are not decrypted", ("0.26.0",),
    (("nio:AsyncClient._handle_timeline_event", "39a7d42a63b4a0db"),))
NEW_ENCRYPTED_ROOMS_ONLY = Tuning(
    "only new encrypted rooms are written to the crypto store", ("0.26.0",),
    (("nio.store:DefaultStore.save_encrypted_rooms", "f94f9dc641b11706"),
     ("nio.store:DefaultStore.load_encrypted_rooms", "9a4bd3f5e0847904"),
     ("nio.store:DefaultStore.delete_encrypted_room", "9f9f8e0213e3fc41")))
CRYPTO_STORE_WAL = Tuning(
    "the crypto store uses SQLite's WAL journal", ("0.26.0",),
    (("nio.store:DefaultStore._create_database", "bee4dab712b7f424"),))
CACHED_VALIDATORS = Tuning(
    "one JSON schema validator per schema", ("0.26.0",),
    (("nio.schemas:validate_json", "a6a13a5ecd2a20fc"),))
TUNINGS = (OWN_EVENTS_UNDECRYPTED, NEW_ENCRYPTED_ROOMS_ONLY, CRYPTO_STORE_WAL, CACHED_VALIDATORS)


class BotClient(AsyncClient):
    """nio's client, minus decrypting the bot's own messages: nothing reads them."""

    def _handle_timeline_event(self, event: Any, room_id: str, room: Any,
                               encrypted_rooms: set[str]) -> Any:
        if (OWN_EVENTS_UNDECRYPTED.active and isinstance(event, MegolmEvent)
                and event.sender == self.user_id):
            # What nio does with a Megolm event it cannot decrypt (handle_event ignores it).
            event.room_id = room_id
            room.handle_event(event)
            return None
        return super()._handle_timeline_event(event, room_id, room, encrypted_rooms)


class BotCryptoStore(DefaultStore):
    """nio's default store, minus the no-op write of known encrypted rooms after each sync."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._stored_encrypted_rooms: set[str] = set()

    def _create_database(self) -> SqliteDatabase:
        database = super()._create_database()
        if not CRYPTO_STORE_WAL.active:
            return database
        # nio's own pragmas (foreign keys, secure delete) stay; WAL is added, synchronous=FULL kept.
        database._pragmas = [*database._pragmas, ("journal_mode", "wal")]
        return database

    def load_encrypted_rooms(self) -> set[str]:
        rooms = super().load_encrypted_rooms()
        self._stored_encrypted_rooms |= rooms
        return rooms

    def save_encrypted_rooms(self, rooms: Any) -> None:
        if not NEW_ENCRYPTED_ROOMS_ONLY.active:
            super().save_encrypted_rooms(rooms)
            return
        new = set(rooms) - self._stored_encrypted_rooms
        if not new:
            return  # nio's insert-or-ignore of these rows would change nothing
        super().save_encrypted_rooms(new)
        self._stored_encrypted_rooms |= new

    def delete_encrypted_room(self, room: str) -> None:
        self._stored_encrypted_rooms.discard(room)
        super().delete_encrypted_room(room)


_validators: dict[int, tuple[dict[str, Any], Any]] = {}
_install_lock = threading.Lock()
_installed = False


def cached_validate_json(instance: Any, schema: dict[str, Any]) -> None:
    """`nio.schemas.validate_json` with the validator for `schema` built once."""
    from nio.schemas import Checker, Validator

    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        validator = Validator(schema, format_checker=Checker)
        if len(_validators) < _MAX_CACHED_SCHEMAS:
            # The schema itself is kept in the entry, so its id cannot be reused by another dict.
            _validators[id(schema)] = (schema, validator)
    else:
        validator = entry[1]
    validator.validate(instance)


def install_nio_tunings() -> None:
    """Say which changes this nio version keeps off; point nio's modules at the cached validator."""
    global _installed
    import nio.crypto.olm_machine
    import nio.events.misc
    import nio.responses

    with _install_lock:
        if _installed:
            return
        _installed = True
        skipped = [tuning.what for tuning in TUNINGS if not tuning.active]
        if skipped:
            log.warning("matrix-nio %s is not a version the bot's nio changes were tested on, so "
                        "nio's own behaviour is kept for: %s", NIO_VERSION, "; ".join(skipped))
        if not CACHED_VALIDATORS.active:
            return
        for module in (nio.schemas, nio.responses, nio.crypto.olm_machine, nio.events.misc):
            # Only replace nio's own function: a different one means nio changed; leave it be.
            if getattr(module, "validate_json", None) is NIO_VALIDATE_JSON:
                module.validate_json = cached_validate_json
