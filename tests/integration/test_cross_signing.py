"""Cross-signing bootstrap against a real Synapse (the session fixture `synapse`).

What another user's client sees is what matters: Element and friends only share room keys with
the bot's device if /keys/query shows a master key, a self-signing key signed by it, and the
device signed by the self-signing key.
"""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import nio
import pytest

from bot.secret_box import read_sealed
from bot.transport.cross_signing import (
    CrossSigningError,
    ensure_cross_signing,
    verify_signed_json,
)

pytestmark = pytest.mark.integration

UPLOAD_PATHS = ("/keys/device_signing/upload", "/keys/signatures/upload")

PASSPHRASE = "test store passphrase"  # seals the key file, as matrix.store_passphrase does


async def _login(base_url: str, user_id: str, password: str, store: Path) -> nio.AsyncClient:
    """A logged-in E2EE client whose device keys are published."""
    await asyncio.to_thread(store.mkdir, parents=True, exist_ok=True)
    config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = nio.AsyncClient(base_url, user_id, store_path=str(store), config=config)
    response = await client.login(password, device_name="xs-test")
    assert isinstance(response, nio.LoginResponse), response
    if client.should_upload_keys:
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, nio.KeysUploadResponse), uploaded
    return client


async def _query(client: nio.AsyncClient, user_id: str) -> dict[str, Any]:
    """POST /keys/query for `user_id` as `client` (raw JSON, as other clients see it)."""
    response = await client.send(
        "POST",
        "/_matrix/client/v3/keys/query",
        data=json.dumps({"device_keys": {user_id: []}}),
        headers={
            "Authorization": f"Bearer {client.access_token}",
            "Content-Type": "application/json",
        },
    )
    assert response.status == 200
    return await response.json()


def _only_key(key_obj: dict[str, Any]) -> tuple[str, str]:
    (item,) = key_obj["keys"].items()
    return item


