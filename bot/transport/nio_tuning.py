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
  bot in 1,000 rooms (some 20,000 state events) spent most of its seconds there. A fast check,
  compiled once per schema (`compile_fast_check`), first checks the instance against the schema itself, for the keywords nio's schemas use, in
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
from collections.abc import Callable
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


# id(schema) -> (schema, jsonschema validator, fast check); the schema is kept in the entry, so
# its id cannot be reused by another dict.
_validators: dict[int, tuple[dict[str, Any], Any, FastCheck]] = {}
_install_lock = threading.Lock()
_installed = False


def cached_validate_json(instance: Any, schema: dict[str, Any]) -> None:
    """`nio.schemas.validate_json` with the validator for `schema` built once, and a valid
    instance vouched for by the fast check alone."""
    from nio.schemas import Checker, Validator

    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, Validator(schema, format_checker=Checker), compile_fast_check(schema))
        if len(_validators) < _MAX_CACHED_SCHEMAS:
            _validators[id(schema)] = entry
    if FAST_VALID_PATH.active:
        filled: list[tuple[dict[str, Any], str]] = []
        if entry[2](instance, filled):
            return
        for holder, key in reversed(filled):  # jsonschema starts from the instance as it came
            del holder[key]
    entry[1].validate(instance)


# A fast check: True when the instance is valid under nio's Draft 4 validator with its defaults,
# which it has then filled in as nio's validator fills them (each recorded in the list). False
# when it is not valid or the check cannot tell: the caller then runs jsonschema.
FastCheck = Callable[[Any, list[tuple[dict[str, Any], str]]], bool]

# The keywords Draft 4 (nio's validator) acts on. Those `compile_fast_check` has no check for
# ("$ref", "anyOf", ...) make it answer "cannot tell"; keywords Draft 4 does not know ("const",
# "default" beside its property) are ignored, as jsonschema ignores them.
_DRAFT4_KEYWORDS = frozenset({
    "$ref", "additionalItems", "additionalProperties", "allOf", "anyOf", "dependencies", "enum",
    "format", "items", "maxItems", "maxLength", "maxProperties", "maximum", "minItems",
    "minLength", "minProperties", "minimum", "multipleOf", "not", "oneOf", "pattern",
    "patternProperties", "properties", "required", "type", "uniqueItems"})


def _cannot_tell(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
    return False


def compile_fast_check(schema: dict[str, Any]) -> FastCheck:
    """The fast check for `schema`: its keywords in the schema's order, as jsonschema takes them,
    the first that fails stopping it, so every default filled in is one jsonschema fills in
    before that point."""
    if not isinstance(schema, dict):
        return _cannot_tell  # (nio has a "required" list where a property's schema goes)
    checks = []
    for keyword, value in schema.items():
        if keyword not in _DRAFT4_KEYWORDS:
            continue
        make = _KEYWORD_CHECKS.get(keyword)
        if make is None:
            return _cannot_tell
        checks.append(make(value, schema))
    if len(checks) == 1:
        return checks[0]

    def every(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
        for check in checks:
            if not check(instance, filled):
                return False
        return True

    return every


def _type(value: Any, schema: dict[str, Any]) -> FastCheck:
    names = value if isinstance(value, list) else [value]
    if not all(name in DRAFT4_TYPES for name in names):
        return _cannot_tell  # jsonschema raises UnknownType: let it
    tests = [DRAFT4_TYPES[name] for name in names]
    if len(tests) == 1:
        test = tests[0]
        return lambda instance, filled: test(instance)
    return lambda instance, filled: any(test(instance) for test in tests)


def _properties(value: dict[str, Any], schema: dict[str, Any]) -> FastCheck:
    defaults = [(name, sub["default"]) for name, sub in value.items()
                if isinstance(sub, dict) and "default" in sub]
    subs = [(name, compile_fast_check(sub)) for name, sub in value.items()]

    def check(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
        if not isinstance(instance, dict):
            # nio sets defaults before the type is looked at: that raises; let it.
            return not defaults
        for name, default in defaults:
            if name not in instance:
                instance[name] = default
                filled.append((instance, name))
        for name, sub in subs:
            if name in instance and not sub(instance[name], filled):
                return False
        return True

    return check


def _required(value: list[str], schema: dict[str, Any]) -> FastCheck:
    return lambda instance, filled: (not isinstance(instance, dict)
                                     or all(name in instance for name in value))


def _enum(value: list[Any], schema: dict[str, Any]) -> FastCheck:
    # Strings only: jsonschema compares 0, 1 and booleans specially.
    return lambda instance, filled: type(instance) is str and instance in value


def _format(value: str, schema: dict[str, Any]) -> FastCheck:
    def check(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
        try:
            return nio.schemas.Checker.conforms(instance, value)
        except Exception:  # noqa: BLE001 - a check that raises: jsonschema decides
            return False

    return check


def _items(value: Any, schema: dict[str, Any]) -> FastCheck:
    if not isinstance(value, dict):
        return _cannot_tell  # a schema per position
    sub = compile_fast_check(value)
    return lambda instance, filled: (not isinstance(instance, list)
                                     or all(sub(item, filled) for item in instance))


def _pattern_properties(value: dict[str, Any], schema: dict[str, Any]) -> FastCheck:
    subs = [(re.compile(pattern), compile_fast_check(sub)) for pattern, sub in value.items()]

    def check(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
        if isinstance(instance, dict):
            for pattern, sub in subs:
                for name, item in instance.items():
                    if pattern.search(name) and not sub(item, filled):
                        return False
        return True

    return check


def _additional_properties(value: Any, schema: dict[str, Any]) -> FastCheck:
    if value is not False:
        return _cannot_tell  # a schema for the extras: rare, jsonschema's
    known = schema.get("properties", {})
    patterns = "|".join(schema.get("patternProperties", {}))
    matcher = re.compile(patterns) if patterns else None

    def check(instance: Any, filled: list[tuple[dict[str, Any], str]]) -> bool:
        if not isinstance(instance, dict):
            return True
        return all(name in known or (matcher is not None and matcher.search(name))
                   for name in instance)

    return check


def _minimum(value: Any, schema: dict[str, Any]) -> FastCheck:
    if "exclusiveMinimum" in schema:
        return _cannot_tell
    number = DRAFT4_TYPES["number"]
    return lambda instance, filled: not number(instance) or instance >= value


def _pattern(value: str, schema: dict[str, Any]) -> FastCheck:
    pattern = re.compile(value)
    return lambda instance, filled: not isinstance(instance, str) or bool(pattern.search(instance))


def _not(value: Any, schema: dict[str, Any]) -> FastCheck:
    # Only the form nio uses, {"not": {"required": [...]}}: valid unless all of them are there.
    if not isinstance(value, dict) or set(value) != {"required"}:
        return _cannot_tell
    names = value["required"]
    # (A non-object passes "required", so it fails "not": jsonschema's to say.)
    return lambda instance, filled: (isinstance(instance, dict)
                                     and not all(name in instance for name in names))


_KEYWORD_CHECKS: dict[str, Callable[[Any, dict[str, Any]], FastCheck]] = {
    "type": _type, "properties": _properties, "required": _required, "enum": _enum,
    "format": _format, "items": _items, "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties, "minimum": _minimum, "pattern": _pattern,
    "not": _not,
}


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
