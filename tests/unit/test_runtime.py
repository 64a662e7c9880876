"""The composition root: transports attached by network, ready when all have caught up, secrets
into the log filter, and a transport that cannot go on stops the bot with exit code 3."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import BotConfig
from bot.logs import SecretFilter
from bot.messages import FatalTransportError
from bot.runtime import Runtime
from bot.storage import StorageUsageError

from .conftest import FakeTransport


class Network(FakeTransport):
    def __init__(self, network: str, *, fails: bool = False) -> None:
        super().__init__()
        self.network = network
        self.app = None
        self.caught_up = asyncio.Event()
        self.secrets = {f"{network}-token"}
        self.fails = fails
        self.closed = False

    async def connect(self) -> None:
        pass

    async def run(self) -> None:
        if self.fails:
            raise FatalTransportError(f"{self.network}: the daemon does not serve the account")
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


def config_in(tmp_path) -> BotConfig:
    config = BotConfig()
    config.storage.database = tmp_path / "bot.db"
    return config


async def test_ready_once_every_network_caught_up_and_secrets_are_filtered(tmp_path):
    secret_filter = SecretFilter()
    runtime = await Runtime.open(config_in(tmp_path), secret_filter=secret_filter)
    matrix, signal = runtime.attach(Network("matrix")), runtime.attach(Network("signal"))
    assert matrix.app is runtime.app and signal.app is runtime.app
    await runtime.start()
    try:
        assert secret_filter.secrets == {"matrix-token", "signal-token"}
        matrix.caught_up.set()
        await asyncio.sleep(0.05)
        assert not runtime.app.ready.is_set()  # Signal has not caught up: no scheduled sends yet
        signal.caught_up.set()
        await asyncio.wait_for(runtime.app.ready.wait(), 5)
    finally:
        await runtime.close()
    assert matrix.closed and signal.closed


async def test_a_transport_that_cannot_go_on_stops_the_bot_with_exit_code_3(tmp_path, caplog):
    runtime = await Runtime.open(config_in(tmp_path))
    healthy = runtime.attach(Network("matrix"))
    runtime.attach(Network("signal", fails=True))
    # Bounded, not timed: closing waits for the report drawer's process, slow to start on a
    # loaded machine.
    assert await asyncio.wait_for(runtime.serve(), 120) == 3
    assert "does not serve the account" in caplog.text
    assert healthy.closed


async def test_a_failing_step_while_stopping_still_closes_the_rest(tmp_path, caplog):
    """A close that stopped at its first failure left the database's thread running, and the
    process never exited."""
    runtime = await Runtime.open(config_in(tmp_path))
    matrix = runtime.attach(Network("matrix"))
    signal = runtime.attach(Network("signal", fails=True))

    async def broken_stop(timeout: float = 20.0) -> None:
        raise RuntimeError("the outbox could not be flushed")

    runtime.app.stop = broken_stop
    assert await asyncio.wait_for(runtime.serve(), 120) == 3
    assert "stopping the app failed: the outbox could not be flushed" in caplog.text
    assert matrix.closed and signal.closed
    with pytest.raises(StorageUsageError, match="closed"):
        async with runtime.storage.transaction():
            pass
