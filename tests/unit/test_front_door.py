"""The front door: people who share no pod with the bot ask for help by DM, name their area, and
the request goes to the pod that covers it; per-person limits; coordinators' blocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot import front_door
from bot import intake_rules as rules
from bot import pod_network as net
from bot.config import BotConfig, MatrixConfig
from bot.models import Category
from bot.pods import PodProfile
from bot.retention import sweep
from bot.scheduler import Scheduler

from .conftest import ALICE, BOB, CAROL, POD, SECRET
from .test_network import ADDRESS, BOT_B, BOT_DM, HELPER, NETWORK, from_bot, network_sent

DORA = "@dora:elsewhere.example"  # in no pod, on another homeserver
DORA_DM = "!dm-dora:elsewhere.example"
COORD_DM = "!dm-carol:test"
OTHER_POD = "!other:test"
CITYWIDE = "!citywide:test"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

COVERED = front_door.coverage(
    [PodProfile(POD, "Elm Street", ("north", "riverside")),
     PodProfile(OTHER_POD, "Oak Lane", ("riverside", "hillside"))],
    PodProfile(CITYWIDE, "Citywide", ()))


# ---- pure rules -----------------------------------------------------------------------------


def test_a_zone_goes_to_the_first_pod_covering_it_and_anything_else_to_the_fallback():
    assert COVERED.zones == ["hillside", "north", "riverside"]
    assert front_door.route("riverside", COVERED) == front_door.Route(OTHER_POD, "riverside",
                                                                      covered=True)
    assert front_door.route("north", COVERED).room_id == POD
    assert front_door.route("docklands", COVERED) == front_door.Route(CITYWIDE, "docklands",
                                                                      covered=False)
    assert front_door.route(None, COVERED).room_id == CITYWIDE
    nowhere = front_door.coverage([PodProfile(POD, None, ("north",))], None)
    assert front_door.route("docklands", nowhere) is None


def test_an_uncovered_area_escalates_at_once_only_when_the_fallback_is_in_a_network():
    networked = front_door.coverage(
        [PodProfile(POD, "Elm Street", ("north",))], PodProfile(CITYWIDE, "Citywide", ()),
        nearby=["docklands", "north"], networked=True)
    assert networked.zones == ["docklands", "north"]  # other pods' zones are offered too
    assert front_door.route("north", networked).escalates_at_once is False
    assert front_door.route("docklands", networked).escalates_at_once is True
    assert front_door.route(None, networked).escalates_at_once is True
    assert front_door.route("docklands", COVERED).escalates_at_once is False  # in no network
    many = front_door.coverage([], PodProfile(CITYWIDE, "Citywide", ()),
                               nearby=[f"zone{n}" for n in range(99)], networked=True)
    assert len(many.zones) == front_door.MAX_AREAS
    # Without a fallback there is nowhere to send an uncovered request: no network zones.
    assert front_door.coverage([], None, nearby=["docklands"], networked=True).zones == []


def test_limits_count_open_requests_and_the_last_day():
    limits = front_door.Limits(max_open=2, max_per_day=3)
    assert front_door.limit_reply(1, [NOW - timedelta(hours=1)], limits, NOW) is None
    assert "2 requests open" in front_door.limit_reply(2, [], limits, NOW)
    made = [NOW - timedelta(hours=h) for h in (30, 20, 5, 1)]  # three in the last day
    reply = front_door.limit_reply(0, made, limits, NOW)
    assert "3 requests in the last day" in reply and "about 4 hours" in reply
    assert "not taking requests" in front_door.limit_reply(
        0, [], front_door.Limits(max_open=0, max_per_day=3), NOW)


def _front_door_walk(*answers):
    turn = rules.start([], Category.FOOD, SECRET, front_door=COVERED)
    turn = rules.advance(turn.state, "1")  # urgency: today
    for answer in answers:
        turn = rules.advance(turn.state, answer)
    return turn


def test_rules_ask_the_area_from_a_numbered_list_and_post_anonymously():
    asked = _front_door_walk()
    assert asked.state.step is rules.Step.AREA
    assert "1. hillside\n2. north\n3. riverside\n4. none of these" in asked.prompt
    turn = _front_door_walk("3")
    assert (turn.state.room_id, turn.state.zone) == (OTHER_POD, "riverside")
    assert turn.state.anonymous and not turn.state.details_shown
    assert "to Oak Lane, zone riverside, shown anonymously, details private" in turn.prompt
    assert rules.advance(turn.state, "yes").outcome is rules.Outcome.CONFIRMED
    assert _front_door_walk("North").state.room_id == POD


def test_rules_none_of_these_asks_the_area_by_name_and_refuse_an_address():
    turn = _front_door_walk("4")
    assert turn.state.step is rules.Step.AREA_NAME
    refused = rules.advance(turn.state, "12 Elm Street")
    assert refused.state.step is rules.Step.AREA_NAME and "no street names" in refused.prompt
    turn = rules.advance(turn.state, "Docklands")
    assert (turn.state.room_id, turn.state.zone) == (CITYWIDE, "docklands")
    assert "No pod lists docklands, so I will pass it to Citywide" in turn.prompt
    assert "to Citywide, zone docklands" in turn.prompt
    assert _front_door_walk("none of these", "skip").state.zone is None
    assert _front_door_walk("docklands").state.room_id == CITYWIDE  # named straight away


def test_rules_with_nowhere_to_send_it_end_the_conversation():
    nowhere = front_door.coverage([PodProfile(POD, None, ("north",))], None)
    turn = rules.start([], Category.FOOD, "bread", front_door=nowhere)
    turn = rules.advance(rules.advance(turn.state, "3").state, "docklands")
    assert turn.outcome is rules.Outcome.NO_POD and "No pod I know covers docklands" in turn.prompt
    empty = rules.start([], Category.FOOD, "bread", front_door=front_door.Coverage())
    assert rules.advance(empty.state, "3").outcome is rules.Outcome.NO_POD


def test_direct_chat_invites_are_open_to_anyone_by_default_and_group_rooms_are_not():
    matrix = MatrixConfig(homeserver="http://127.0.0.1:1", user_id="@bot:test",
                          password={"env": "X"}, store_passphrase={"env": "X"})
    assert matrix.inviter_allowed(DORA, direct=True)
    assert not matrix.inviter_allowed(DORA)
    assert matrix.inviter_allowed(ALICE)
    closed = matrix.model_copy(update={"direct_chat_inviters": [":friendly.example"]})
    assert not closed.inviter_allowed(DORA, direct=True)
    assert closed.inviter_allowed("@eve:friendly.example", direct=True)
    with pytest.raises(ValueError, match="anyone"):
        MatrixConfig.model_validate({**matrix.model_dump(), "direct_chat_inviters": ["eve"]})
    with pytest.raises(ValueError, match="room id"):
        BotConfig.model_validate({"front_door": {"default_pod": "#citywide:test"}})


# ---- through the app ------------------------------------------------------------------------


@pytest.fixture
async def door(pod_rooms):
    """The pod (zones north, riverside; Carol coordinates it) and Dora, in no pod, in her DM."""
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    pod.transport.rooms[DORA_DM] = [DORA]
    pod.transport.rooms[COORD_DM] = [CAROL]
    await pod.say(CAROL, "!pod name Elm Street")
    await pod.say(CAROL, "!pod zones north, riverside")
    await pod.say(CAROL, "hello", room=COORD_DM, direct=True)  # her DM is known as one
    await pod.say(CAROL, "stop", room=COORD_DM, direct=True)
    return pod


async def from_dora(pod, text):
    sent = await pod.say(DORA, text, room=DORA_DM, direct=True)
    return [o.message.body.replace("**", "") for o in sent if o.room_id == DORA_DM]


async def ask_as_dora(pod, area="2"):
    replies = [await from_dora(pod, text) for text in ("hi", "food", SECRET, "1", area, "yes")]
    return replies


async def test_a_person_in_no_pod_is_asked_their_area_and_introduced_on_consent(door):
    pod = door
    replies = await ask_as_dora(pod)
    assert "a mutual-aid pod near you" in replies[0][0]
    assert "1. north\n2. riverside\n3. none of these" in replies[3][0]
    assert "to Elm Street, zone riverside, shown anonymously" in replies[4][0]
    assert "Posted as #1" in replies[5][0]
    notice = [o for o in pod.transport.sent if o.room_id == POD][-1]
    assert notice.message.body.replace("**", "").startswith(
        "#1 Someone needs: food (urgent, riverside).")
    assert DORA not in notice.message.body and SECRET not in notice.message.body
    assert notice.message.mentions == ()
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    assert (post.author, post.zone, post.private, post.anonymous) == (DORA, "riverside", True,
                                                                      True)

    claimed = await pod.say(BOB, "!claim 1")
    ask = [o for o in claimed if o.user_id == DORA]
    assert "Reply yes" in ask[0].message.body
    await from_dora(pod, "yes")
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == sorted([DORA, BOB])
    intro = [o for o in pod.transport.sent if o.room_id == "!private1:test"]
    assert SECRET in intro[0].message.body
    assert all(DORA not in o.message.body and SECRET not in o.message.body
               for o in pod.transport.sent if o.room_id == POD)


async def test_an_area_no_pod_covers_goes_to_the_configured_pod_with_its_zone(door):
    pod = door
    pod.app.config.front_door.default_pod = CITYWIDE
    pod.transport.rooms[CITYWIDE] = [BOB]
    replies = [await from_dora(pod, text)
               for text in ("!need food bread", "3", "3", "docklands", "yes")]
    assert "Posted as #1" in replies[-1][0]
    notice = [o for o in pod.transport.sent if o.room_id == CITYWIDE]
    assert "Someone needs: food (whenever, docklands)" in notice[0].message.body
    # Citywide is in no network: its coordinators are told, and the request waits there.
    assert "This pod is in no network" in notice[0].message.body
    assert "!network join" in notice[0].message.body
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(CITYWIDE, 1)
    assert (post.zone, post.escalate_at) == ("docklands", None)  # today's delay, if ever linked


async def test_without_a_default_pod_an_uncovered_area_is_told_so(door):
    replies = [await from_dora(door, text) for text in ("food", "bread", "3", "docklands")]
    assert "No pod I know covers docklands" in replies[-1][0]
    async with door.storage.transaction() as tx:
        assert await tx.privacy.intake(DORA) is None


async def test_one_person_cannot_flood_the_pods(door):
    pod = door
    pod.app.config.front_door.max_open_requests = 1
    await ask_as_dora(pod)
    refused = await from_dora(pod, "hi")
    assert "1 requests open" in refused[0] and "!cancel" in refused[0]
    await from_dora(pod, "!cancel 1")
    pod.app.config.front_door.max_requests_per_day = 1
    refused = await from_dora(pod, "hi")
    assert "in the last day" in refused[0]
    pod.clock.advance(hours=25)
    assert "What kind of help" in (await from_dora(pod, "hi"))[0]
    # members of a pod are not limited: they are known to their pod
    pod.app.config.front_door.max_open_requests = 0
    assert "What kind of help" in (await door.say(ALICE, "hi", room="!dm-alice:test",
                                                  direct=True))[0].message.body


async def test_a_blocked_sender_is_ignored_without_being_told_and_can_still_be_forgotten(door):
    pod = door
    await ask_as_dora(pod)
    assert "A coordinator is needed" in await pod.reply_to(BOB, "!block #1")
    blocked = await pod.reply_to(CAROL, "!block #1")
    assert "Blocked the sender of #1" in blocked and DORA not in blocked
    assert await pod.say(DORA, "hello?", room=DORA_DM, direct=True) == []
    assert await pod.say(DORA, "!need food", room=DORA_DM, direct=True) == []
    assert await pod.say(DORA, "!help", room=DORA_DM, direct=True) == []

    # a coordinator lists blocks in her DM: a block made from a request does not name the sender
    listing = await pod.reply_to(CAROL, "!blocks", room=COORD_DM, direct=True)
    assert "the sender of #1 in Elm Street" in listing and DORA not in listing
    assert "only in our direct chat" in await pod.reply_to(CAROL, "!blocks")
    assert "already blocked" in await pod.reply_to(CAROL, f"!block {DORA}", room=COORD_DM,
                                                    direct=True)

    # !forgetme still works; the block (her id and its date) is what it keeps
    question = (await from_dora(pod, "!forgetme"))[0]
    assert "a coordinator's block on your direct messages" in question and "Reply yes" in question
    await from_dora(pod, "yes")
    async with pod.storage.transaction() as tx:
        assert await tx.privacy.table_rows_mentioning(DORA) == {
            **{t: 0 for t in await tx.privacy.table_rows_mentioning(DORA)}, "blocks": 1}
        assert await tx.front_door.is_blocked(DORA)

    assert "A coordinator is needed" in await pod.reply_to(BOB, "!unblock #1")
    assert "Unblocked" in await pod.reply_to(CAROL, "!unblock #1")
    assert "What kind of help" in (await from_dora(pod, "hi"))[0]


async def test_block_by_id_in_a_coordinators_dm_and_bad_input_gets_usage(door):
    pod = door
    assert "Blocked @spam:x.example" in await pod.reply_to(CAROL, "!block @spam:x.example",
                                                           room=COORD_DM, direct=True)
    assert "Usage: `!block" in await pod.reply_to(CAROL, "!block someone")
    assert "Usage: `!block" in await pod.reply_to(CAROL, "!block #1", room=COORD_DM, direct=True)
    assert "Usage: `!block" in await pod.reply_to(CAROL, "!block #99")
    assert "A coordinator is needed" in await pod.reply_to(ALICE, "!block @spam:x.example",
                                                           room="!dm-alice:test", direct=True)
    assert "not blocked" in await pod.reply_to(CAROL, "!unblock @other:x.example")


async def test_a_block_lapses_after_block_days_and_a_coordinators_forgetme_blanks_it(door):
    pod = door
    await pod.say(CAROL, f"!block {DORA}")
    await pod.say(CAROL, "!forgetme", room=COORD_DM, direct=True)
    await pod.say(CAROL, "yes", room=COORD_DM, direct=True)
    async with pod.storage.transaction() as tx:
        [entry] = await tx.front_door.blocks(10)
    assert entry.person == DORA and entry.blocked_by == ""
    pod.clock.advance(days=pod.app.config.front_door.block_days + 1)
    await sweep(pod.storage, pod.app.config, pod.clock())
    async with pod.storage.transaction() as tx:
        assert not await tx.front_door.is_blocked(DORA)


# ---- an area no pod covers: the network, at once ------------------------------------------


@pytest.fixture
async def networked(door):
    """The front door's fallback, Citywide (Carol coordinates it too), is linked to a network
    that bot B's pods are in; Elm Street, which covers north and riverside, is in none."""
    pod = door
    pod.app.config.front_door.default_pod = CITYWIDE
    pod.app.config.network.bots = [BOT_B]
    pod.transport.rooms[CITYWIDE] = [BOB, CAROL]
    pod.transport.joinable[ADDRESS] = NETWORK
    await pod.say(CAROL, "!pod name Citywide", room=CITYWIDE)
    await pod.say(CAROL, f"!network join {ADDRESS}", room=CITYWIDE)
    assert "now linked" in [o for o in pod.transport.sent if o.room_id == CITYWIDE][-1].message.body
    return pod


