"""A pod set up by release 0.1.0 carries on after an upgrade to this release.

tests/fixtures/matrix-0.1.0.tar.gz is what 0.1.0's own `demo` left behind after alice asked for
soup (see make_release_matrix.py next to it): the homeserver's work dir, the bot's config, database,
crypto store, session and cross-signing keys, and alice's credentials. Here the same homeserver is
started from a copy, the operator upgrades as the README says (`migrate --dry-run`, `migrate`),
and the current bot starts on the old data: it must be the same device with the same cross-signing
identity, and answer alice in the old encrypted room, carrying on the old records.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

from bot.devserver import Synapse
from bot.storage import MIGRATIONS

from .botproc import BotProcess
from .conftest import synapse_python_or_skip
from .people import Person

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent.parent / "fixtures" / "matrix-0.1.0.tar.gz"
RELEASE_SCHEMA_VERSION = 4  # what 0.1.0 left its database at


def schema_version(path: Path) -> int:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]


async def mutual_aid_bot(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    return output.decode()


async def bot_identity_seen_by(person: Person, bot_user_id: str) -> tuple[list[str], str]:
    """The bot's devices and cross-signing master key, as /keys/query shows them to others."""
    response = await person.client.send(
        "POST", "/_matrix/client/v3/keys/query",
        data=json.dumps({"device_keys": {bot_user_id: []}}),
        headers={"Authorization": f"Bearer {person.client.access_token}",
                 "Content-Type": "application/json"})
    assert response.status == 200
    body = await response.json()
    [master_key] = body["master_keys"][bot_user_id]["keys"].values()
    return sorted(body["device_keys"][bot_user_id]), master_key


def occupy(port: int) -> socket.socket | None:
    """Hold the port the fixture recorded, as another program might at test time; None when
    something already does."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", port))
    except OSError:
        holder.close()
        return None
    holder.listen()
    return holder


async def test_a_pod_set_up_by_release_0_1_0_carries_on_after_the_upgrade(tmp_path):
    python = synapse_python_or_skip()
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    expected = json.loads((tmp_path / "expected.json").read_text())
    credentials = json.loads((tmp_path / "credentials.json").read_text())
    room, bot_user_id = credentials["room_id"], credentials["bot_user_id"]
    bot_dir = tmp_path / "bot"
    config = bot_dir / "config.toml"

    # The recorded port is taken (held here, so the move is exercised on every run): the server,
    # named "localhost" without a port, moves; the operator points the config at its new address.
    recorded_port = json.loads((tmp_path / "synapse" / "devserver.json").read_text())["port"]
    holder = occupy(recorded_port)
    synapse = Synapse(tmp_path / "synapse", python, move_if_busy=True)
    try:
        await synapse.start()
    finally:
        if holder is not None:
            holder.close()
    bot = alice = None
    try:
        assert synapse.server_name == "localhost" and synapse.port != recorded_port
        config.write_text(config.read_text().replace(credentials["homeserver"], synapse.base_url))

        preview = await mutual_aid_bot("migrate", "--config", str(config), "--dry-run")
        assert f"Schema version: {RELEASE_SCHEMA_VERSION}" in preview
        assert f"reached version {len(MIGRATIONS)}" in preview
        assert schema_version(bot_dir / "mutual-aid-bot.db") == RELEASE_SCHEMA_VERSION
        await mutual_aid_bot("migrate", "--config", str(config))
        assert schema_version(bot_dir / "mutual-aid-bot.db") == len(MIGRATIONS)
        [backup] = bot_dir.glob("mutual-aid-bot.db.v*.bak")
        assert schema_version(backup) == RELEASE_SCHEMA_VERSION

        # 0.1.0 kept the access token in plaintext (session.json); this release seals it on start.
        old_token = json.loads((bot_dir / "store" / "session.json").read_text())["access_token"]
        bot = BotProcess(synapse, bot_dir, bot_user_id, (bot_dir / "password.txt").read_text().strip(),
                         config_path=config)
        await bot.start()
        alice_login = next(u for u in credentials["users"] if u["user_id"] == expected["alice"])
        alice = await Person.create(synapse, "alice", password=alice_login["password"])

        devices, master_key = await bot_identity_seen_by(alice, bot_user_id)
        assert devices == [expected["bot_device_id"]], "the bot logged in as a new device"
        assert master_key == expected["bot_master_key"], "the bot's cross-signing identity changed"
        readable = [p.name for p in (bot_dir / "store").iterdir() if old_token.encode() in p.read_bytes()]
        assert not readable, f"the access token is still readable in {readable}"

        asked = await alice.send(room, "!need groceries")
        reply = await alice.wait_for(room, sender=bot_user_id, after=asked, timeout=30)
        # Decrypted, and numbered after the soup alice asked 0.1.0 for: the old records carried on.
        assert reply.body.startswith("Noted need **#2**") and "groceries" in reply.body
    finally:
        if alice is not None:
            await alice.close()
        if bot is not None:
            await bot.stop()
        await synapse.stop()
