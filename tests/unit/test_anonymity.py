"""An anonymous requester's own commands in the pod room never unmask them: the room gets what
any member would get, the requester the rest by direct message."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.config import BotConfig
from bot.models import Category, Post, PostKind, PostStatus, Urgency
from bot.scheduler import EXPIRED, EXPIRY_WARNING, Due, messages_for

from .conftest import ALICE, BOB, DM, POD, SECRET


async def anonymous_request(pod):
    for answer in ("food", SECRET, "1", "1", "yes"):  # step 5, answer 1: anonymous
        await pod.say(ALICE, answer, room=DM, direct=True)


def in_room(sent):
    return [o.message.body for o in sent if o.room_id == POD and o.redacts is None]


async def test_commands_about_an_anonymous_request_are_answered_by_dm(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    for command in ("!claim 1", "!renew 1", "!done 1", "!cancel 1"):
        by_alice = await pod.say(ALICE, command)
        by_bob = await pod.say(BOB, command)
        assert in_room(by_alice) == in_room(by_bob) == [], command  # the room sees nothing
        to_alice = [o.message.body for o in by_alice if o.user_id == ALICE]
        assert len(to_alice) == 1 and "your anonymous request" in to_alice[0], command
        assert len([o for o in by_bob if o.user_id == BOB]) == 1, command
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    assert post.status is PostStatus.OPEN  # the requester's word counts only in the DM
    # the requester's own claim asked nobody; bob's did
    asked = [o for o in pod.transport.sent if o.user_id == ALICE and "offered to help" in
             o.message.body]
    assert len(asked) == 1 and BOB in asked[0].message.body


async def test_a_coordinator_closing_it_in_the_pod_is_answered_by_dm(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    pod.transport.power_levels[BOB] = 50
    sent = await pod.say(BOB, "!cancel 1")
    assert in_room(sent) == ["**#1** was withdrawn."]
    assert [o.message.body for o in sent if o.user_id == BOB] == ["**#1** cancelled."]


async def test_mine_in_the_pod_never_lists_an_anonymous_request(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    await pod.say(ALICE, "!need bread")
    listing = await pod.reply_to(ALICE, "!mine")
    assert "#2" in listing and "#1" not in listing
    assert "#1" in await pod.reply_to(ALICE, "!mine", room=DM, direct=True)


async def test_requester_closes_from_the_dm_and_the_pod_hears_only_the_number(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    sent = await pod.say(ALICE, "!renew 1", room=DM, direct=True)
    assert "renewed" in sent[0].message.body and sent[0].room_id == DM
    sent = await pod.say(ALICE, "!done 1", room=DM, direct=True)
    assert in_room(sent) == ["**#1** is done. Thank you!"]


async def test_the_helper_closing_an_anonymous_request_does_not_name_the_requester(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    await pod.say(BOB, "!claim 1")
    await pod.say(ALICE, "yes", room=DM, direct=True)
    sent = await pod.say(BOB, "!done 1")
    assert in_room(sent) == ["**#1** is done. Thank you!"]
    assert ALICE not in " ".join(o.message.body for o in sent)


async def test_forgetme_never_links_anonymous_and_public_posts(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    await pod.say(ALICE, "!need bread")
    await pod.say(ALICE, "!forgetme", room=DM, direct=True)
    sent = await pod.say(ALICE, "yes", room=DM, direct=True)
    assert in_room(sent) == ["**#2** was withdrawn."]
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.CANCELLED


def test_expiry_messages_point_a_private_request_to_the_dm():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    for private, where in ((True, "here."), (False, "in the room where you posted it.")):
        post = Post(id=1, room_id=POD, number=1, kind=PostKind.NEED, author=ALICE,
                    category=Category.FOOD, urgency=Urgency.TODAY, text="x", status=PostStatus.OPEN,
                    created_at=now, private=private, anonymous=private)
        for kind in (EXPIRY_WARNING, EXPIRED):
            due = Due(kind, "1", "", "", ALICE, now, "send", POD, post=post)
            (message,) = messages_for(due, now, BotConfig())
            assert message.user_id == ALICE and message.message.body.endswith(where), kind


async def test_a_named_private_request_is_still_its_requesters_in_the_pod(pod_rooms):
    pod = pod_rooms
    for answer in ("food", SECRET, "1", "2", "yes"):  # step 5, answer 2: with their name
        await pod.say(ALICE, answer, room=DM, direct=True)
    assert "your own post" in await pod.reply_to(ALICE, "!claim 1")
