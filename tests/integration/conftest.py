"""End-to-end fixtures: one real Synapse per test session, and people to talk to it.

Both homeservers federate on 127.0.0.1 (`Synapse(..., federation=True)`, named
`localhost:<port>`): `synapse` is the one every test uses and the bot lives on; `second_synapse`
is started only for the tests that ask for it, once per session, and is running again at the start
of each such test even if an earlier one stopped it (`await second_synapse.stop()` / `.start()`
simulate a homeserver that goes down and comes back, keeping its work dir, keys and users).

The Synapse interpreter comes from `MAB_SYNAPSE_PYTHON` or `<repo>/.venv-synapse` (`make
synapse`); without either, these tests are skipped with a message saying so. Set
`MAB_REQUIRE_SYNAPSE=1` (as CI should) to turn that skip into an error.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bot.devserver import Synapse, synapse_python

from .botproc import BotProcess
from .people import Person

PersonFactory = Callable[..., Awaitable[Person]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.integration)


def synapse_python_or_skip() -> str:
    try:
        return synapse_python()
    except FileNotFoundError as exc:
        if os.environ.get("MAB_REQUIRE_SYNAPSE") or os.environ.get("MAB_SYNAPSE_PYTHON"):
            raise
        pytest.skip(str(exc))


async def _started_synapse(tmp_path_factory: pytest.TempPathFactory, name: str) -> Synapse:
    server = Synapse(tmp_path_factory.mktemp(name), synapse_python_or_skip(), federation=True)
    started = time.monotonic()
    await server.start()
    print(f"\nSynapse {server.server_name} ready at {server.base_url} "
          f"in {time.monotonic() - started:.1f}s")
    return server


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def synapse(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Synapse]:
    server = await _started_synapse(tmp_path_factory, "synapse")
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _second_synapse_for_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Synapse]:
    server = await _started_synapse(tmp_path_factory, "synapse2")
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def second_synapse(_second_synapse_for_session: Synapse) -> Synapse:
    """A second homeserver federating with `synapse`; running when the test starts."""
    server = _second_synapse_for_session
    if not server.is_running():
        await server.start()
    return server


_serial = itertools.count(1)


@pytest_asyncio.fixture(loop_scope="session")
async def person_factory(synapse: Synapse) -> AsyncIterator[PersonFactory]:
    """`await person_factory("alice")` -> a logged-in Person with a unique localpart
    (`alice-<n>-<random>`; `person.name` is the unique localpart) on `synapse`, or on
    `server=second_synapse`. All are closed at teardown."""
    people: list[Person] = []
    run = uuid.uuid4().hex[:6]

    async def make(name: str = "person", *, server: Synapse | None = None,
                   **kwargs: object) -> Person:
        person = await Person.create(server or synapse, f"{name}-{next(_serial)}-{run}",
                                     **kwargs)
        people.append(person)
        return person

    try:
        yield make
    finally:
        for person in people:
            await person.close()


@pytest_asyncio.fixture(loop_scope="session")
async def bot(synapse: Synapse, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot as a real process with its own account, started (first sync done) and stopped."""
    proc = await BotProcess.create(synapse, tmp_path / "bot", f"bot-{uuid.uuid4().hex[:8]}")
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()
