"""Reactions as answers: ✋ claims and ✅ closes a need or offer, on its command or on the bot's
answer to it, with the commands' rules and replies; anything else is ignored, and a reaction
never unmasks an anonymous requester."""

from __future__ import annotations

from itertools import count

from bot.commands.reactions import meaning
from bot.messages import Reaction
from bot.models import PostStatus

from .conftest import ALICE, BOB, CAROL, DM, POD
from .test_anonymity import anonymous_request

_ids = count(1)


async def react(pod, sender, event_id, key, room=POD, direct=False):
    return await pod.receive(Reaction(f"$re{next(_ids)}", room, sender, event_id, key, direct,
                                      pod.clock()))


async def status(pod, number=1):
    async with pod.storage.transaction() as tx:
        return (await tx.posts.by_number(POD, number)).status


async def test_a_raised_hand_claims_and_a_tick_by_the_poster_closes(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries for a family of 4")  # $ev1, answered by $sent1
    [claimed] = await react(pod, BOB, "$ev1", "✋🏾")
    assert claimed.room_id == POD and claimed.reply_to == "$ev1"
    assert "**#1** is claimed. @alice:test: @bob:test will help with your need" in (
        claimed.message.body)
    assert await status(pod) is PostStatus.CLAIMED
    [again] = await react(pod, CAROL, "$sent1", "✋")
    assert again.message.body == "**#1** is already claimed."

    [refused] = await react(pod, CAROL, "$sent1", "✅")
    assert "Only the person who posted **#1** or a coordinator" in refused.message.body
    assert await status(pod) is PostStatus.CLAIMED
    [done] = await react(pod, ALICE, "$sent1", "✅\ufe0f")
    assert done.message.body == "**#1** marked done. Thank you!"
    assert await status(pod) is PostStatus.DONE


async def test_own_post_and_other_reactions(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!offer ride to clinic tuesday")
    [own] = await react(pod, ALICE, "$ev1", "✋")
    assert "is your own post" in own.message.body
    assert await react(pod, BOB, "$ev1", "🎉") == []  # not an answer
    assert await react(pod, BOB, "$nothing", "✋") == []  # not a post
    assert await react(pod, BOB, "$ev1", "✋", room=DM, direct=True) == []  # not in its room
    await pod.say(BOB, "!needs")  # $ev2, answered by $sent3
    assert await react(pod, CAROL, "$sent3", "✋") == []  # the bot's listing is no post
    assert await status(pod) is PostStatus.OPEN


async def test_reactions_never_act_on_or_unmask_an_anonymous_request(pod_rooms):
    pod = pod_rooms
    await anonymous_request(pod)
    notices = [i for i, o in enumerate(pod.transport.sent) if o.room_id == POD]
    notice = f"$sent{notices[-1] + 1}"
    for who in (ALICE, BOB):
        for key in ("✋", "✅"):
            assert await react(pod, who, notice, key) == []  # not even to their DM
    assert await status(pod) is PostStatus.OPEN


def test_skin_tones_and_selectors_do_not_change_the_meaning():
    assert meaning("✋🏽") == "✋" and meaning("✅\ufe0f") == "✅" and meaning("👍🏿") == "👍"
