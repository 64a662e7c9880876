from bot.models import PostStatus

from .conftest import POD

ALICE, BOB, CAROL = "@alice:test", "@bob:test", "@carol:test"


async def test_need_is_stored_with_category_urgency_and_short_id(pod):
    body = await pod.reply_to(ALICE, "!need groceries for a family of 4, urgent")
    assert "#1" in body and "food" in body and "urgent" in body
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    assert post.author == ALICE
    assert post.text == "groceries for a family of 4, urgent"
    assert post.status is PostStatus.OPEN


async def test_short_ids_count_per_room(pod):
    await pod.say(ALICE, "!need groceries")
    await pod.say(ALICE, "!need ride", room="!other:test")
    body = await pod.reply_to(BOB, "!offer drill")
    assert "#2" in body


async def test_offer_matching_need_is_announced_in_the_reply_mentioning_both(pod):
    await pod.say(ALICE, "!need groceries")
    sent = await pod.say(BOB, "!offer food")
    assert len(sent) == 1  # one message per post, matches included
    reply = sent[0].message
    assert "Noted offer **#2**" in reply.body
    assert "Possible match in food for @bob:test:\n\n- @alice:test needs **#1** (groceries): `!claim 1`" in reply.body
    assert set(reply.mentions) == {ALICE, BOB}
    assert f'href="https://matrix.to/#/{ALICE}"' in reply.html
    assert "<li>" in reply.html and "<code>!claim 1</code>" in reply.html


async def test_matches_rank_urgent_then_oldest_and_cap_at_three(pod):
    for text in ["groceries", "meals", "food bank", "groceries today urgent", "bread"]:
        await pod.say(ALICE, f"!need {text}")
    sent = await pod.say(BOB, "!offer food")
    lines = [line for line in sent[0].message.body.splitlines() if line.startswith("- ")]
    assert [line.split("**")[1] for line in lines] == ["#4", "#1", "#2"]


async def test_no_match_with_own_post_or_other_category(pod):
    await pod.say(ALICE, "!need groceries")
    await pod.say(BOB, "!need ride")
    sent = await pod.say(ALICE, "!offer food")
    assert len(sent) == 1
    assert "Possible match" not in sent[0].message.body
    assert sent[0].message.mentions == () or set(sent[0].message.mentions) <= {ALICE}


async def test_needs_lists_open_needs_and_filters_by_category(pod):
    await pod.say(ALICE, "!need groceries")
    await pod.say(BOB, "!need ride to clinic")
    body = await pod.reply_to(CAROL, "!needs")
    assert "groceries" in body and "ride to clinic" in body
    body = await pod.reply_to(CAROL, "!needs transport")
    assert "ride to clinic" in body and "groceries" not in body
    body = await pod.reply_to(CAROL, "!offers")
    assert "No open offers" in body


async def test_a_listing_shows_urgency_set_apart_in_formatted_text_as_in_plain_text(pod):
    await pod.say(ALICE, "!need groceries urgent")
    await pod.say(BOB, "!need ride to clinic")
    [listing] = [o.message for o in await pod.say(CAROL, "!needs")]
    assert "food · urgent · groceries urgent" in listing.body
    # The formatted line once read "food· urgent": the space was lost on the way to HTML.
    assert "food · urgent · groceries urgent" in listing.html
    assert "transport · ride to clinic" in listing.html


async def test_claim_then_done_changes_status_and_tells_both(pod):
    await pod.say(ALICE, "!need groceries")
    sent = await pod.say(BOB, "!claim #1")
    assert set(sent[0].message.mentions) == {ALICE, BOB}
    async with pod.storage.transaction() as tx:
        post = await tx.posts.by_number(POD, 1)
    assert post.status is PostStatus.CLAIMED and post.claimed_by == BOB
    assert "already claimed" in await pod.reply_to(CAROL, "!claim 1")
    assert "done" in await pod.reply_to(ALICE, "!done 1")
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.DONE


async def test_the_helper_may_mark_a_claimed_post_done_and_the_poster_is_told(pod):
    await pod.say(ALICE, "!need groceries")
    claim = (await pod.say(BOB, "!claim 1"))[0].message
    assert "`!done 1`" in claim.body  # the claim reply tells both of them this
    assert "Only the person who posted" in await pod.reply_to(CAROL, "!done 1")  # not a claimer
    sent = await pod.say(BOB, "!done 1")
    assert len(sent) == 1
    reply = sent[0].message
    assert reply.body == "**#1** marked done. Thank you! @alice:test: @bob:test marked your need finished."
    assert ALICE in reply.mentions  # the poster is notified
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.DONE


async def test_the_helper_may_not_cancel_the_poster_s_post(pod):
    await pod.say(ALICE, "!need groceries")
    await pod.say(BOB, "!claim 1")
    assert "Only the person who posted" in await pod.reply_to(BOB, "!cancel 1")
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status is PostStatus.CLAIMED


async def test_only_poster_or_coordinator_may_cancel(pod):
    await pod.say(ALICE, "!need groceries")
    assert "Only the person who posted" in await pod.reply_to(BOB, "!cancel 1")
    pod.transport.power_levels[CAROL] = 50
    assert "cancelled" in await pod.reply_to(CAROL, "!cancel 1")


async def test_cannot_claim_own_post(pod):
    await pod.say(ALICE, "!offer drill")
    assert "your own post" in await pod.reply_to(ALICE, "!claim 1")


async def test_mine_lists_only_own_posts(pod):
    await pod.say(ALICE, "!need groceries")
    await pod.say(BOB, "!need ladder")
    body = await pod.reply_to(ALICE, "!mine")
    assert "groceries" in body and "ladder" not in body


async def test_posts_in_a_dm_stay_in_that_dm(pod):
    dm = "!dm-alice:test"
    await pod.say(ALICE, "!need groceries", room=dm, direct=True)
    body = await pod.reply_to(BOB, "!needs")
    assert "groceries" not in body
    sent = await pod.say(BOB, "!offer food")
    assert all(o.room_id in (POD, None) for o in sent)
    assert [o for o in sent if o.reply_to is None] == []
