"""Secrets at rest: the access token and the cross-signing keys are sealed with the passphrase."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from bot.secret_box import SecretBoxError, read_sealed, seal, unseal, write_sealed
from bot.transport.cross_signing import CrossSigningKeys, load_or_create_keys
from bot.transport.matrix import SavedSession, _load_session, _save_session

PASSPHRASE = "correct horse battery staple"
TOKEN = "syt_bWFi_secretaccesstoken_0123456789"
SESSION = {"user_id": "@bot:test", "device_id": "DEVICE", "access_token": TOKEN}


def test_round_trip_and_the_file_never_shows_the_secret(tmp_path):
    path = tmp_path / "store" / "session.json"
    write_sealed(path, json.dumps(SESSION).encode(), PASSPHRASE, "session")
    assert TOKEN.encode() not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(read_sealed(path, PASSPHRASE, "session")) == SESSION
    assert [p.name for p in path.parent.iterdir()] == ["session.json"]  # no temporary left


def test_every_seal_uses_a_fresh_salt_and_nonce():
    first, second = seal(b"x", PASSPHRASE, "session"), seal(b"x", PASSPHRASE, "session")
    assert first != second
    assert json.loads(first)["salt"] != json.loads(second)["salt"]


def test_a_wrong_passphrase_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "session.json"
    write_sealed(path, json.dumps(SESSION).encode(), PASSPHRASE, "session")
    with pytest.raises(SecretBoxError, match="store passphrase") as info:
        read_sealed(path, "not the passphrase", "session")
    assert "not the passphrase" not in str(info.value)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt"])
def test_an_altered_file_is_refused(tmp_path, field):
    box = json.loads(seal(TOKEN.encode(), PASSPHRASE, "session"))
    raw = bytearray(base64.b64decode(box[field]))
    raw[0] ^= 1
    box[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SecretBoxError):
        unseal(json.dumps(box).encode(), PASSPHRASE, "session", "the file")


def test_a_sealed_file_cannot_stand_in_for_another_purpose():
    sealed = seal(TOKEN.encode(), PASSPHRASE, "session")
    with pytest.raises(SecretBoxError):
        unseal(sealed, PASSPHRASE, "cross-signing", "the file")


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'{"sealed": "other-format-9"}'])
def test_a_file_that_is_neither_sealed_nor_our_plaintext_is_refused(tmp_path, content):
    path = tmp_path / "session.json"
    path.write_bytes(content)
    with pytest.raises(SecretBoxError, match="not a sealed secret file"):
        read_sealed(path, PASSPHRASE, "session")
    assert path.read_bytes() == content  # left alone for the operator to look at


def test_a_plaintext_session_from_an_older_version_is_sealed_on_load(tmp_path):
    path = tmp_path / "session.json"
    path.write_text(json.dumps(SESSION))
    path.chmod(0o644)
    session = _load_session(path, PASSPHRASE)
    assert session == SavedSession("@bot:test", "DEVICE", TOKEN)
    assert TOKEN.encode() not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _load_session(path, PASSPHRASE) == session  # and it reads back sealed
    assert [p.name for p in tmp_path.iterdir()] == ["session.json"]


def test_the_session_is_saved_sealed(tmp_path):
    path = tmp_path / "session.json"
    _save_session(path, SavedSession("@bot:test", "DEVICE", TOKEN), PASSPHRASE)
    assert TOKEN.encode() not in path.read_bytes()
    with pytest.raises(SecretBoxError):
        _load_session(path, "another passphrase")


def test_plaintext_cross_signing_keys_are_sealed_on_load(tmp_path):
    path = tmp_path / "cross_signing.json"
    keys = CrossSigningKeys.generate("@bot:test")
    path.write_text(json.dumps(keys.to_json()))
    loaded, created = load_or_create_keys(path, "@bot:test", PASSPHRASE)
    assert not created and loaded.to_json() == keys.to_json()
    stored = path.read_bytes()
    for role in ("master", "self_signing", "user_signing"):
        assert keys.to_json()[role].encode() not in stored
    assert b"@bot:test" not in stored
    assert load_or_create_keys(path, "@bot:test", PASSPHRASE)[0].to_json() == keys.to_json()


def test_new_cross_signing_keys_are_written_sealed(tmp_path):
    path = tmp_path / "cross_signing.json"
    keys, created = load_or_create_keys(path, "@bot:test", PASSPHRASE)
    assert created and b"@bot:test" not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(SecretBoxError):
        load_or_create_keys(path, "@bot:test", "another passphrase")
