"""Every bot's directory of the network's pods, kept fresh (docs/network.md): a pod new to a bot
is answered once with that bot's own pods, a pod that changes its name or zones announces them
again, and a pod that leaves says so. Several real bots (each its own app, storage and fake
transport) share one network room: what each sends there is delivered to the others."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count

import pytest

from bot import pod_network as net
from bot.app import App
from bot.commands.network import ANSWERS_PER_HOUR
from bot.config import BotConfig
from bot.messages import NetworkEvent
from bot.storage import Storage

from .conftest import CAROL, POD, SECRET, Clock, FakeTransport, Pod
from .test_front_door import DORA, DORA_DM
from .test_network import ADDRESS, NETWORK

BOTS = ["@bot:a.example", "@bot:b.example", "@bot:c.example"]
PODS = [("Elm Street", "north"), ("Maple", "docklands"), ("Oak", "hillside")]
MALLORY = "@mallory:other.example"
_EVENTS = count(1)
MAX_ROUNDS = 20  # far more than any exchange needs: reaching it means a loop


@dataclass
class Bot:
    user: str
    pod: Pod
    routed: int = 0  # how many of its sends were already delivered


@pytest.fixture
async def network(tmp_path):
    """Three bots, each with one pod (POD in its own homeserver's view: Carol coordinates it)
    named and zoned, none linked yet; bot A's front door falls back to its pod."""
    clock = Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    bots = []
    for user, (name, zone) in zip(BOTS, PODS, strict=True):
        storage = await Storage.open(tmp_path / f"{user[5]}.db")
        transport = FakeTransport()
        config = BotConfig.model_validate({"network": {"bots": BOTS},
                                           "front_door": {"default_pod": POD}})
        app = App(storage, config, transport, clock=clock)
        transport.app = app
        transport.rooms[POD] = [CAROL]
        transport.rooms[DORA_DM] = [DORA]
        transport.power_levels[CAROL] = 100
        transport.joinable[ADDRESS] = NETWORK
        bot = Bot(user, Pod(app, storage, transport, clock))
        await bot.pod.say(CAROL, f"!pod name {name}")
        await bot.pod.say(CAROL, f"!pod zones {zone}")
        bots.append(bot)
    yield bots
    for bot in bots:
        await bot.pod.app.stop()
        await bot.pod.storage.close()


async def deliver(sender: str, payload: str, to: Bot) -> None:
    await to.pod.receive(NetworkEvent(f"$net{next(_EVENTS)}", NETWORK, sender, payload, False,
                                      to.pod.clock()))


async def exchange(bots: list[Bot]) -> list[tuple[str, dict]]:
    """Deliver what each bot sent to the network room to every other bot, again and again until
    nobody sends anything more; everything delivered, (sender, payload), in order."""
    delivered: list[tuple[str, dict]] = []
    for _ in range(MAX_ROUNDS):
        moved = False
        for bot in bots:
            sent = bot.pod.transport.sent[bot.routed:]
            bot.routed += len(sent)
            for out in sent:
                if out.room_id != NETWORK or not out.network:
                    continue
                moved = True
                delivered.append((bot.user, json.loads(out.network)))
                for other in bots:
                    if other is not bot:
                        await deliver(bot.user, out.network, other)
        if not moved:
            return delivered
    raise AssertionError(f"still sending after {MAX_ROUNDS} rounds: {delivered[-6:]}")


async def join(bot: Bot) -> None:
    await bot.pod.say(CAROL, f"!network join {ADDRESS}")


async def offered(bot: Bot) -> str:
    """The list of areas Dora (in no pod) is offered at the bot's front door."""
    replies = [await bot.pod.say(DORA, text, room=DORA_DM, direct=True)
               for text in ("hi", "food", SECRET, "1")]
    await bot.pod.say(DORA, "stop", room=DORA_DM, direct=True)
    (asked,) = [o.message.body for o in replies[-1] if o.room_id == DORA_DM]
    return asked


async def directory(bot: Bot) -> list[tuple[str, str, list[str]]]:
    """(bot, name, zones) of the pods it lists in the network room."""
    async with bot.pod.storage.transaction() as tx:
        rows = await tx.fetchall("SELECT * FROM network_pods WHERE left_at IS NULL "
                                 "ORDER BY bot")
    return [(row["bot"], row["name"], json.loads(row["zones"])) for row in rows]


def types(delivered: list[tuple[str, dict]]) -> list[tuple[str, str, bool]]:
    return [(sender, p["type"], p.get("reply", False)) for sender, p in delivered]


# ---- the format ---------------------------------------------------------------------------------


def test_the_new_fields_and_type_are_read_and_older_payloads_still_are():
    answer = net.parse(net.payload(net.POD, "tok", name="Maple", zones=["docklands"],
                                   reply=True))
    assert (answer.reply, answer.zones) == (True, ("docklands",))
    assert net.parse(json.dumps({"v": 1, "type": "pod", "id": "tok", "name": "Maple"})).reply is False
    assert net.parse(json.dumps({"v": 1, "type": "pod", "id": "tok", "name": "Maple",
                                 "reply": "yes"})).reply is False  # only true is an answer
    left = net.parse(json.dumps({"v": 2, "type": "left", "id": "tok", "colour": "blue"}))
    assert (left.type, left.id) == ("left", "tok")
    with pytest.raises(net.Malformed):
        net.parse(json.dumps({"v": 1, "type": "left"}))


# ---- what people notice ---------------------------------------------------------------------------


async def test_a_pod_that_joined_before_is_offered_at_the_front_door_after_the_exchange(network):
    a, b, _ = network
    await join(b)
    await exchange([a, b])  # bot A is in no network yet: Maple's announcement is not for it
    assert "docklands" not in await offered(a)
    await join(a)
    assert types(await exchange([a, b])) == [(a.user, "pod", False), (b.user, "pod", True)]
    assert "1. docklands\n2. north\n3. none of these" in await offered(a)
    assert [name for _, name, _ in await directory(b)] == ["Elm Street"]


async def test_a_rezoned_or_renamed_pod_shows_its_new_zones_and_name(network):
    a, b, _ = network
    await join(b)
    await join(a)
    await exchange([a, b])
    await b.pod.say(CAROL, "!pod zones hillside, riverside")
    changed = await exchange([a, b])
    assert types(changed) == [(b.user, "pod", False)]  # a pod a knows: not answered
    areas = await offered(a)
    assert "hillside" in areas and "riverside" in areas and "docklands" not in areas
    await b.pod.say(CAROL, "!settings pod_name Birch")
    await exchange([a, b])
    assert await directory(a) == [(b.user, "Birch", ["hillside", "riverside"])]


async def test_a_pod_that_left_is_no_longer_offered_and_a_bot_that_left_forgets(network):
    a, b, _ = network
    await join(b)
    await join(a)
    await exchange([a, b])
    await b.pod.say(CAROL, f"!network leave {ADDRESS}")
    assert types(await exchange([a, b])) == [(b.user, "left", False)]
    assert "docklands" not in await offered(a)
    assert await directory(a) == []
    # Maple no longer has a pod in the room: its bot forgot the pods there.
    async with b.pod.storage.transaction() as tx:
        assert await tx.fetchall("SELECT * FROM network_pods") == []
    # Rejoining (a new token): bot A answers it again, and Maple is offered again.
    await join(b)
    assert types(await exchange([a, b])) == [(b.user, "pod", False), (a.user, "pod", True)]
    assert "docklands" in await offered(a)
    assert [name for _, name, _ in await directory(b)] == ["Elm Street"]


@pytest.mark.parametrize("n", [2, 3])
async def test_no_announcement_loop_between_bots(network, n):
    bots = network[:n]
    # One after another: each new pod's announcement is answered once by each bot there.
    sent = []
    for bot in bots:
        await join(bot)
        sent.append(len(await exchange(bots)))
    assert sent == [1 + k for k in range(n)]
    for bot in bots:
        assert len(await directory(bot)) == n - 1
    # A change is announced once and answered by nobody.
    await bots[0].pod.say(CAROL, "!pod zones north, riverside")
    assert len(await exchange(bots)) == 1


async def test_no_loop_when_three_bots_join_at_once(network):
    for bot in network:
        await join(bot)
    delivered = await exchange(network)
    # Three announcements, each answered by the two other bots; answers are never answered.
    assert len(delivered) == 3 + 3 * 2
    assert sum(p.get("reply", False) for _, p in delivered) == 6
    for bot in network:
        assert len(await directory(bot)) == 2
    assert await exchange(network) == []


async def test_untrusted_senders_and_replays_change_nothing(network, caplog):
    a, b, _ = network
    await join(a)
    await exchange([a])
    announce = net.payload(net.POD, "tokm", name="Mallory", zones=["docklands"])
    before = len(a.pod.transport.sent)
    await deliver(MALLORY, announce, a)
    assert len(a.pod.transport.sent) == before  # not answered
    assert await directory(a) == []
    assert "not a known pod bot" in caplog.text and "docklands" not in caplog.text
    assert "docklands" not in await offered(a)

    await join(b)
    await exchange([a, b])
    maple = next(p for p in (json.loads(o.network) for o in b.pod.transport.sent if o.network)
                 if p["type"] == "pod")
    # Another bot, even a trusted one, cannot say Maple left; Maple's own bot can, once.
    await deliver(BOTS[2], net.payload(net.LEFT, maple["id"]), a)
    assert "docklands" in await offered(a)
    await deliver(b.user, net.payload(net.LEFT, maple["id"]), a)
    await deliver(b.user, net.payload(net.LEFT, maple["id"]), a)
    assert "not listed here left (replayed)" in caplog.text
    # An announcement of a pod that left is replayed: ignored, not listed, not answered.
    before = len(a.pod.transport.sent)
    await deliver(b.user, net.payload(net.POD, maple["id"], name="Maple", zones=["docklands"]),
                  a)
    assert len(a.pod.transport.sent) == before
    assert "docklands" not in await offered(a)


async def test_a_bot_announcing_many_new_pods_is_listed_not_answered_beyond_the_hourly_cap(
        network):
    a, b, _ = network
    await join(a)
    await exchange([a])
    for n in range(15):
        await deliver(b.user, net.payload(net.POD, f"tok{n}", name="Maple", zones=[f"z{n}"]), a)
    answers = [o for o in a.pod.transport.sent[a.routed:] if o.room_id == NETWORK]
    assert len(answers) == ANSWERS_PER_HOUR < 15
    assert len(await directory(a)) == 15
