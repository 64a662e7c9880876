"""`mutual-aid-bot demo`: a local Synapse, the bot, and alice and bob in an encrypted "Demo pod".

Everything lives under one folder (default `.demo/`); running again reuses it. Synapse listens on
127.0.0.1 only. Stops on Ctrl-C or SIGTERM, taking Synapse down cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from pathlib import Path

from nio import AsyncClient, JoinError, LoginResponse, RoomCreateError, RoomPreset

from bot.config import load_config
from bot.devserver import Synapse, synapse_python, write_bot_config
from bot.logs import SecretFilter
from bot.storage import create_private_file

log = logging.getLogger(__name__)

def _local_timezone() -> str:
    zone = os.environ.get("TZ", "")
    if "/" in zone:
        return zone
    try:
        return "/".join(Path("/etc/localtime").resolve().parts[-2:]) or "UTC"
    except OSError:
        return "UTC"


async def _login(synapse: Synapse, user_id: str, password: str) -> AsyncClient:
    client = AsyncClient(synapse.base_url, user_id)
    response = await client.login(password, device_name="demo setup")
    if not isinstance(response, LoginResponse):
        await client.close()
        raise RuntimeError(f"demo: {user_id} could not log in: {response}")
    return client


async def _create_pod(synapse: Synapse, alice: dict, bob: dict, bot_user_id: str) -> str:
    """alice creates the encrypted room and invites bob and the bot; bob joins."""
    alice_client = await _login(synapse, alice["user_id"], alice["password"])
    bob_client = await _login(synapse, bob["user_id"], bob["password"])
    try:
        response = await alice_client.room_create(
            name="Demo pod", topic="Try !help", preset=RoomPreset.private_chat,
            invite=[bob["user_id"], bot_user_id],
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        )
        if isinstance(response, RoomCreateError):
            raise RuntimeError(f"demo: creating the room failed: {response}")
        joined = await bob_client.join(response.room_id)
        if isinstance(joined, JoinError):
            raise RuntimeError(f"demo: bob could not join: {joined}")
        return response.room_id
    finally:
        # The setup devices are not needed again; logging out keeps member device lists short.
        for client in (alice_client, bob_client):
            await client.logout()
            await client.close()


async def prepare(directory: Path) -> tuple[Synapse, Path, dict]:
    """Start Synapse and make sure the accounts, room and bot config exist. Idempotent."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    synapse = Synapse(directory / "synapse", synapse_python())
    await synapse.start()
    credentials_path = directory / "credentials.json"
    credentials = json.loads(credentials_path.read_text()) if credentials_path.exists() else {}
    bot_dir = directory / "bot"
    bot_dir.mkdir(exist_ok=True, mode=0o700)
    if not credentials:
        bot_user_id, bot_password = await synapse.register("mutualaid")
        users = []
        for name in ("alice", "bob"):
            user_id, password = await synapse.register(name, secrets.token_urlsafe(12))
            users.append({"user_id": user_id, "password": password})
        write_bot_config(bot_dir, synapse.base_url, synapse.server_name, bot_user_id,
                         bot_password, timezone=_local_timezone())
        room_id = await _create_pod(synapse, users[0], users[1], bot_user_id)
        credentials = {"homeserver": synapse.base_url, "bot_user_id": bot_user_id,
                       "room_id": room_id, "users": users}
        create_private_file(credentials_path)
        credentials_path.write_text(json.dumps(credentials, indent=2) + "\n")
    return synapse, bot_dir / "config.toml", credentials


def _instructions(credentials: dict, directory: Path) -> str:
    people = "\n".join(f"    {u['user_id']}" for u in credentials["users"])
    return f"""
==========================================================================
 mutual-aid-bot demo is running.
 Homeserver: {credentials['homeserver']}   (127.0.0.1 only)
 Log in from Element (desktop) or any Matrix client with "custom homeserver"
 set to the address above, as:
{people}
 (their passwords are in {directory / 'credentials.json'}, mode 0600:
 never printed, so they stay out of terminal logs)
 Open the encrypted room "Demo pod" and type !help, !need groceries,
 !offer food, !needs, !claim 1 ...
 Stop with Ctrl-C.
==========================================================================
"""


async def _demo(directory: Path, secret_filter: SecretFilter | None) -> int:
    from bot.runtime import serve_networks

    synapse, config_path, credentials = await prepare(directory)
    try:
        config = load_config(config_path)
        print(_instructions(credentials, directory), flush=True)
        return await serve_networks(config, secret_filter)
    finally:
        await synapse.stop()
        print("demo stopped; run it again to pick up where you left off.", flush=True)


def run_demo(directory: Path, secret_filter: SecretFilter | None = None) -> int:
    try:
        return asyncio.run(_demo(directory.resolve(), secret_filter))
    except KeyboardInterrupt:
        return 0
