"""Cross-signing bootstrap for the bot's own account.

Modern Matrix clients only share room keys with devices that their owner has cross-signed, and
matrix-nio does not implement cross-signing. This module fills that gap for the one thing the bot
needs: it owns a master key, a self-signing key and a user-signing key (ed25519), publishes them
for its account, and signs its own device with the self-signing key.

The private seeds live in a small JSON file (mode 0600). On every start `ensure_cross_signing`
compares what the homeserver publishes with that file and only does the work that is missing:

* first run: generate the three keys, save them, upload them (user-interactive auth with the
  bot's password), sign the device;
* later runs with the same device: nothing is uploaded;
* a new device (e.g. the crypto store was reset): only the new device is signed;
* the server's keys differ from the file's (e.g. someone reset them): the file's keys are
  uploaded again, since the file is the bot's source of truth.

The module imports nothing else from the bot, so it can be tested on its own. It never logs the
password or the access token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import canonicaljson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bot.secret_box import read_sealed, write_sealed

log = logging.getLogger(__name__)

__all__ = [
    "CrossSigningError",
    "CrossSigningKeys",
    "ensure_cross_signing",
    "load_or_create_keys",
    "sign_json",
    "verify_signed_json",
]

KEY_FILE_VERSION = 1
_ROLES = ("master", "self_signing", "user_signing")

_QUERY_PATH = "/_matrix/client/v3/keys/query"
_SIGNING_UPLOAD_PATH = "/_matrix/client/v3/keys/device_signing/upload"
_SIGNATURES_UPLOAD_PATH = "/_matrix/client/v3/keys/signatures/upload"


SEALED_PURPOSE = "cross-signing"


class CrossSigningError(RuntimeError):
    """Cross-signing could not be set up. Messages never contain secrets."""


# --------------------------------------------------------------------------------------------
# Encoding and signing helpers (pure)
# --------------------------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix uses for keys and signatures."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """Decode standard base64 with or without padding (strictly: bad characters raise)."""
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, validate=True)


def _public_b64(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _b64encode(raw)


def _signing_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes a Matrix signature covers: canonical JSON without `signatures` and `unsigned`."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return canonicaljson.encode_canonical_json(stripped)


def _key_id(key_id_or_public: str) -> str:
    return key_id_or_public if ":" in key_id_or_public else f"ed25519:{key_id_or_public}"


def sign_json(obj: dict[str, Any], signer_user: str, private: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a copy of `obj` with an ed25519 signature by `private` added for `signer_user`.

    The key id is `ed25519:<unpadded base64 public key>`, as cross-signing keys use. Existing
    signatures are kept.
    """
    signed = copy.deepcopy(obj)
    signature = _b64encode(private.sign(_signing_bytes(obj)))
    public = _public_b64(private)
    signed.setdefault("signatures", {}).setdefault(signer_user, {})[f"ed25519:{public}"] = signature
    return signed


