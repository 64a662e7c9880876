"""The network of pods (issue 12): the message format and rules, and the handlers on both sides
of an escalation, with the fake transport. Bot B is played by hand: its messages are fed in as
network events, and what this bot sends it is read from the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from bot import pod_network as net
from bot.config import BotConfig
from bot.messages import NetworkEvent
from bot.models import Category, Urgency
from bot.scheduler import Scheduler

from .conftest import ALICE, BOB, CAROL, DM, POD, SECRET

BOT_B = "@bot:other.example"
NETWORK = "!network:other.example"
ADDRESS = "#city:other.example"
BOT_DM = "!dm-bot-b:test"
HELPER = "@helen:other.example"
_EVENTS = count(1)


# ---- the message format and the rules (pure) -------------------------------------------------


def need_payload(**changes: object) -> str:
    data = {"v": 1, "type": "need", "id": "esc1", "pod": "podtoken", "name": "Maple",
            "category": "food", "urgency": 2, "zone": "north"} | changes
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_a_need_is_read_with_unknown_fields_and_newer_versions():
    message = net.parse(need_payload(v=3, colour="blue"))
    assert (message.type, message.id, message.name, message.category, message.urgency,
            message.zone) == ("need", "esc1", "Maple", Category.FOOD, Urgency.TODAY, "north")
    assert net.parse(need_payload(category="gardening")).category is Category.OTHER
    assert net.parse(need_payload(type="poll")) is None  # a type this version does not know


def test_a_zone_that_looks_like_an_address_is_dropped_not_shown():
    assert net.parse(need_payload(zone="12 Elm Street")).zone is None


@pytest.mark.parametrize("payload", [
    "not json", "[1]", need_payload(v=None), need_payload(v="1"), need_payload(id=None),
    need_payload(id="has spaces"), need_payload(urgency="high"), need_payload(name="@x:y"),
    need_payload(colour="x" * 5000),
    json.dumps({"v": 1, "type": "helper", "id": "e", "claim": "c", "person": "bob"}),
    json.dumps({"v": 1, "type": "answer", "id": "e", "claim": "c"}),
])
def test_malformed_messages_are_refused(payload):
    with pytest.raises(net.Malformed):
        net.parse(payload)


def test_payloads_round_trip():
    text = net.payload(net.HELPER, "esc1", claim="c1", person=HELPER)
    assert net.parse(text).person == HELPER


def test_escalation_waits_less_for_urgent_needs():
    made = datetime(2026, 1, 1, tzinfo=UTC)
    assert net.escalation_due(made, Urgency.WHENEVER, 24, 2) == made + timedelta(hours=24)
    assert net.escalation_due(made, Urgency.TODAY, 24, 2) == made + timedelta(hours=2)


def test_hourly_limit():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    recent = [now - timedelta(minutes=50), now - timedelta(minutes=10), now - timedelta(hours=2)]
    assert net.room_left(recent, now, 3) == 1
    assert net.room_left(recent, now, 2) == 0
    assert net.next_room(recent, now, 2) == now + timedelta(minutes=10)
    assert net.next_room(recent, now, 3) is None


def test_labels():
    assert net.parse_label("E14") == 14 and net.parse_label("e3") == 3
    assert net.parse_label("14") is None and net.parse_label("E") is None


# ---- the harness -----------------------------------------------------------------------------


@pytest.fixture
def linked(pod_rooms):
    """Carol coordinates the pod, Elm Street; bot B is a known pod bot with a DM to this one."""
    pod = pod_rooms
    pod.app.config = BotConfig.model_validate(
        {"network": {"bots": [BOT_B], "escalations_per_hour": 2}})
    pod.transport.power_levels[CAROL] = 100
    pod.transport.joinable[ADDRESS] = NETWORK
    return pod


async def link(pod):
    await pod.say(CAROL, "!pod name Elm Street")
    await pod.say(CAROL, f"!network join {ADDRESS}")


def network_sent(pod, room=NETWORK):
    return [(o.message.body, json.loads(o.network)) for o in pod.transport.sent
            if o.room_id == room and o.network]


def bodies(pod, **where):
    return [o.message.body.replace("**", "") for o in pod.transport.sent
            if all(getattr(o, k) == v for k, v in where.items())]


async def from_bot(pod, payload, *, sender=BOT_B, room=NETWORK, direct=False):
    event = NetworkEvent(f"$net{next(_EVENTS)}", room, sender, payload, direct, pod.clock())
    return await pod.receive(event)


async def escalate(pod, *, hours=25.0):
    """Let `hours` pass, run what the scheduler finds due and deliver it."""
    pod.clock.advance(hours=hours)
    acted = await Scheduler(pod.app).run_due(pod.clock())
    await pod.app.run_until_idle()
    return acted


# ---- joining and leaving -----------------------------------------------------------------------


async def test_a_coordinator_links_the_pod_and_it_is_announced(linked):
    pod = linked
    refused = await pod.reply_to(BOB, f"!network join {ADDRESS}")
    assert "coordinator is needed" in refused
    unnamed = await pod.reply_to(CAROL, f"!network join {ADDRESS}")
    assert "Name the pod first" in unnamed
    await link(pod)
    assert "now linked to #city:other.example" in bodies(pod, room_id=POD)[-1]
    (body, payload), = network_sent(pod)
    assert payload["type"] == "pod" and payload["name"] == "Elm Street"
    assert "Elm Street" in body
    listing = await pod.reply_to(BOB, "!network")
    assert ADDRESS in listing and "24 hours" in listing
    assert f"Networks: {ADDRESS}" in await pod.reply_to(BOB, "!pod")


async def test_a_room_that_is_not_encrypted_is_refused(linked):
    pod = linked
    await pod.say(CAROL, "!pod name Elm Street")
    await pod.say(CAROL, "!network join #clear:other.example")
    assert "not end-to-end encrypted" in bodies(pod, room_id=POD)[-1]
    assert "in no network" in await pod.reply_to(BOB, "!network")


async def test_bad_addresses_get_the_usage(linked):
    reply = await linked.reply_to(CAROL, "!network join city")
    assert "Usage:" in reply and "#city-network:other.example" in reply


# ---- this pod's needs going out ------------------------------------------------------------------


async def test_an_unmatched_need_goes_to_the_network_once_with_nothing_personal(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, f"!need food {SECRET}")
    assert await escalate(pod, hours=23) == []
    acted = await escalate(pod, hours=2)
    assert [item.kind for item in acted] == ["escalate"]
    (body, payload), = [sent for sent in network_sent(pod) if sent[1]["type"] == "need"]
    assert body == "Elm Street pod needs food (whenever)"
    assert payload["category"] == "food" and payload["name"] == "Elm Street"
    everything = json.dumps(network_sent(pod))
    assert ALICE not in everything and SECRET not in everything
    assert "passed it to this pod's networks" in bodies(pod, room_id=POD)[-1]
    assert await escalate(pod) == []  # recorded: never twice


async def test_urgent_needs_go_sooner_and_the_pod_sets_its_delays(linked):
    pod = linked
    await link(pod)
    await pod.say(CAROL, "!settings escalate_urgent_after 0.5")
    await pod.say(ALICE, "!need groceries urgent")
    assert [i.kind for i in await escalate(pod, hours=0.6)] == ["escalate"]


async def test_one_pod_sends_at_most_its_hourly_limit(linked):
    pod = linked
    await link(pod)
    for what in ("food", "ride", "childcare"):
        await pod.say(ALICE, f"!need {what}")
    assert len(await escalate(pod)) == 2
    assert await escalate(pod, hours=0.5) == []
    assert len(await escalate(pod, hours=0.6)) == 1


async def test_a_need_met_at_home_closes_in_the_network(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await pod.say(ALICE, "!done 1")
    assert [i.kind for i in await escalate(pod, hours=0)] == ["close_escalation"]
    types = [payload["type"] for _, payload in network_sent(pod)]
    assert types == ["pod", "need", "close"]
    assert await Scheduler(pod.app).run_due(pod.clock()) == []


async def claim_from_b(pod, claim="claim1"):
    escalation = next(p for _, p in network_sent(pod) if p["type"] == "need")["id"]
    await from_bot(pod, net.payload(net.CLAIM, escalation, claim=claim, pod="tokb",
                                    name="Maple"))
    return escalation


async def test_a_claim_from_another_pod_asks_the_requester_and_introduces_them(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, f"!need food {SECRET}")
    await escalate(pod)
    escalation = await claim_from_b(pod)
    asked = bodies(pod, user_id=ALICE)[-1]
    assert "Someone from the Maple pod offered to help" in asked and "Reply yes" in asked
    await pod.say(ALICE, "yes", room=DM, direct=True)
    (answer,) = [o for o in pod.transport.sent if o.user_id == BOT_B]
    assert json.loads(answer.network) == {"v": 1, "type": "answer", "id": escalation,
                                          "claim": "claim1", "yes": True}
    assert ALICE not in answer.message.body + answer.network
    assert pod.transport.private_rooms == []  # no helper yet: nobody to invite
    await from_bot(pod, net.payload(net.HELPER, escalation, claim="claim1", person=HELPER),
                   room=BOT_DM, direct=True)
    (name, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == sorted([ALICE, HELPER])
    intro = bodies(pod, room_id="!private1:test")
    assert SECRET in intro[0]
    # The replayed helper message makes no second room.
    await from_bot(pod, net.payload(net.HELPER, escalation, claim="claim1", person=HELPER),
                   room=BOT_DM, direct=True)
    assert len(pod.transport.private_rooms) == 1
    await escalate(pod, hours=0)
    _, close = network_sent(pod)[-1]
    assert close == {"v": 1, "type": "close", "id": escalation, "claim": "claim1"}


async def test_a_decline_goes_to_the_claiming_bot_only(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    await claim_from_b(pod)
    await pod.say(ALICE, "no", room=DM, direct=True)
    (answer,) = [json.loads(o.network) for o in pod.transport.sent if o.user_id == BOT_B]
    assert answer["yes"] is False
    assert "stays open" in bodies(pod, room_id=DM)[-1]


async def test_a_helper_from_a_bot_that_did_not_claim_is_ignored(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    escalation = await claim_from_b(pod)
    await pod.say(ALICE, "yes", room=DM, direct=True)
    pod.app.config.network.bots.append("@other:bot.example")
    await from_bot(pod, net.payload(net.HELPER, escalation, claim="claim1", person=HELPER),
                   sender="@other:bot.example", room="!dm-other:test", direct=True)
    assert pod.transport.private_rooms == []


async def test_leaving_the_network_closes_the_pods_needs_there(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    reply = await pod.reply_to(CAROL, f"!network leave {ADDRESS}")
    assert "1 of its needs there were closed" in reply
    assert [p["type"] for _, p in network_sent(pod)][-1] == "close"
    assert "in no network" in await pod.reply_to(BOB, "!network")


# ---- other pods' needs coming in -------------------------------------------------------------------


async def test_another_pods_need_is_shown_once_with_matching_offers(linked):
    pod = linked
    await link(pod)
    await pod.say(BOB, "!offer food")
    await from_bot(pod, need_payload())
    shown = bodies(pod, room_id=POD)[-1].replace("`", "")
    assert shown.startswith("Maple pod needs food (urgent, north): reply !claim E1")
    assert "#1" in shown
    before = len(pod.transport.sent)
    await from_bot(pod, need_payload())  # replayed
    assert len(pod.transport.sent) == before


@pytest.mark.parametrize("sender, payload", [
    ("@mallory:other.example", need_payload()),  # not a pod bot
    (BOT_B, need_payload(urgency="very")),  # malformed
    (BOT_B, "x" * 5000),  # oversized
])
async def test_forged_or_malformed_messages_change_nothing(linked, sender, payload, caplog):
    pod = linked
    await link(pod)
    before = len(pod.transport.sent)
    await from_bot(pod, payload, sender=sender)
    assert len(pod.transport.sent) == before
    assert "ignored" in caplog.text
    assert "Maple" not in caplog.text and "north" not in caplog.text  # never the content
    assert "There is no E1" in await pod.reply_to(BOB, "!claim E1")


async def test_a_pod_over_its_hourly_limit_is_not_shown(linked):
    pod = linked
    await link(pod)
    for n in range(3):
        await from_bot(pod, need_payload(id=f"esc{n}"))
    assert sum("Maple pod needs" in b for b in bodies(pod, room_id=POD)) == 2


async def test_claiming_another_pods_need_sends_no_name_until_the_yes(linked):
    pod = linked
    await link(pod)
    await from_bot(pod, need_payload())
    reply = await pod.reply_to(BOB, "!claim E1")
    assert "told the Maple pod" in reply
    (_, claim), = [sent for sent in network_sent(pod) if sent[1]["type"] == "claim"]
    assert BOB not in json.dumps(network_sent(pod))
    assert "already offered" in await pod.reply_to(CAROL, "!claim E1")
    # A yes from some other bot is not the need's bot's: ignored.
    await from_bot(pod, net.payload(net.ANSWER, "esc1", claim=claim["claim"], yes=True),
                   sender="@mallory:other.example", room="!dm-m:test", direct=True)
    assert not [o for o in pod.transport.sent if o.user_id == BOT_B]
    await from_bot(pod, net.payload(net.ANSWER, "esc1", claim=claim["claim"], yes=True),
                   room=BOT_DM, direct=True)
    (helper,) = [json.loads(o.network) for o in pod.transport.sent if o.user_id == BOT_B]
    assert helper["type"] == "helper" and helper["person"] == BOB
    assert "E1 is being handled" in bodies(pod, room_id=POD)[-1]
    assert "said yes" in bodies(pod, user_id=BOB)[-1]
    # An answer in the network room, where it does not belong, is ignored.
    before = len(pod.transport.sent)
    await from_bot(pod, net.payload(net.ANSWER, "esc1", claim=claim["claim"], yes=False))
    assert len(pod.transport.sent) == before


async def test_a_need_closed_in_its_pod_closes_here(linked):
    pod = linked
    await link(pod)
    await from_bot(pod, need_payload())
    await from_bot(pod, net.payload(net.CLOSE, "esc1"))
    assert "E1 (Maple pod) is closed" in bodies(pod, room_id=POD)[-1]
    assert "E1** is closed" in await pod.reply_to(BOB, "!claim E1")


async def test_forgetme_erases_a_helpers_claims(linked):
    pod = linked
    await link(pod)
    await from_bot(pod, need_payload())
    await pod.say(BOB, "!claim E1")
    async with pod.storage.transaction() as tx:
        assert (await tx.privacy.table_rows_mentioning(BOB))["remote_claims"] == 1
    await pod.say(BOB, "!forgetme", room="!dm-bob:test", direct=True)
    await pod.say(BOB, "yes", room="!dm-bob:test", direct=True)
    async with pod.storage.transaction() as tx:
        assert (await tx.privacy.table_rows_mentioning(BOB))["remote_claims"] == 0


async def test_a_close_naming_the_accepted_claim_leaves_its_answer_to_come(linked):
    """The need's bot closes it in the network room as soon as the requester says yes; the
    answer comes by the bots' direct chat, maybe later: the helper still gets it."""
    pod = linked
    await link(pod)
    await from_bot(pod, need_payload())
    await pod.say(BOB, "!claim E1")
    (_, claim), = [sent for sent in network_sent(pod) if sent[1]["type"] == "claim"]
    await from_bot(pod, net.payload(net.CLOSE, "esc1", claim=claim["claim"]))
    assert not any("closed" in body for body in bodies(pod, room_id=POD))
    assert not bodies(pod, user_id=BOB)
    await from_bot(pod, net.payload(net.ANSWER, "esc1", claim=claim["claim"], yes=True),
                   room=BOT_DM, direct=True)
    assert "said yes" in bodies(pod, user_id=BOB)[-1]
    assert "E1 is being handled" in bodies(pod, room_id=POD)[-1]


