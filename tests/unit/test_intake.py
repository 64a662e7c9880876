"""Private intake by DM, redacted pod notices, consent and introductions (fake transport)."""

from __future__ import annotations

import pytest

from bot import intake_rules as rules
from bot.commands.intake import expire_idle
from bot.models import Category, Urgency

from .conftest import ALICE, BOB, CAROL, DM, POD, SECRET


async def dm(pod, text, sender=ALICE, room=DM):
    sent = await pod.say(sender, text, room=room, direct=True)
    return [o.message.body.replace("**", "") for o in sent if o.room_id == room]


async def intake(pod, *answers):
    replies = []
    for answer in answers:
        replies.append(await dm(pod, answer))
    return replies


def pod_bodies(pod):
    return [o.message.body.replace("**", "") for o in pod.transport.sent if o.room_id == POD]


# ---- pure steps ---------------------------------------------------------------------------------


def test_rules_walk_through_every_step_with_several_pods():
    turn = rules.start([("!a", "North"), ("!b", "South")])
    assert turn.state.step is rules.Step.CATEGORY
    turn = rules.advance(turn.state, "medicine")
    assert turn.state.category is Category.MEDICAL and turn.state.step is rules.Step.DETAILS
    turn = rules.advance(turn.state, SECRET)
    turn = rules.advance(turn.state, "today")
    assert turn.state.urgency is Urgency.TODAY and turn.state.step is rules.Step.POD
    assert "1. North" in turn.prompt and "2. South" in turn.prompt
    assert rules.advance(turn.state, "7").state.step is rules.Step.POD
    for odd in ("²", "0", "-1", "9" * 5000):  # a digit int() can't read, out of range, huge
        assert rules.advance(turn.state, odd).state.step is rules.Step.POD
    assert rules.advance(turn.state, "٢").state.room_id == "!b"  # Arabic-Indic two
    turn = rules.advance(turn.state, "2")
    assert turn.state.room_id == "!b"
    turn = rules.advance(turn.state, "4")
    assert (turn.state.anonymous, turn.state.details_shown) == (False, True)
    assert SECRET in turn.prompt and "South" in turn.prompt
    assert rules.advance(turn.state, "yes").outcome is rules.Outcome.CONFIRMED


@pytest.mark.parametrize("word", ["stop", "!cancel", "Cancel", "STOP."])
def test_rules_stop_at_any_step(word):
    turn = rules.start([("!a", "North")])
    for answer in ("food", "bread", "1"):
        assert rules.advance(turn.state, word).outcome is rules.Outcome.CANCELLED
        turn = rules.advance(turn.state, answer)


def test_rules_without_a_pod_end_the_conversation():
    turn = rules.start([], Category.FOOD, "bread")
    assert rules.advance(turn.state, "3").outcome is rules.Outcome.NO_POD


# ---- the conversation through the app -----------------------------------------------------------


async def test_dm_intake_posts_only_a_redacted_notice(pod_rooms):
    pod = pod_rooms
    replies = await intake(pod, "hi", "groceries", SECRET, "1", "", "yes")
    assert "What kind of help" in replies[0][0]
    assert "Tell me the details" in replies[1][0]
    assert SECRET in replies[4][0]  # the summary, in the DM only
    assert "Posted as #1" in replies[5][0]
    notices = pod_bodies(pod)
    assert notices == ["#1 Someone needs: food (urgent). Reply `!claim 1` to help."]
    listing = await pod.reply_to(BOB, "!needs")
    assert SECRET not in listing and "details private" in listing and ALICE not in listing
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
        assert await tx.privacy.intake(ALICE) is None
    assert post.private and post.anonymous and post.text == SECRET


async def test_named_with_details_when_chosen(pod_rooms):
    pod = pod_rooms
    await intake(pod, "!need ride to the clinic on friday", "2", "4", "yes")
    (notice,) = [o for o in pod.transport.sent if o.room_id == POD]
    assert ALICE in notice.message.mentions
    assert "ride to the clinic on friday" in notice.message.body


async def test_abort_and_cancel_at_any_step(pod_rooms):
    pod = pod_rooms
    replies = await intake(pod, "hello", "food", "stop")
    assert "Nothing was posted" in replies[-1][0]
    replies = await intake(pod, "hello", "!cancel")
    assert "Nothing was posted" in replies[-1][0]
    async with pod.storage.transaction() as tx:
        assert await tx.privacy.intake(ALICE) is None
        assert await tx.posts.list(POD) == []
    assert pod_bodies(pod) == []


async def test_conversation_survives_a_restart(pod_rooms, tmp_path):
    from bot.app import App
    from bot.storage import Storage

    pod = pod_rooms
    await intake(pod, "hello", "food")
    await pod.app.stop()
    await pod.storage.close()
    pod.storage = await Storage.open(tmp_path / "bot.db")
    pod.app = App(pod.storage, pod.app.config, pod.transport, clock=pod.clock)
    replies = await intake(pod, "bread and milk", "3", "1", "yes")
    assert "Posted as #1" in replies[-1][0]


async def test_idle_conversation_times_out(pod_rooms):
    pod = pod_rooms
    await intake(pod, "hello", "food")
    pod.clock.advance(minutes=31)
    replies = await dm(pod, "bread")
    assert "dropped our unfinished conversation after 30 minutes" in replies[0]
    async with pod.storage.transaction() as tx:
        assert await tx.privacy.intake(ALICE) is None


