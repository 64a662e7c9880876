"""README command 1: `mutual-aid-bot demo` brings up Synapse, the bot and the Demo pod, and stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from bot.devserver import Synapse, synapse_python

from .people import Person


async def _wait_for(predicate, what, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.returncode is not None:
            raise AssertionError(f"demo exited early ({process.returncode}) waiting for {what}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"demo: no {what} after {timeout}s")


async def _start_demo(directory, log_path):
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: ASYNC230, SIM115 - handed to the child
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "demo", "--dir", str(directory),
        stdout=log, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "MAB_SYNAPSE_PYTHON": synapse_python()},
    )
    log.close()
    await _wait_for(lambda: "first sync complete" in log_path.read_text()[offset:], "first sync", process)
    return process


async def test_demo_runs_a_working_encrypted_pod_and_restarts_from_its_folder(tmp_path):
    directory = tmp_path / "demo"
    log_path = tmp_path / "demo.log"
    process = await _start_demo(directory, log_path)
    try:
        credentials = json.loads((directory / "credentials.json").read_text())
        assert credentials["homeserver"].startswith("http://127.0.0.1:")
        assert [u["user_id"].split(":")[0] for u in credentials["users"]] == ["@alice", "@bob"]
        server = Synapse(directory / "synapse", synapse_python())  # the demo's, not started here
        alice_user = credentials["users"][0]
        alice = await Person.create(server, "alice", password=alice_user["password"])
        try:
            room = credentials["room_id"]
            await alice._sync_until(lambda: room in alice.client.rooms, 30, "demo room")
            assert alice.client.rooms[room].encrypted
            assert alice.client.rooms[room].display_name == "Demo pod"
            await alice.send(room, "!need groceries")
            reply = await alice.wait_for_text(room, "Noted need", sender=credentials["bot_user_id"])
            assert reply.source["content"]["msgtype"] == "m.notice"
        finally:
            await alice.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    assert "demo stopped" in log_path.read_text()
    assert alice_user["password"] not in log_path.read_text()

    process = await _start_demo(directory, log_path)
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    again = json.loads((directory / "credentials.json").read_text())
    assert again["room_id"] == credentials["room_id"]
