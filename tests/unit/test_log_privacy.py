"""What people typed never reaches the log: not through a failing handler, not through matrix-nio."""

from __future__ import annotations

import io
import logging

import pytest

from bot.app import SORRY
from bot.commands import Command
from bot.logs import configure_logging

from .conftest import ALICE, SECRET


@pytest.fixture
def bot_logging():
    """The bot's own logging set-up (as `run` configures it), its output read back as text."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.raiseExceptions)
    configure_logging("DEBUG")
    output = io.StringIO()
    (handler,) = root.handlers
    handler.setStream(output)  # the handler `run` writes to stderr with, filters and all
    yield output.getvalue
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.raiseExceptions = saved[2]


async def test_a_failing_handler_logs_the_command_never_the_text(pod, bot_logging, monkeypatch):
    async def broken(ctx, rest):
        raise ValueError(f"cannot use {rest!r}")  # as int(), date() and friends do

    original = pod.app.registry.by_word["need"]
    monkeypatch.setitem(pod.app.registry.by_word, "need", Command(
        original.name, broken, original.help, original.args, original.aliases, original.examples,
        original.group))
    (reply,) = await pod.say(ALICE, f"!need {SECRET}")
    assert reply.message.body == SORRY
    log = bot_logging()
    assert "handler for need failed" in log and "ValueError" in log and "broken" in log
    assert SECRET not in log


def test_nio_event_warnings_never_carry_the_body(bot_logging):
    from nio import RoomMessage

    # No msgtype: nio's schema check fails and it logs the validation error, event included.
    event = RoomMessage.parse_event({
        "type": "m.room.message", "event_id": "$bad", "sender": "@alice:test",
        "origin_server_ts": 1, "content": {"body": SECRET}})
    assert type(event).__name__ in ("BadEvent", "UnknownBadEvent")
    log = bot_logging()
    assert "Error validating event" in log  # the warning itself still shows
    assert SECRET not in log