async def test_idle_conversations_expire_from_a_periodic_job(pod_rooms):
    pod = pod_rooms
    await intake(pod, "hello")
    assert await expire_idle(pod.storage, pod.app.config, pod.clock()) == 0
    pod.clock.advance(minutes=45)
    assert await expire_idle(pod.storage, pod.app.config, pod.clock()) == 1
    await pod.app.run_until_idle()
    assert "dropped our unfinished conversation" in pod.transport.sent[-1].message.body
    assert pod.transport.sent[-1].user_id == ALICE  # her direct chat, where she talked


async def test_claim_asks_consent_then_introduces_in_a_private_room(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    claimed = await pod.say(BOB, "!claim 1")
    # about an anonymous request, the helper is answered by DM: the room sees nothing
    assert [o for o in claimed if o.room_id == POD] == []
    thanks = [o.message.body.replace("**", "") for o in claimed if o.user_id == BOB]
    assert "asked the person behind #1 privately" in thanks[0]
    ask = [o for o in claimed if o.user_id == ALICE]
    assert BOB in ask[0].message.body and "Reply yes" in ask[0].message.body
    again = await pod.say(CAROL, "!claim 1")
    assert ["already offered" in o.message.body for o in again] == [True]
    assert again[0].user_id == CAROL
    await dm(pod, "yes")
    (name, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == [ALICE, BOB] and ALICE not in name and "1" in name
    intro = [o for o in pod.transport.sent if o.room_id == "!private1:test"]
    assert SECRET in intro[0].message.body
    assert set(intro[0].message.mentions) == {ALICE, BOB}
    assert pod_bodies(pod)[-1] == "#1 is being handled."
    assert all(SECRET not in body for body in pod_bodies(pod))
    done = await pod.say(ALICE, "!done 1", room="!private1:test")
    assert "marked done" in done[0].message.body
    assert pod_bodies(pod)[-1] == "#1 is done. Thank you!"


async def test_declining_keeps_the_request_open(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    replies = await dm(pod, "no")
    assert "declined" in replies[0]
    assert pod.transport.private_rooms == []
    assert BOB in [o.user_id for o in pod.transport.sent]
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "open"


async def test_intro_includes_a_coordinator_when_configured(pod_rooms):
    pod = pod_rooms
    pod.app.config.privacy.intro_with_coordinator = True
    pod.transport.power_levels[CAROL] = 50
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    await dm(pod, "yes 1")
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == [ALICE, BOB, CAROL]


async def test_matching_offer_asks_requester_without_naming_them_in_the_pod(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    sent = await pod.say(BOB, "!offer food from my garden")
    assert any(o.user_id == ALICE and "food from my garden" in o.message.body for o in sent)
    assert all(ALICE not in o.message.body and SECRET not in o.message.body
               for o in sent if o.room_id == POD)


async def test_withdraw_private_request_from_the_dm(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    replies = await dm(pod, "!cancel 1")
    assert "cancelled" in replies[0]
    assert pod_bodies(pod)[-1] == "#1 was withdrawn."


async def test_redacting_the_need_message_cancels_the_post(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries")
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    sent = await pod.redact(ALICE, post.event_id)
    assert "#1** was withdrawn" in sent[-1].message.body
    assert pod.transport.redactions == [(POD, "$sent1")]  # the bot's "Noted" reply goes too
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "cancelled"
    # someone else's redaction of it changes nothing (and is handled once)
    await pod.say(ALICE, "!need bread")
    async with pod.storage.transaction() as tx:
        other = await tx.posts.by_number(POD, 2)
    assert await pod.redact(BOB, other.event_id) == []


async def test_pod_setting_for_a_coordinator_in_intros_is_for_coordinators(pod_rooms):
    pod = pod_rooms
    refused = await pod.reply_to(BOB, "!settings intro_with_coordinator on")
    assert "coordinator is needed" in refused
    pod.transport.power_levels[CAROL] = 50
    assert "now **on**" in await pod.reply_to(CAROL, "!settings intro_with_coordinator on")
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    await dm(pod, "yes")
    (_, invitees), = pod.transport.private_rooms
    assert sorted(invitees) == [ALICE, BOB, CAROL]


async def test_dm_and_introduction_rooms_are_never_offered_as_pods(pod_rooms):
    pod = pod_rooms
    await intake(pod, "food", SECRET, "2", "1", "yes")
    await pod.say(BOB, "!claim 1")
    await dm(pod, "yes")
    pod.transport.rooms["!private1:test"] = [ALICE, BOB]
    pod.transport.rooms["!dm-old:test"] = [ALICE]
    await dm(pod, "hi", room="!dm-old:test")  # another DM of hers; becomes a known private room
    await dm(pod, "stop", room="!dm-old:test")
    await dm(pod, "!forgetme")
    await dm(pod, "yes")  # introductions and DM records are gone now
    replies = await intake(pod, "food", "bread", "1")
    assert "How should it appear" in replies[-1][0]  # one pod only: no question which


async def test_need_in_a_dm_never_makes_a_public_post(pod_rooms):
    pod = pod_rooms
    await intake(pod, "hello")
    replies = await dm(pod, "!need groceries for my kids")
    assert "private request for food" in replies[0]
    assert "Offers are posted in your pod room" in (await dm(pod, "!offer a drill"))[0]
    async with pod.storage.transaction() as tx:
        assert await tx.posts.list(DM) == []