def _record_uploads(client: nio.AsyncClient) -> list[str]:
    """Record the paths of signing uploads the client makes from now on."""
    seen: list[str] = []
    original = client.send

    async def send(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith(UPLOAD_PATHS):
            seen.append(path)
        return await original(method, path, *args, **kwargs)

    client.send = send  # type: ignore[method-assign]
    return seen


def _assert_cross_signed(query: dict[str, Any], user_id: str, device_ids: list[str]) -> str:
    """Check what another user sees; return the master public key."""
    master = query["master_keys"][user_id]
    assert master["usage"] == ["master"]
    assert master["user_id"] == user_id
    master_key_id, master_public = _only_key(master)

    ssk = query["self_signing_keys"][user_id]
    assert ssk["usage"] == ["self_signing"]
    assert ssk["user_id"] == user_id
    ssk_key_id, ssk_public = _only_key(ssk)
    assert master_key_id in ssk["signatures"][user_id]
    assert verify_signed_json(ssk, user_id, master_key_id, master_public)

    for device_id in device_ids:
        device = query["device_keys"][user_id][device_id]
        assert ssk_key_id in device["signatures"][user_id], device_id
        assert verify_signed_json(device, user_id, ssk_key_id, ssk_public), device_id
        # the device's own signature survives alongside the cross-signature
        own_id = f"ed25519:{device_id}"
        assert verify_signed_json(device, user_id, own_id, device["keys"][own_id])
    return master_public


@pytest.fixture
async def accounts(synapse, tmp_path):
    """(bot user, bot password, observer client); closes what it opened."""
    bot_user, bot_password = await synapse.register(f"xsbot{uuid.uuid4().hex[:8]}", "bot-secret-pw")
    other_user, other_password = await synapse.register(f"xsalice{uuid.uuid4().hex[:8]}")
    observer = await _login(synapse.base_url, other_user, other_password, tmp_path / "observer")
    clients: list[nio.AsyncClient] = [observer]

    async def login_bot(store_name: str) -> nio.AsyncClient:
        client = await _login(synapse.base_url, bot_user, bot_password, tmp_path / store_name)
        clients.append(client)
        return client

    yield bot_user, bot_password, observer, login_bot
    for client in clients:
        await client.close()


async def test_bootstrap_then_idempotent(accounts, tmp_path):
    bot_user, bot_password, observer, login_bot = accounts
    bot = await login_bot("bot-store")
    key_path = tmp_path / "secrets" / "cross_signing.json"

    await ensure_cross_signing(bot, bot_password, key_path, PASSPHRASE)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    saved = key_path.read_bytes()
    assert bot_password.encode() not in saved

    query = await _query(observer, bot_user)
    assert bot_user not in query.get("user_signing_keys", {})  # private to the owner
    master = _assert_cross_signed(query, bot_user, [bot.device_id])

    # second call: same keys, nothing uploaded, no error
    uploads = _record_uploads(bot)
    await ensure_cross_signing(bot, bot_password, key_path, PASSPHRASE)
    assert uploads == []
    assert key_path.read_bytes() == saved
    again = await _query(observer, bot_user)
    assert _assert_cross_signed(again, bot_user, [bot.device_id]) == master
    assert again["self_signing_keys"] == query["self_signing_keys"]


async def test_new_device_is_signed_with_existing_keys(accounts, tmp_path):
    bot_user, bot_password, observer, login_bot = accounts
    key_path = tmp_path / "cross_signing.json"
    first = await login_bot("store-1")
    await ensure_cross_signing(first, bot_password, key_path, PASSPHRASE)
    master = _assert_cross_signed(await _query(observer, bot_user), bot_user, [first.device_id])

    # crypto store lost: a fresh device, same key file
    second = await login_bot("store-2")
    assert second.device_id != first.device_id
    uploads = _record_uploads(second)
    await ensure_cross_signing(second, bot_password, key_path, PASSPHRASE)
    assert uploads == ["/_matrix/client/v3/keys/signatures/upload"]  # no key re-upload

    query = await _query(observer, bot_user)
    assert _assert_cross_signed(query, bot_user, [first.device_id, second.device_id]) == master


async def test_lost_key_file_replaces_keys_with_password_auth(accounts, tmp_path):
    bot_user, bot_password, observer, login_bot = accounts
    bot = await login_bot("store")
    key_path = tmp_path / "cross_signing.json"
    await ensure_cross_signing(bot, bot_password, key_path, PASSPHRASE)
    old_master = _assert_cross_signed(await _query(observer, bot_user), bot_user, [bot.device_id])

    # Replacing published keys needs user-interactive auth: a wrong password is refused,
    # and the error does not echo it.
    key_path.unlink()
    with pytest.raises(CrossSigningError) as info:
        await ensure_cross_signing(bot, "not-the-password", key_path, PASSPHRASE)
    assert "not-the-password" not in str(info.value)
    assert _assert_cross_signed(await _query(observer, bot_user), bot_user, []) == old_master

    # with the right password, the new keys (already saved in the file) replace the old ones
    await ensure_cross_signing(bot, bot_password, key_path, PASSPHRASE)
    query = await _query(observer, bot_user)
    new_master = _assert_cross_signed(query, bot_user, [bot.device_id])
    assert new_master != old_master
    assert json.loads(read_sealed(key_path, PASSPHRASE, "cross-signing"))["user_id"] == bot_user


def test_verify_signed_json_rejects_tampering():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bot.transport.cross_signing import _public_b64, sign_json

    key = Ed25519PrivateKey.generate()
    public = _public_b64(key)
    key_id = f"ed25519:{public}"
    obj = {"user_id": "@a:x", "usage": ["master"], "keys": {key_id: public}, "unsigned": {"n": 1}}
    signed = sign_json(obj, "@a:x", key)

    assert verify_signed_json(signed, "@a:x", key_id, public)
    assert verify_signed_json({**signed, "unsigned": {"other": True}}, "@a:x", key_id, public)
    assert not verify_signed_json({**signed, "usage": ["self_signing"]}, "@a:x", key_id, public)
    assert not verify_signed_json(signed, "@b:x", key_id, public)
    other = _public_b64(Ed25519PrivateKey.generate())
    assert not verify_signed_json(signed, "@a:x", key_id, other)
    assert not verify_signed_json(signed, "@a:x", key_id, "not base64!")
    assert not verify_signed_json({"keys": {}}, "@a:x", key_id, public)
