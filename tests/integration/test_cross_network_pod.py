"""One pod across networks: a Matrix room (real Synapse) and a Signal group (the fake signal-cli
daemon), served by one bot process (`mutual-aid-bot run`, through the composition root)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from tests.signal_fake import FakeSignalDaemon, Person

from .botproc import BotProcess
from .people import contains
from .test_bot_basics import ask

BOT_SIGNAL = "0b0b0b0b-0000-4000-8000-0000000000b1"
SAM = "5a5a5a5a-0000-4000-8000-00000000005a"
SAM_ID = f"@signal:{SAM}"
GROUP = "RWxtU3RyZWV0U2lnbmFsR3JvdXBJZDAwMDAwMDAwMDA="
WAIT_S = 60.0


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def texts(messages: list[dict]) -> list[str]:
    return [m.get("message", "") for m in messages]


async def test_a_need_on_signal_meets_an_offer_on_matrix_and_they_talk_through_a_relay(
        synapse, person_factory, tmp_path):
    fake = FakeSignalDaemon(account=BOT_SIGNAL, bot_uuid=BOT_SIGNAL,
                            people={SAM: Person(SAM, "+15550100155", "Sam")})
    fake.groups[GROUP] = {"name": "Elm Street", "members": [BOT_SIGNAL, SAM], "admins": [SAM],
                          "expiration": 0}
    await fake.start()
    alice = await person_factory("alice")
    bot_id, password = await synapse.register(f"bot-{uuid.uuid4().hex[:8]}")
    room = await alice.create_room("Elm Street", invite=[bot_id], encrypted=True)
    bot = BotProcess(synapse, tmp_path / "bot", bot_id, password, extra_sections=f"""
[signal]
daemon = "{fake.address}"
account = "{BOT_SIGNAL}"

[[pods]]
name = "Elm Street"
matrix_rooms = ["{room}"]
signal_groups = ["{GROUP}"]
""")
    await bot.start()
    try:
        await bot.wait_for_log("connected to the signal-cli daemon")
        await alice._sync_until(lambda: bot_id in alice.client.rooms[room].users, 30, "bot join")

        # A need in the Signal group.
        fake.inject(fake.envelope(SAM, "!need groceries for two, this week", group_id=GROUP))
        await until(lambda: fake.messages(to_group=GROUP), "the reply in the Signal group")
        assert texts(fake.messages(to_group=GROUP))[0].startswith("Noted need #1")

        # An offer in the Matrix room: the match is told there, and in the Signal group.
        reply = await ask(alice, room, "!offer groceries run on saturday", bot, timeout=WAIT_S)
        assert "Noted offer **#2**" in reply.body and "Possible match in food" in reply.body
        assert SAM_ID in reply.body and "!claim 1" in reply.body
        await until(lambda: len(fake.messages(to_group=GROUP)) >= 2, "the match on Signal")
        match = fake.messages(to_group=GROUP)[-1]
        assert "Possible match in food" in match["message"] and "#2" in match["message"]
        assert "!claim 2" in match["message"]
        assert any(m.endswith(f":{SAM}") for m in match.get("mention", []))  # Sam is notified

        # Alice claims the need from Matrix: a relay, since they are on different networks.
        claimed = await ask(alice, room, "!claim 1", bot, timeout=WAIT_S)
        assert "is claimed" in claimed.body and "another network" in claimed.body
        await until(lambda: any("is claimed" in t for t in texts(fake.messages(to_group=GROUP))),
                    "the claim told on Signal")
        await until(lambda: fake.messages(to=SAM), "Sam's private note about the relay")
        assert "connected about #1" in fake.messages(to=SAM)[0]["message"]
        dm = await alice.wait_for_invite(timeout=WAIT_S)
        await alice.join(dm)
        await alice.wait_for(dm, contains("connected about"), WAIT_S, sender=bot_id)

        # Both ways, marked as relayed.
        fake.inject(fake.envelope(SAM, "Thank you! 6pm at the library?"))
        relayed = await alice.wait_for(dm, contains("Thank you! 6pm at the library?"), WAIT_S,
                                       sender=bot_id)
        assert relayed.body.startswith(f"[relayed from {SAM_ID}]")
        before = len(fake.messages(to=SAM))
        await alice.send(dm, "6pm works, see you there")
        await until(lambda: len(fake.messages(to=SAM)) > before, "the relayed answer on Signal")
        assert fake.messages(to=SAM)[-1]["message"] == (
            f"[relayed from {alice.user_id}] 6pm works, see you there")

        # Either can end it; after that nothing is passed on.
        ended = await ask(alice, dm, "!end", bot, timeout=WAIT_S)
        assert "Ended" in ended.body
        await until(lambda: "ended the relayed conversation" in texts(fake.messages(to=SAM))[-1],
                    "Sam told that the relay ended")
        before = len(fake.messages(to=SAM))
        fake.inject(fake.envelope(SAM, "one more thing"))
        await until(lambda: len(fake.messages(to=SAM)) > before, "the bot's answer to Sam")
        assert "relayed" not in fake.messages(to=SAM)[-1]["message"]
        await alice.sync_once()
        assert not any("one more thing" in body for body in alice.bodies(dm))
        assert "+15550100155" not in bot.log_text()
    finally:
        await bot.stop()
        await fake.stop()
