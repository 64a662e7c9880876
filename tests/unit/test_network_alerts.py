"""A phone-tree alert forwarded to the network's pods (issue 12): `!alert [urgent] network …`
from a coordinator, the `alert` message (no caller), and another bot's alert shown in this bot's
pods and called on their trees, once, within the other pod's hourly limit. Bot B is played by
hand, as in test_network.py."""

from __future__ import annotations

import json

import pytest

from bot import pod_network as net
from bot.config import BotConfig

from .conftest import ALICE, BOB, CAROL, DM, POD
from .test_network import ADDRESS, BOT_B, NETWORK, bodies, escalate, from_bot, link, network_sent

TEXT = "ICE reported on Main St, stay inside"


@pytest.fixture
def linked(pod_rooms):
    """Carol coordinates the pod, Elm Street; bot B is a known pod bot (as in test_network)."""
    pod = pod_rooms
    pod.app.config = BotConfig.model_validate({"network": {"bots": [BOT_B]}})
    pod.transport.power_levels[CAROL] = 100
    pod.transport.joinable[ADDRESS] = NETWORK
    return pod


def alert_payload(**changes: object) -> str:
    data = {"v": 1, "type": "alert", "id": "alert1", "pod": "podtoken", "name": "Maple",
            "urgent": True, "text": TEXT} | changes
    return json.dumps({k: v for k, v in data.items() if v is not None})


def dms(pod, person):
    return [o.message.body for o in pod.transport.sent if o.user_id == person]


async def on_tree(pod, *people):
    for person in people:
        assert "on the phone tree" in await pod.reply_to(person, "!tree join")


# ---- the message (pure) ----------------------------------------------------------------------


def test_an_alert_is_read_with_its_pod_urgency_and_text():
    message = net.parse(alert_payload(v=2, colour="blue"))
    assert (message.type, message.id, message.pod, message.name, message.urgent,
            message.text) == ("alert", "alert1", "podtoken", "Maple", True, TEXT)


@pytest.mark.parametrize("changes", [
    {"urgent": None}, {"urgent": "yes"}, {"text": None}, {"text": "   "},
    {"text": "x" * (net.MAX_ALERT_TEXT + 1)}, {"pod": None}, {"name": "@x:y"}, {"id": "a b"},
])
def test_malformed_alerts_are_refused(changes):
    with pytest.raises(net.Malformed):
        net.parse(alert_payload(**changes))


# ---- forwarding from this pod ----------------------------------------------------------------


async def test_only_a_coordinator_of_a_linked_pod_may_forward(linked):
    pod = linked
    assert "coordinator is needed" in await pod.reply_to(BOB, f"!alert network {TEXT}")
    await pod.say(CAROL, "!pod name Elm Street")
    unlinked = await pod.reply_to(CAROL, f"!alert network {TEXT}")
    assert "in no network" in unlinked and "!network join" in unlinked
    assert "nothing was sent" in unlinked
    assert not network_sent(pod)


async def test_a_forwarded_alert_carries_the_text_and_pod_never_the_caller(linked):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE, BOB)
    reply = await pod.reply_to(CAROL, f"!alert urgent network {TEXT}")
    assert "Forwarded to the pods of #city:other.example" in reply
    assert "Calling 2 people" in reply  # this pod's own tree too
    (body, payload), = [sent for sent in network_sent(pod) if sent[1]["type"] == "alert"]
    assert body == f"Alert from the Elm Street pod (urgent): {TEXT}"
    assert set(payload) == {"v", "type", "id", "pod", "name", "urgent", "text"}
    assert (payload["name"], payload["urgent"], payload["text"]) == ("Elm Street", True, TEXT)
    assert CAROL not in json.dumps(network_sent(pod))
    await escalate(pod, hours=0)
    assert all(TEXT in dms(pod, person)[-1] for person in (ALICE, BOB))


async def test_an_alert_too_big_for_the_network_is_refused_before_anything_is_sent(linked):
    pod = linked
    await link(pod)
    refused = await pod.reply_to(CAROL, "!alert network " + "🚨" * 400)
    assert "too long to forward" in refused and "nothing was sent" in refused
    assert not [p for _, p in network_sent(pod) if p["type"] == "alert"]


async def test_a_pod_forwards_at_most_its_hourly_limit(linked):
    pod = linked
    await link(pod)
    for n in range(3):
        assert "Forwarded" in await pod.reply_to(CAROL, f"!alert network drill {n}")
    refused = await pod.reply_to(CAROL, "!alert network drill 4")
    assert "the most it may; nothing was sent" in refused
    assert sum(p["type"] == "alert" for _, p in network_sent(pod)) == 3
    pod.clock.advance(hours=1.1)
    assert "Forwarded" in await pod.reply_to(CAROL, "!alert network drill 5")