def needs_sent(pod):
    return [(body, payload) for body, payload in network_sent(pod) if payload["type"] == "need"]


async def test_an_uncovered_area_goes_to_the_network_at_once_with_nothing_personal(networked):
    pod = networked
    replies = await ask_as_dora(pod, area="docklands")
    assert "None of my pods covers docklands, so I will pass it to the pods nearby at once" in (
        replies[4][0])
    reply = replies[5][0]
    assert "Passed on as #1 to the pods nearby" in reply
    assert "nobody learns who you are before you say yes" in reply
    notice = [o.message.body.replace("**", "") for o in pod.transport.sent
              if o.room_id == CITYWIDE][-1]
    assert notice.startswith("#1 Someone needs: food (urgent, docklands).")
    assert "goes to this pod's networks at once" in notice
    assert DORA not in notice and SECRET not in notice

    # No delay: the scheduler's next run is now, and that run sends it.
    scheduler = Scheduler(pod.app)
    assert await scheduler.next_wake(pod.clock()) == pod.clock()
    assert [item.kind for item in await scheduler.run_due(pod.clock())] == ["escalate"]
    await pod.app.run_until_idle()
    (body, payload), = needs_sent(pod)
    assert body == "Citywide pod needs food (urgent, docklands)"
    assert (payload["category"], payload["urgency"], payload["zone"]) == ("food", 2, "docklands")
    everything = str(network_sent(pod))
    assert DORA not in everything and SECRET not in everything
    # The pod was told when it was posted; the escalation adds no second word there.
    assert not any("is still unmatched" in o.message.body for o in pod.transport.sent)
    assert await scheduler.run_due(pod.clock()) == []  # once


