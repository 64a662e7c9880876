"""One bot serving two pods linked to the same network: it does not read its own messages, so an
escalated need of one pod is shown in the other directly, and the claim, the requester's answer
and the helper travel between the two pods' handlers here, as between two bots. And a need open
again after its introduction failed goes to the networks again, under a new id. Bot B is played
by hand, as in test_network.py."""

from __future__ import annotations

import json

import pytest

from bot import pod_network as net
from bot.config import BotConfig
from bot.messages import DeliveryError

from .conftest import ALICE, CAROL, DM, POD, SECRET
from .test_network import (
    ADDRESS,
    BOT_B,
    BOT_DM,
    HELPER,
    NETWORK,
    bodies,
    escalate,
    from_bot,
    link,
    network_sent,
)

OAK = "!oak:test"
OLGA = "@olga:test"


@pytest.fixture
def linked(pod_rooms):
    """As in test_network: Carol coordinates Elm Street (and Oak); bot B is a known pod bot."""
    pod = pod_rooms
    pod.app.config = BotConfig.model_validate(
        {"network": {"bots": [BOT_B], "escalations_per_hour": 2}})
    pod.transport.power_levels[CAROL] = 100
    pod.transport.joinable[ADDRESS] = NETWORK
    return pod


async def link_oak(pod):
    pod.transport.rooms[OAK] = [CAROL, OLGA]
    await pod.say(CAROL, "!pod name Oak", room=OAK)
    await pod.say(CAROL, f"!network join {ADDRESS}", room=OAK)


def types(pod):
    return [payload["type"] for _, payload in network_sent(pod)]


async def test_a_need_is_shown_in_the_bots_other_pod_claimed_there_and_introduced(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, f"!need food {SECRET}")
    await escalate(pod)
    shown = [b.replace("`", "") for b in bodies(pod, room_id=OAK) if "needs food" in b]
    assert shown == ["Elm Street pod needs food (whenever): reply !claim E1"]
    assert types(pod) == ["pod", "pod", "need"]  # once in the network, for the other bots
    reply = await pod.reply_to(OLGA, "!claim E1", room=OAK)
    assert "told the Elm Street pod" in reply
    assert types(pod) == ["pod", "pod", "need"]  # the claim stays with this bot
    asked = bodies(pod, user_id=ALICE)[-1]
    assert "Someone from the Oak pod offered to help" in asked and OLGA not in asked
    assert "already offered" in await pod.reply_to(CAROL, "!claim E1", room=OAK)
    await pod.say(ALICE, "yes", room=DM, direct=True)
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == sorted([ALICE, OLGA])
    assert SECRET in bodies(pod, room_id="!private1:test")[0]
    assert "E1 is being handled" in bodies(pod, room_id=OAK)[-1]
    assert "said yes" in bodies(pod, user_id=OLGA)[-1]
    # The helper is never named to Elm Street's room, nor anything sent to a bot.
    assert not any(OLGA in b for b in bodies(pod, room_id=POD))
    assert not [o for o in pod.transport.sent if o.network and o.room_id is None]
    await escalate(pod, hours=0)
    assert types(pod) == ["pod", "pod", "need", "close"]
    assert not any("is closed" in b for b in bodies(pod, room_id=OAK))  # it is being handled


