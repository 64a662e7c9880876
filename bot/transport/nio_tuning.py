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

* Even so, jsonschema's walk costs about half a millisecond per event, twice per event (the
  generic room-event schema, then the event type's own): after a restart, the full-state sync of a
  bot in 1,000 rooms (some 20,000 state events) spent most of its seconds there. `fast_valid`
  first checks the instance against the schema itself, for the keywords nio's schemas use, in
  jsonschema's order and with nio's defaults filled in at the same places; only when it cannot
  vouch for an instance (invalid, or a keyword or value it does not handle) does jsonschema run,
  on the instance as it was (defaults the fast check filled in are taken back first), so an
  invalid event gets exactly nio's error.

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
import numbers
import re
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
FAST_VALID_PATH = Tuning(
    "valid instances are checked without jsonschema's walk", ("0.26.0",),
    (("nio.schemas:extend_with_default", "406fd7e025c5b484"),))
TUNINGS = (OWN_EVENTS_UNDECRYPTED, NEW_ENCRYPTED_ROOMS_ONLY, CRYPTO_STORE_WAL, CACHED_VALIDATORS,
           FAST_VALID_PATH)


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
    if FAST_VALID_PATH.active:
        filled: list[tuple[dict[str, Any], str]] = []
        if fast_valid(schema, instance, filled):
            return
        for holder, key in reversed(filled):  # jsonschema starts from the instance as it came
            del holder[key]
    validator.validate(instance)


# What Draft 4 (nio's validator) does with each keyword it knows; any other such keyword, or
# "$ref", sends the instance to jsonschema. Keywords Draft 4 does not know ("const", "default"
# beside its property) are ignored, as jsonschema ignores them.
_DRAFT4_KEYWORDS = frozenset({
    "$ref", "additionalItems", "additionalProperties", "allOf", "anyOf", "dependencies", "enum",
    "format", "items", "maxItems", "maxLength", "maxProperties", "maximum", "minItems",
    "minLength", "minProperties", "minimum", "multipleOf", "not", "oneOf", "pattern",
    "patternProperties", "properties", "required", "type", "uniqueItems"})


def fast_valid(schema: dict[str, Any], instance: Any,
               filled: list[tuple[dict[str, Any], str]]) -> bool:
    """True when `instance` is valid under nio's Draft 4 validator with its defaults: those are
    then filled in as nio's validator fills them, and recorded in `filled`. False when it is not
    valid or this check cannot tell: the caller then runs jsonschema.

    Keywords are taken in the schema's order, as jsonschema takes them, and the first that fails
    stops the check, so every default filled in is one jsonschema fills in before that point."""
    for keyword, value in schema.items():
        if keyword not in _DRAFT4_KEYWORDS:
            continue
        if keyword == "type":
            names = value if isinstance(value, list) else [value]
            if not any(name in DRAFT4_TYPES and DRAFT4_TYPES[name](instance) for name in names):
                return False  # (an unknown type name makes jsonschema raise: let it)
        elif keyword == "properties":
            if not isinstance(instance, dict):
                # nio's defaults are set before the type is looked at: that raises; let it.
                if any("default" in sub for sub in value.values()):
                    return False
                continue
            for name, sub in value.items():
                if "default" in sub and name not in instance:
                    instance[name] = sub["default"]
                    filled.append((instance, name))
            for name, sub in value.items():
                if name in instance and not fast_valid(sub, instance[name], filled):
                    return False
        elif keyword == "required":
            if isinstance(instance, dict) and any(name not in instance for name in value):
                return False
        elif keyword == "enum":
            # Strings only: jsonschema compares 0, 1 and booleans specially.
            if not (type(instance) is str and instance in value):
                return False
        elif keyword == "format":
            try:
                if not nio.schemas.Checker.conforms(instance, value):
                    return False
            except Exception:  # noqa: BLE001 - a check that raises: jsonschema decides
                return False
        elif keyword == "items":
            if not isinstance(value, dict):
                return False
            if isinstance(instance, list) and not all(
                    fast_valid(value, item, filled) for item in instance):
                return False
        elif keyword == "patternProperties":
            if isinstance(instance, dict):
                for pattern, sub in value.items():
                    for name, item in instance.items():
                        if re.search(pattern, name) and not fast_valid(sub, item, filled):
                            return False
        elif keyword == "additionalProperties":
            if value is not False or not isinstance(instance, dict):
                return False  # a schema for extras, or not an object: rare, jsonschema's
            patterns = "|".join(schema.get("patternProperties", {}))
            known = schema.get("properties", {})
            if any(name not in known and not (patterns and re.search(patterns, name))
                   for name in instance):
                return False
        elif keyword == "minimum":
            if "exclusiveMinimum" in schema:
                return False
            if DRAFT4_TYPES["number"](instance) and instance < value:
                return False
        elif keyword == "pattern":
            if isinstance(instance, str) and not re.search(value, instance):
                return False
        elif keyword == "not":
            # Only the form nio uses, {"not": {"required": [...]}}: valid unless all are there.
            if set(value) != {"required"} or not isinstance(instance, dict):
                return False  # (a non-object passes "required", so it fails "not")
            if all(name in instance for name in value["required"]):
                return False
        else:
            return False
    return True


# Draft 4's types as jsonschema checks them (a unit test compares the two on sample values).
DRAFT4_TYPES: dict[str, Any] = {
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "string": lambda v: isinstance(v, str),
}


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