async def test_a_claim_from_another_pod_reaches_the_person_in_the_same_dm(networked):
    pod = networked
    await ask_as_dora(pod, area="docklands")
    await Scheduler(pod.app).run_due(pod.clock())
    await pod.app.run_until_idle()
    (_, need), = needs_sent(pod)
    await from_bot(pod, net.payload(net.CLAIM, need["id"], claim="claim1", pod="tokb",
                                    name="Maple"))
    asked = [o.message.body for o in pod.transport.sent if o.user_id == DORA][-1]
    assert "Someone from the Maple pod offered to help" in asked and "Reply yes" in asked
    await from_dora(pod, "yes")
    (answer,) = [o for o in pod.transport.sent if o.user_id == BOT_B]
    assert net.parse(answer.network).yes is True and DORA not in answer.network
    await from_bot(pod, net.payload(net.HELPER, need["id"], claim="claim1", person=HELPER),
                   room=BOT_DM, direct=True)
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == sorted([DORA, HELPER])  # she joins no room but this one


async def test_zones_other_pods_announced_are_offered_and_go_to_the_network(networked):
    pod = networked
    await from_bot(pod, net.payload(net.POD, "tokb", name="Maple", zones=["docklands", "north"]))
    replies = await ask_as_dora(pod, area="1")
    assert "1. docklands\n2. north\n3. riverside\n4. none of these" in replies[3][0]
    assert "pods nearby at once" in replies[4][0]
    await Scheduler(pod.app).run_due(pod.clock())
    await pod.app.run_until_idle()
    assert needs_sent(pod)[0][1]["zone"] == "docklands"
    # A zone one of this bot's pods covers still goes to that pod, and waits as ever.
    await from_dora(pod, "!cancel 1")
    replies = await ask_as_dora(pod, area="2")
    assert "Posted as #1" in replies[5][0]
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    assert (post.zone, post.escalate_at) == ("north", None)
    assert not any("networks" in o.message.body for o in pod.transport.sent if o.room_id == POD)


async def test_a_front_door_flood_keeps_to_the_pods_hourly_limit(networked):
    pod = networked
    pod.app.config.network.escalations_per_hour = 1
    await ask_as_dora(pod, area="docklands")
    await ask_as_dora(pod, area="skip")
    scheduler = Scheduler(pod.app)
    assert len(await scheduler.run_due(pod.clock())) == 1
    pod.clock.advance(minutes=30)
    assert await scheduler.run_due(pod.clock()) == []
    pod.clock.advance(minutes=31)
    assert len(await scheduler.run_due(pod.clock())) == 1
