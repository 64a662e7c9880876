"""Two pods of two bots that share two network rooms (docs/network.md, "A pod in several
networks"): a pod that leaves one of them is still reached through the other, so its escalated
needs stay open and claimable in the other bot's pod, and its zones stay in the directory; only
leaving the last one closes them. Two real apps (each its own storage and fake transport), as in
test_pod_directory.py: what each sends into a network room is delivered to the other."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count

import pytest

from bot.app import App
from bot.config import BotConfig
from bot.messages import NetworkEvent
from bot.scheduler import Scheduler
from bot.storage import Storage

from .conftest import ALICE, BOB, CAROL, POD, Clock, FakeTransport, Pod
from .test_front_door import DORA, DORA_DM
from .test_pod_directory import Bot, offered

BOTS = ["@bot:a.example", "@bot:b.example"]
NETWORKS = {"#city:other.example": "!city:other.example",
            "#riverside:other.example": "!riverside:other.example"}
CITY, RIVERSIDE = NETWORKS
OAK, BIRCH = "!oak:b.example", "!birch:b.example"
SHOWN = "Elm Street pod needs food (whenever, north): reply !claim E"
_EVENTS = count(1)
MAX_ROUNDS = 20


@pytest.fixture
async def pods(tmp_path):
    """Elm Street (bot A: Alice asks, Carol coordinates) and Maple (bot B: Bob helps, Carol
    coordinates), both linked to the city and riverside networks, each knowing the other."""
    clock = Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    made = []
    for user, (name, zone) in zip(BOTS, [("Elm Street", "north"), ("Maple", "docklands")],
                                  strict=True):
        storage = await Storage.open(tmp_path / f"{user[5]}.db")
        transport = FakeTransport()
        config = BotConfig.model_validate({"network": {"bots": BOTS},
                                           "front_door": {"default_pod": POD}})
        app = App(storage, config, transport, clock=clock)
        transport.app = app
        transport.rooms[POD] = [ALICE, BOB, CAROL]
        transport.rooms[DORA_DM] = [DORA]
        transport.power_levels[CAROL] = 100
        transport.joinable.update(NETWORKS)
        pod = Pod(app, storage, transport, clock)
        await pod.say(CAROL, f"!pod name {name}")
        await pod.say(CAROL, f"!pod zones {zone}")
        for address in NETWORKS:
            await pod.say(CAROL, f"!network join {address}")
        made.append(pod)
    await exchange(made)
    yield made
    for pod in made:
        await pod.app.stop()
        await pod.storage.close()


async def exchange(pods: list[Pod], routed: dict[int, int] | None = None) -> list[tuple]:
    """Deliver what each bot sent into a network room to the other, in that room, until nobody
    sends anything more; (room, type) of everything delivered."""
    routed = routed if routed is not None else {}
    delivered = []
    for _ in range(MAX_ROUNDS):
        moved = False
        for me, pod in enumerate(pods):
            sent = pod.transport.sent[routed.get(me, 0):]
            routed[me] = len(pod.transport.sent)
            for out in sent:
                if out.room_id not in NETWORKS.values() or not out.network:
                    continue
                moved = True
                delivered.append((out.room_id, json.loads(out.network)["type"]))
                for other in pods:
                    if other is not pod:
                        await other.receive(NetworkEvent(
                            f"$net{next(_EVENTS)}", out.room_id, BOTS[me], out.network, False,
                            other.clock()))
        if not moved:
            return delivered
    raise AssertionError(f"still sending after {MAX_ROUNDS} rounds")


def said(pod: Pod, **where: str) -> list[str]:
    return [o.message.body.replace("**", "").replace("`", "") for o in pod.transport.sent
            if all(getattr(o, k) == v for k, v in where.items())]


async def offered_at(pod: Pod) -> str:
    """The areas Dora, in no pod, is offered at the bot's front door."""
    return await offered(Bot(BOTS[1], pod))