async def test_leaving_withdraws_offers_made_here_on_other_pods_needs(linked):
    pod = linked
    await link(pod)
    await from_bot(pod, need_payload())
    await pod.say(BOB, "!claim E1")
    (_, claim), = [sent for sent in network_sent(pod) if sent[1]["type"] == "claim"]
    await pod.say(CAROL, f"!network leave {ADDRESS}")
    _, withdraw = network_sent(pod)[-1]
    assert withdraw == {"v": 1, "type": "withdraw", "id": "esc1", "claim": claim["claim"]}
    assert "withdrawn" in bodies(pod, user_id=BOB)[-1]
    before = len(pod.transport.sent)
    await from_bot(pod, need_payload(id="esc2"))  # no longer linked: not shown
    assert len(pod.transport.sent) == before


async def test_an_offer_withdrawn_by_a_pod_that_left_is_no_longer_waiting(linked):
    pod = linked
    await link(pod)
    await pod.say(ALICE, "!need food")
    await escalate(pod)
    escalation = await claim_from_b(pod)
    await from_bot(pod, net.payload(net.WITHDRAW, escalation, claim="claim1"))
    assert "withdrawn" in bodies(pod, user_id=ALICE)[-1]
    await pod.say(ALICE, "yes", room=DM, direct=True)  # no offer waits for it any more
    assert not [o for o in pod.transport.sent if o.user_id == BOT_B]
