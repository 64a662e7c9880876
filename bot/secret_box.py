"""Small secret files at rest, sealed with a key derived from the store passphrase.

The saved access token and the cross-signing private keys are each kept in one file:

    {"sealed": "mab-secret-box-1", "kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
     "salt": <base64, 16 random bytes>, "nonce": <base64, 12 random bytes>,
     "ciphertext": <base64, AES-256-GCM of the secret, tag included>}

A fresh salt and nonce are drawn for every write, so one key never seals two files. The associated
data names the file's purpose ("session", "cross-signing"), so one sealed file cannot stand in for
another. A wrong passphrase and a file that was altered look the same to AES-GCM; both are refused
with a message that says so.

Both secrets are JSON objects. A file found in plaintext (written by an older version) is read, sealed, and the plaintext is
overwritten in place before the sealed copy replaces it. On a journaling or copy-on-write
filesystem, or an SSD, an old block may survive that overwrite: the README says so.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

log = logging.getLogger(__name__)

FORMAT = "mab-secret-box-1"
# scrypt at 2**15 x 8: 32 MiB and roughly 0.1 s per derivation, done once per file per start.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SALT_BYTES, _NONCE_BYTES = 16, 12
_MAX_SCRYPT_N = 2**20  # a file asking for more would make every start slow: refuse it


class SecretBoxError(RuntimeError):
    """A sealed file that cannot be opened: wrong passphrase, altered, or not ours."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _associated(purpose: str) -> bytes:
    return f"{FORMAT}:{purpose}".encode()


def seal(secret: bytes, passphrase: str, purpose: str) -> bytes:
    """The sealed file's bytes for `secret`."""
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    key = _key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, secret, _associated(purpose))
    return (json.dumps({"sealed": FORMAT, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R,
                        "p": SCRYPT_P, "salt": _b64(salt), "nonce": _b64(nonce),
                        "ciphertext": _b64(ciphertext)}) + "\n").encode("ascii")


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def unseal(data: bytes, passphrase: str, purpose: str, where: str) -> bytes:
    """The secret in a sealed file's bytes; SecretBoxError if it cannot be opened."""
    try:
        box = json.loads(data)
        n, r, p = int(box["n"]), int(box["r"]), int(box["p"])
        salt, nonce = _unb64(box["salt"]), _unb64(box["nonce"])
        ciphertext = _unb64(box["ciphertext"])
        if box["sealed"] != FORMAT or box["kdf"] != "scrypt" or not 2 <= n <= _MAX_SCRYPT_N or not 0 < r * p <= 64:
            raise ValueError("unsupported key derivation")
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretBoxError(f"{where} is not a sealed secret file this version can read") from exc
    try:
        return AESGCM(_key(passphrase, salt, n, r, p)).decrypt(nonce, ciphertext,
                                                               _associated(purpose))
    except InvalidTag:
        raise SecretBoxError(
            f"cannot open {where}: the store passphrase (matrix.store_passphrase) is not the one "
            "it was sealed with, or the file was altered") from None


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0600 from the start, in a directory of mode 0700."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dir_fd = os.open(parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_sealed(path: Path, secret: bytes, passphrase: str, purpose: str) -> None:
    write_private(path, seal(secret, passphrase, purpose))


def _overwrite(path: Path) -> None:
    """Overwrite a plaintext file's bytes in place before it is replaced (best effort)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())


def read_sealed(path: Path, passphrase: str, purpose: str) -> bytes | None:
    """The secret in `path` (a JSON object's bytes), or None if there is no such file.

    A plaintext JSON object from an older version is sealed on the spot and its plaintext
    overwritten; anything else that is not a sealed file is refused.
    """
    if not path.exists():
        return None
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    data = path.read_bytes()
    found = _json_object(data)
    if found is None or "sealed" in found:
        return unseal(data, passphrase, purpose, str(path))
    _overwrite(path)
    write_sealed(path, data, passphrase, purpose)
    log.info("sealed %s, which was stored in plaintext by an older version", path)
    return data