async def escalated_need(elm: Pod, maple: Pod, routed: dict[int, int]) -> None:
    """Alice's need in Elm Street, unmatched for a day, goes to both networks; Maple shows it."""
    await elm.say(ALICE, "!need food")
    elm.clock.advance(hours=25)
    await Scheduler(elm.app).run_due(elm.clock())
    await elm.app.run_until_idle()
    assert sorted(await exchange([elm, maple], routed)) == [
        (NETWORKS[CITY], "need"), (NETWORKS[RIVERSIDE], "need")]
    assert said(maple, room_id=POD)[-1].startswith(SHOWN)


async def test_a_pod_that_leaves_one_of_two_shared_networks_is_still_reached_by_the_other(pods):
    elm, maple = pods
    routed: dict[int, int] = {}
    await exchange(pods, routed)
    await escalated_need(elm, maple, routed)
    await elm.say(CAROL, f"!network leave {CITY}")
    assert sorted(await exchange(pods, routed)) == [
        (NETWORKS[CITY], "close"), (NETWORKS[CITY], "left")]
    # Elm Street is still in riverside with Maple: its need stays open there, and its zone is
    # still offered at Maple's front door.
    assert not any("is closed" in body for body in said(maple, room_id=POD))
    assert "north" in await offered_at(maple)
    # A claim reaches Elm Street's bot through riverside, and Alice is asked.
    assert "told the Elm Street pod" in await maple.reply_to(BOB, "!claim E1")
    assert await exchange(pods, routed) == [(NETWORKS[RIVERSIDE], "claim")]
    assert "Someone from the Maple pod offered to help" in said(elm, user_id=ALICE)[-1]
    # Leaving the last network they share closes it in Maple.
    await elm.say(CAROL, f"!network leave {RIVERSIDE}")
    assert sorted(await exchange(pods, routed)) == [
        (NETWORKS[RIVERSIDE], "close"), (NETWORKS[RIVERSIDE], "left")]
    assert "E1 (Elm Street pod) is closed: it was met or withdrawn." in said(maple, room_id=POD)
    assert "met or withdrawn before the person answered" in said(maple, user_id=BOB)[-1]
    assert "north" not in await offered_at(maple)


async def test_a_pod_that_leaves_one_of_two_shared_networks_keeps_the_others_needs(pods):
    elm, maple = pods
    routed: dict[int, int] = {}
    await exchange(pods, routed)
    await escalated_need(elm, maple, routed)
    # Maple leaves the city network: Elm Street's need still reaches it through riverside.
    assert "0 of its needs there were closed" in await maple.reply_to(CAROL, f"!network leave {CITY}")
    await exchange(pods, routed)
    assert not any("is closed" in body for body in said(maple, room_id=POD))
    assert "told the Elm Street pod" in await maple.reply_to(BOB, "!claim E1")
    assert await exchange(pods, routed) == [(NETWORKS[RIVERSIDE], "claim")]
    assert "Someone from the Maple pod offered to help" in said(elm, user_id=ALICE)[-1]



async def test_each_pod_shows_what_its_own_networks_bring_and_closes_with_them(pods):
    """Maple's bot also serves Oak (linked to riverside only) and Birch (to the city only)."""
    elm, maple = pods
    routed: dict[int, int] = {}
    for room, name, address in ((OAK, "Oak", RIVERSIDE), (BIRCH, "Birch", CITY)):
        maple.transport.rooms[room] = [CAROL, BOB]
        await maple.say(CAROL, f"!pod name {name}", room=room)
        await maple.say(CAROL, f"!network join {address}", room=room)
    await exchange(pods, routed)
    await escalated_need(elm, maple, routed)
    # Oak, which only riverside brings it to, shows it too (it came by the city first).
    for room in (OAK, BIRCH):
        assert [body for body in said(maple, room_id=room) if body.startswith(SHOWN)] != []
    # Elm Street leaves the city network: Birch, in that one only, closes the need; Maple and
    # Oak, which riverside still brings it to, keep it.
    await elm.say(CAROL, f"!network leave {CITY}")
    await exchange(pods, routed)
    assert "is closed" in said(maple, room_id=BIRCH)[-1]
    for room in (POD, OAK):
        assert not any("is closed" in body for body in said(maple, room_id=room))