def verify_signed_json(obj: dict, signer_user: str, key_id: str, public_key_b64: str) -> bool:
    """True if `obj` carries a valid ed25519 signature by `signer_user` under `key_id`.

    `key_id` is the full key id (`ed25519:ABC...` or `ed25519:DEVICEID`); a bare value without an
    algorithm prefix is taken as `ed25519:<value>`. `public_key_b64` is the (unpadded) base64
    ed25519 public key that should have made the signature. Any malformed input gives False.
    """
    try:
        signature_b64 = obj["signatures"][signer_user][_key_id(key_id)]
        if not isinstance(signature_b64, str) or not isinstance(public_key_b64, str):
            return False
        public = Ed25519PublicKey.from_public_bytes(_b64decode(public_key_b64))
        public.verify(_b64decode(signature_b64), _signing_bytes(obj))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Key file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossSigningKeys:
    user_id: str
    master: Ed25519PrivateKey
    self_signing: Ed25519PrivateKey
    user_signing: Ed25519PrivateKey

    @classmethod
    def generate(cls, user_id: str) -> CrossSigningKeys:
        return cls(
            user_id=user_id,
            master=Ed25519PrivateKey.generate(),
            self_signing=Ed25519PrivateKey.generate(),
            user_signing=Ed25519PrivateKey.generate(),
        )

    def private(self, role: str) -> Ed25519PrivateKey:
        return {
            "master": self.master,
            "self_signing": self.self_signing,
            "user_signing": self.user_signing,
        }[role]

    def public(self, role: str) -> str:
        """Unpadded base64 public key for `role` (master, self_signing or user_signing)."""
        return _public_b64(self.private(role))

    def key_object(self, role: str) -> dict[str, Any]:
        """The CrossSigningKey object to publish for `role`, signed by the master key if needed."""
        public = self.public(role)
        obj: dict[str, Any] = {
            "user_id": self.user_id,
            "usage": [role],
            "keys": {f"ed25519:{public}": public},
        }
        if role != "master":
            obj = sign_json(obj, self.user_id, self.master)
        return obj

    def to_json(self) -> dict[str, Any]:
        seeds = {
            role: _b64encode(
                self.private(role).private_bytes_raw()  # 32-byte ed25519 seed
            )
            for role in _ROLES
        }
        return {"version": KEY_FILE_VERSION, "user_id": self.user_id, **seeds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CrossSigningKeys:
        if data.get("version") != KEY_FILE_VERSION:
            raise CrossSigningError(
                f"unsupported cross-signing key file version {data.get('version')!r}"
            )
        try:
            privates = {
                role: Ed25519PrivateKey.from_private_bytes(_b64decode(data[role]))
                for role in _ROLES
            }
            user_id = data["user_id"]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CrossSigningError("cross-signing key file is malformed") from exc
        if not isinstance(user_id, str):
            raise CrossSigningError("cross-signing key file is malformed")
        return cls(user_id=user_id, **privates)


def load_or_create_keys(key_path: Path, user_id: str, passphrase: str) -> tuple[CrossSigningKeys, bool]:
    """Load the bot's cross-signing keys from `key_path`, or generate and save new ones.

    The file is sealed with the store passphrase (bot.secret_box); a plaintext one from an older
    version is sealed on load. Returns the keys and whether they were just created. Keys saved for
    another user are refused; a wrong passphrase raises SecretBoxError.
    """
    key_path = Path(key_path)
    saved = read_sealed(key_path, passphrase, SEALED_PURPOSE)
    if saved is not None:
        try:
            data = json.loads(saved)
        except ValueError as exc:
            raise CrossSigningError(f"cannot read cross-signing key file {key_path}") from exc
        if not isinstance(data, dict):
            raise CrossSigningError("cross-signing key file is malformed")
        keys = CrossSigningKeys.from_json(data)
        if keys.user_id != user_id:
            raise CrossSigningError(
                f"cross-signing key file {key_path} belongs to {keys.user_id}, not {user_id}"
            )
        return keys, False
    keys = CrossSigningKeys.generate(user_id)
    write_sealed(key_path, json.dumps(keys.to_json()).encode("utf-8"), passphrase, SEALED_PURPOSE)
    log.info("generated new cross-signing keys in %s", key_path)
    return keys, True


# --------------------------------------------------------------------------------------------
# Talking to the homeserver
# --------------------------------------------------------------------------------------------


async def _request(client: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON to `path` with the client's access token; return (status, json)."""
    if not client.access_token or client.client_session is None:
        raise CrossSigningError("the client must be logged in before setting up cross-signing")
    headers = {
        "Authorization": f"Bearer {client.access_token}",
        "Content-Type": "application/json",
    }
    response = await client.send("POST", path, data=json.dumps(body), headers=headers)
    try:
        status = response.status
        try:
            payload = await response.json(content_type=None)
        except ValueError:
            payload = None
    finally:
        response.release()
    return status, payload if isinstance(payload, dict) else {}


def _describe(status: int, payload: dict[str, Any]) -> str:
    errcode = payload.get("errcode", "?")
    error = payload.get("error", "")
    return f"HTTP {status} {errcode} {error}".rstrip()


async def _query_own_keys(client: Any) -> dict[str, Any]:
    status, payload = await _request(client, _QUERY_PATH, {"device_keys": {client.user_id: []}})
    if status != 200:
        raise CrossSigningError(f"/keys/query failed: {_describe(status, payload)}")
    return payload


def _published_key(query: dict[str, Any], field: str, user_id: str) -> dict[str, Any] | None:
    obj = (query.get(field) or {}).get(user_id)
    return obj if isinstance(obj, dict) else None


def _single_public(key_obj: dict[str, Any] | None) -> str | None:
    """The public key of a published CrossSigningKey object (they carry exactly one)."""
    if not key_obj:
        return None
    keys = key_obj.get("keys") or {}
    if len(keys) != 1:
        return None
    (value,) = keys.values()
    return value if isinstance(value, str) else None


def _server_matches(query: dict[str, Any], keys: CrossSigningKeys) -> bool:
    user_id = keys.user_id
    fields = {
        "master": "master_keys",
        "self_signing": "self_signing_keys",
        "user_signing": "user_signing_keys",
    }
    return all(
        _single_public(_published_key(query, field, user_id)) == keys.public(role)
        for role, field in fields.items()
    )


def _password_flow_offered(payload: dict[str, Any]) -> bool:
    for flow in payload.get("flows") or []:
        stages = flow.get("stages") if isinstance(flow, dict) else None
        if stages == ["m.login.password"]:
            return True
    return False


async def _upload_signing_keys(client: Any, keys: CrossSigningKeys, password: str) -> None:
    body: dict[str, Any] = {role + "_key": keys.key_object(role) for role in _ROLES}
    status, payload = await _request(client, _SIGNING_UPLOAD_PATH, body)
    if status == 200:
        return  # servers may skip auth for a first upload (MSC3967)
    if status != 401 or "flows" not in payload:
        raise CrossSigningError(
            f"uploading cross-signing keys failed: {_describe(status, payload)}"
        )
    if not _password_flow_offered(payload):
        flows = [f.get("stages") for f in payload.get("flows", []) if isinstance(f, dict)]
        raise CrossSigningError(
            f"homeserver offers no password authentication for cross-signing upload (flows: {flows})"
        )
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
    }
    if payload.get("session"):
        auth["session"] = payload["session"]
    status, payload = await _request(client, _SIGNING_UPLOAD_PATH, {**body, "auth": auth})
    if status != 200:
        raise CrossSigningError(
            f"uploading cross-signing keys failed: {_describe(status, payload)}"
        )


def _own_device(query: dict[str, Any], user_id: str, device_id: str) -> dict[str, Any] | None:
    device = ((query.get("device_keys") or {}).get(user_id) or {}).get(device_id)
    return device if isinstance(device, dict) else None


def _check_device_is_ours(client: Any, device: dict[str, Any]) -> None:
    """Refuse to sign a device object that does not carry our own olm identity key."""
    key_id = f"ed25519:{client.device_id}"
    published = (device.get("keys") or {}).get(key_id)
    if device.get("user_id") != client.user_id or device.get("device_id") != client.device_id:
        raise CrossSigningError("homeserver returned device keys for another device")
    if not published or not verify_signed_json(device, client.user_id, key_id, published):
        raise CrossSigningError("published device keys are not self-signed by the device")
    olm = getattr(client, "olm", None)
    if olm is not None:
        ours = olm.account.identity_keys["ed25519"]
        if published != ours:
            raise CrossSigningError(
                "published device ed25519 key differs from the local olm account's"
            )


async def _sign_device(client: Any, keys: CrossSigningKeys, device: dict[str, Any]) -> None:
    signed = sign_json(device, keys.user_id, keys.self_signing)
    signed.pop("unsigned", None)
    body = {keys.user_id: {client.device_id: signed}}
    status, payload = await _request(client, _SIGNATURES_UPLOAD_PATH, body)
    if status != 200:
        raise CrossSigningError(f"uploading device signature failed: {_describe(status, payload)}")
    failures = payload.get("failures") or {}
    if failures:
        raise CrossSigningError(f"homeserver rejected device signature: {failures}")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


async def ensure_cross_signing(client: Any, password: str, key_path: Path, passphrase: str) -> None:
    """Make sure the bot's account has cross-signing keys and its current device is signed.

    `client` is a logged-in `nio.AsyncClient` with encryption enabled (its olm account is used to
    check the device key being signed). `password` is used only for the user-interactive auth of
    the key upload, and only when the keys must be (re)uploaded. `key_path` holds the private
    seeds, sealed with `passphrase` (the store passphrase). Idempotent: calling it again when everything is in place only queries the server.
    Raises CrossSigningError when the homeserver refuses something.
    """
    user_id = client.user_id
    device_id = client.device_id
    if not user_id or not device_id:
        raise CrossSigningError("the client must be logged in before setting up cross-signing")

    keys, _created = await asyncio.to_thread(load_or_create_keys, Path(key_path), user_id,
                                             passphrase)
    query = await _query_own_keys(client)

    if not _server_matches(query, keys):
        if _published_key(query, "master_keys", user_id) is not None:
            log.warning(
                "homeserver publishes different cross-signing keys for %s; uploading ours", user_id
            )
        await _upload_signing_keys(client, keys, password)
        query = await _query_own_keys(client)
        if not _server_matches(query, keys):
            raise CrossSigningError("homeserver does not publish the uploaded cross-signing keys")
        log.info("published cross-signing keys for %s (master %s)", user_id, keys.public("master"))

    device = _own_device(query, user_id, device_id)
    if device is None and getattr(client, "olm", None) is not None and client.should_upload_keys:
        await client.keys_upload()
        query = await _query_own_keys(client)
        device = _own_device(query, user_id, device_id)
    if device is None:
        raise CrossSigningError(
            f"device {device_id} has no published device keys; upload them before cross-signing"
        )
    _check_device_is_ours(client, device)

    ssk_public = keys.public("self_signing")
    if verify_signed_json(device, user_id, f"ed25519:{ssk_public}", ssk_public):
        log.debug("device %s is already cross-signed", device_id)
        return
    await _sign_device(client, keys, device)
    log.info("cross-signed device %s of %s", device_id, user_id)