async def test_the_bots_other_pods_in_the_network_hear_it_too(linked):
    pod = linked
    other = "!oak:test"
    pod.transport.rooms[other] = [CAROL, "@olga:test"]
    await link(pod)
    await pod.say(CAROL, "!pod name Oak", room=other)
    await pod.say(CAROL, f"!network join {ADDRESS}", room=other)
    await pod.say("@olga:test", "!tree join", room=other)
    await pod.say(CAROL, "!tree join", room=other)  # she forwards it: not called about it
    reply = await pod.reply_to(CAROL, f"!alert network {TEXT}")
    assert "and 1 more pod of mine" in reply
    [shown] = [b for b in bodies(pod, room_id=other) if "Alert from" in b]
    assert f"Alert from the Elm Street pod: {TEXT}" in shown and "phone tree: 1 person" in shown
    await escalate(pod, hours=0)
    assert "Elm Street pod (through the network)" in dms(pod, "@olga:test")[-1]


# ---- another pod's alert coming in -----------------------------------------------------------


async def test_another_pods_alert_is_posted_and_this_pods_tree_called(linked):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE, BOB)
    await from_bot(pod, alert_payload())
    shown = bodies(pod, room_id=POD)[-1]
    assert f"Alert from the Maple pod (urgent): {TEXT}" in shown
    assert "Calling this pod's phone tree: 2 people" in shown
    assert f"{CAROL} hears of anyone who stays silent" in shown  # the coordinator stands in
    await escalate(pod, hours=0)
    for person in (ALICE, BOB):
        call = dms(pod, person)[-1]
        assert "Phone tree alert** from the Maple pod (through the network)" in call
        assert TEXT in call
    thanks = await pod.say(ALICE, "ok", room=DM, direct=True)
    assert "confirmation is recorded" in thanks[-1].message.body
    status = await pod.say(CAROL, "!alert status")
    assert "1 of 2 confirmed" in dms(pod, CAROL)[-1] and status


async def test_the_coordinator_standing_in_is_called_too_if_on_the_tree(linked):
    pod = linked
    await link(pod)
    await on_tree(pod, CAROL)
    await from_bot(pod, alert_payload())
    assert "phone tree: 1 person" in bodies(pod, room_id=POD)[-1]
    await escalate(pod, hours=0)
    assert "Phone tree alert** from the Maple pod" in dms(pod, CAROL)[-1]
    await pod.say(CAROL, "!alert status")
    status = dms(pod, CAROL)[-1]
    assert "from the Maple pod (through the network)" in status and "0 of 1" in status


async def test_a_replayed_alert_changes_nothing(linked, caplog):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE)
    await from_bot(pod, alert_payload())
    await escalate(pod, hours=0)
    await escalate(pod, hours=0)  # the coordinator standing in hears everyone was reached
    assert "all 1 people reached" in dms(pod, CAROL)[-1]
    before = len(pod.transport.sent)
    await from_bot(pod, alert_payload())  # replayed (or received again after a restart)
    await escalate(pod, hours=0)
    assert len(pod.transport.sent) == before
    assert "replayed" in caplog.text and TEXT not in caplog.text
    assert sum("Alert from the Maple pod" in b for b in bodies(pod, room_id=POD)) == 1
    assert len(dms(pod, ALICE)) == 1


@pytest.mark.parametrize("sender, payload, why", [
    ("@mallory:other.example", alert_payload(), "not a known pod bot"),
    (BOT_B, alert_payload(text="x" * 600), "text"),
    (BOT_B, alert_payload(text="y" * 5000), "oversized"),
])
async def test_forged_or_malformed_alerts_change_nothing(linked, caplog, sender, payload, why):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE)
    before = len(pod.transport.sent)
    await from_bot(pod, payload, sender=sender)
    await escalate(pod, hours=0)
    assert len(pod.transport.sent) == before
    assert why in caplog.text
    assert TEXT not in caplog.text and "Maple" not in caplog.text  # never the content


async def test_another_pod_over_its_hourly_limit_is_not_called(linked, caplog):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE)
    for n in range(4):
        await from_bot(pod, alert_payload(id=f"alert{n}"))
    assert sum("Alert from the Maple pod" in b for b in bodies(pod, room_id=POD)) == 3
    assert "over the hourly limit of alerts" in caplog.text
    pod.clock.advance(hours=1.1)
    await from_bot(pod, alert_payload(id="alert9"))
    assert sum("Alert from the Maple pod" in b for b in bodies(pod, room_id=POD)) == 4


async def test_a_pod_with_nobody_on_its_tree_is_told(linked):
    pod = linked
    await link(pod)
    await from_bot(pod, alert_payload(urgent=False, id="calm"))
    shown = bodies(pod, room_id=POD)[-1]
    assert f"Alert from the Maple pod: {TEXT}" in shown and "nobody was called" in shown
    assert NETWORK not in shown


async def test_the_coordinator_standing_in_hears_of_the_alert_from_the_other_pod(linked):
    pod = linked
    await link(pod)
    await on_tree(pod, ALICE, BOB)
    await from_bot(pod, alert_payload())
    await escalate(pod, hours=0)
    await escalate(pod, hours=0)  # the calls were sent: the coordinator standing in hears
    reached = dms(pod, CAROL)[-1]
    assert "Phone tree** (the alert from the Maple pod): all 2 people reached" in reached
    for person in (ALICE, BOB):
        await pod.say(person, "ok", room=f"!dm-{person}", direct=True)
    everyone = dms(pod, CAROL)[-1]
    assert "everyone confirmed the alert from the Maple pod: 2 people" in everyone
    assert "your alert" not in " ".join(dms(pod, CAROL))