async def test_a_no_from_the_requester_leaves_the_need_claimable_in_the_other_pod(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await pod.say(OLGA, "!claim E1", room=OAK)
    await pod.say(ALICE, "no", room=DM, direct=True)
    assert "preferred not to go ahead" in bodies(pod, user_id=OLGA)[-1]
    assert "told the Elm Street pod" in await pod.reply_to(CAROL, "!claim E1", room=OAK)
    assert "Someone from the Oak pod" in bodies(pod, user_id=ALICE)[-1]


async def test_a_need_met_at_home_closes_in_the_bots_other_pod(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await pod.say(OLGA, "!claim E1", room=OAK)  # asked, not answered yet
    await pod.say(ALICE, "!done 1")
    await escalate(pod, hours=0)
    assert types(pod)[-1] == "close"
    assert "E1 (Elm Street pod) is closed" in bodies(pod, room_id=OAK)[-1]
    assert "met or withdrawn before the person answered" in bodies(pod, user_id=OLGA)[-1]
    assert "is closed" in await pod.reply_to(OLGA, "!claim E1", room=OAK)


async def test_leaving_closes_the_need_in_the_bots_other_pod(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await pod.say(CAROL, f"!network leave {ADDRESS}")
    assert "E1 (Elm Street pod) is closed" in bodies(pod, room_id=OAK)[-1]


async def test_a_need_whose_introduction_failed_goes_to_the_networks_again(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, f"!need food {SECRET}")
    await escalate(pod)
    (first,) = [p["id"] for _, p in network_sent(pod) if p["type"] == "need"]
    # Bot B's helper is accepted; the room cannot be made.
    await from_bot(pod, net.payload(net.CLAIM, first, claim="claim1", pod="tokb", name="Maple"))
    await pod.say(ALICE, "yes", room=DM, direct=True)
    pod.transport.room_faults.append(("before", DeliveryError("M_FORBIDDEN", permanent=True)))
    # Faults left to come when the scheduler is woken: 0 once the room was refused.
    woken_at: list[int] = []
    pod.app.schedule_listeners.append(lambda: woken_at.append(len(pod.transport.room_faults)))
    await from_bot(pod, net.payload(net.HELPER, first, claim="claim1", person=HELPER),
                   room=BOT_DM, direct=True)
    assert "could not make the private room for #1" in bodies(pod, user_id=ALICE)[-1]
    # The scheduler is woken by the failure itself, not left to its next ten-minute wake.
    assert 0 in woken_at, woken_at
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "open"
    # The round is closed (the failed claim not named), then the need goes again, new id.
    assert [i.kind for i in await escalate(pod, hours=0)] == ["close_escalation"]
    assert network_sent(pod)[-1][1] == {"v": 1, "type": "close", "id": first}
    assert [i.kind for i in await escalate(pod, hours=0)] == ["escalate"]
    second = network_sent(pod)[-1][1]
    assert second["type"] == "need" and second["id"] != first
    assert "#1 is still open, so I have passed it to this pod's networks again" in (
        bodies(pod, room_id=POD)[-1])
    assert "Elm Street pod needs food (whenever): reply !claim E2" in (
        bodies(pod, room_id=OAK)[-1].replace("`", ""))
    assert await escalate(pod, hours=0) == []  # never twice at once
    # A claim on the old round is not this round's; one on the new round asks Alice again.
    await from_bot(pod, net.payload(net.CLAIM, first, claim="claim2", pod="tokb", name="Maple"))
    assert not any(o.user_id == BOT_B and json.loads(o.network)["claim"] == "claim2"
                   for o in pod.transport.sent if o.network)
    await from_bot(pod, net.payload(net.CLAIM, second["id"], claim="claim3", pod="tokb",
                                    name="Maple"))
    assert "Someone from the Maple pod offered to help" in bodies(pod, user_id=ALICE)[-1]
    await pod.say(ALICE, "yes", room=DM, direct=True)
    await from_bot(pod, net.payload(net.HELPER, second["id"], claim="claim3", person=HELPER),
                   room=BOT_DM, direct=True)
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == sorted([ALICE, HELPER])


async def test_a_reopened_need_waits_for_the_pods_hourly_limit(linked):
    pod = linked  # escalations_per_hour = 2
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    (first,) = [p["id"] for _, p in network_sent(pod) if p["type"] == "need"]
    await from_bot(pod, net.payload(net.CLAIM, first, claim="claim1", pod="tokb", name="Maple"))
    await pod.say(ALICE, "yes", room=DM, direct=True)
    pod.transport.room_faults.append(("before", DeliveryError("M_FORBIDDEN", permanent=True)))
    await from_bot(pod, net.payload(net.HELPER, first, claim="claim1", person=HELPER),
                   room=BOT_DM, direct=True)
    for what in ("ride", "childcare"):
        await pod.say(ALICE, f"!need {what}")
    await escalate(pod, hours=24)  # the round of #1 closes; #2 and #3 fill the hour
    assert types(pod).count("need") == 3
    assert [i.kind for i in await escalate(pod, hours=0.5)] == []
    assert [i.kind for i in await escalate(pod, hours=0.6)] == ["escalate"]
    assert types(pod).count("need") == 4


async def test_an_offer_withdrawn_when_the_helpers_pod_leaves_leaves_the_need_claimable(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    (need,) = [p["id"] for _, p in network_sent(pod) if p["type"] == "need"]
    await pod.say(OLGA, "!claim E1", room=OAK)
    await pod.say(CAROL, f"!network leave {ADDRESS}", room=OAK)
    assert "withdrawn: the helper's pod left the network" in bodies(pod, user_id=ALICE)[-1]
    assert "this pod left that network" in bodies(pod, user_id=OLGA)[-1]
    assert "withdraw" not in types(pod)  # between this bot's own pods: nothing to the room
    await from_bot(pod, net.payload(net.CLAIM, need, claim="claim1", pod="tokb", name="Maple"))
    assert "Someone from the Maple pod offered to help" in bodies(pod, user_id=ALICE)[-1]


async def test_a_need_reopened_by_its_helpers_forgetme_goes_to_the_networks_again(linked):
    pod = linked
    await link(pod)
    await link_oak(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await pod.say(OLGA, "!claim E1", room=OAK)
    await pod.say(ALICE, "yes", room=DM, direct=True)
    await escalate(pod, hours=0)  # claimed: closed in the network
    assert types(pod)[-1] == "close"
    await pod.say(OLGA, "!forgetme", room="!dm-olga:test", direct=True)
    await pod.say(OLGA, "yes", room="!dm-olga:test", direct=True)
    await pod.app.run_until_idle()
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "open"
    await escalate(pod, hours=0)
    assert types(pod)[-1] == "need" and types(pod).count("need") == 2
    assert "reply !claim E2" in bodies(pod, room_id=OAK)[-1].replace("`", "")
