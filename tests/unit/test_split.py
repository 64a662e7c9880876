"""Split alerts and `!pod split`: the pure rules, and the walk-through with the real app, handlers
and storage behind the fake transport."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import split_rules as rules
from bot.app import App
from bot.messages import DeliveryError, Membership
from bot.models import Category, ParsedPost, Post, PostKind, PostStatus, Urgency
from bot.scheduler import Scheduler
from bot.shift_models import StandinRequest

from .conftest import ALICE, BOB, CAROL, POD, SECRET, Pod

DAN = "@dan:test"
EVE = "@eve:test"
ALICE_DM = "!dm-alice:test"
NEW_ROOM = "!private1:test"  # the fake transport's first room
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


# ---- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "alerted", "expected"), [
    (24, False, None), (25, False, rules.Alert.SEND), (30, True, None),
    (24, True, rules.Alert.REARM), (10, False, None)])
def test_an_alert_once_per_crossing(size, alerted, expected):
    assert rules.size_alert(size, 25, alerted) is expected


def test_people_are_picked_by_id_or_unique_localpart():
    members = ["@sam:a.org", "@ana:a.org", "@ana:b.org", "@lee:a.org"]
    assert rules.pick_people("@SAM:a.org, lee lee", members) == (("@sam:a.org", "@lee:a.org"), [])
    # "ana" is two people: it must be given in full; a stranger is named back
    assert rules.pick_people("ana @zed:a.org", members) == ((), ["ana", "@zed:a.org"])
    assert rules.pick_people("@ana:b.org", members) == (("@ana:b.org",), [])


def test_a_long_list_of_strangers_gets_a_short_answer_and_changes_nothing():
    view = rules.PodView("Elm Street", [ALICE, BOB], [ALICE], [], [])
    state = rules.SplitState(pod_room=POD, step=rules.Step.PEOPLE, name="Riverside")
    turn = rules.advance(state, " ".join(f"stranger{i}" for i in range(10_000)), view)
    assert turn.outcome is rules.Outcome.ASK and turn.state == state
    assert "I don't see stranger0, stranger1" in turn.prompt and len(turn.prompt) < 300


def test_a_person_who_left_before_the_yes_is_asked_about_again():
    view = rules.PodView("Elm Street", [ALICE, BOB], [ALICE], [], [])
    state = rules.SplitState(pod_room=POD, step=rules.Step.CONFIRM, name="Riverside",
                             people=(BOB, DAN))
    turn = rules.advance(state, "yes", view)
    assert turn.outcome is rules.Outcome.ASK and turn.state.step is rules.Step.PEOPLE
    assert "no longer in Elm Street" in turn.prompt and "Who goes" in turn.prompt


def _post(number, author, zone=None, anonymous=False, status=PostStatus.OPEN):
    return Post(id=number, room_id=POD, number=number, kind=PostKind.NEED, author=author,
                category=Category.FOOD, urgency=Urgency.THIS_WEEK, text="x", status=status,
                created_at=NOW, private=anonymous, anonymous=anonymous, zone=zone)


def test_what_moves_an_anonymous_request_goes_by_its_zone_only():
    posts = [_post(1, DAN), _post(2, DAN, anonymous=True), _post(3, BOB, zone="riverside"),
             _post(4, BOB, zone="riverside", anonymous=True), _post(5, BOB),
             _post(6, DAN, status=PostStatus.CLAIMED)]
    moving = rules.moving_posts(posts, [DAN], ("riverside",))
    # #2 is Dan's but anonymous: moving it because Dan goes would tell who asked
    assert [post.number for post in moving] == [1, 3, 4]
    assert rules.renumbered([9, 4, 7]) == {4: 1, 7: 2, 9: 3}


def _standin(number, shift_id, status="open"):
    return StandinRequest(id=number, room_id=POD, number=number, shift_id=shift_id,
                          occurrence="2026-11-28T10:00:00+00:00", requester=DAN, status=status)


def test_a_standin_request_goes_with_its_shift_and_the_tree_with_its_people():
    standins = [_standin(1, 7), _standin(2, 8), _standin(3, 7, status="covered")]
    # Dan asked for both; only the request of shift 7 (which goes) moves, and only while open.
    assert [r.number for r in rules.moving_standins(standins, [7])] == [1]
    tree = [(DAN, EVE), (BOB, ALICE), (CAROL, DAN), (EVE, None), ("@fay:test", None)]
    # Dan's backup Eve is not invited: cleared; Bob's, a coordinator, is; Carol stays.
    assert rules.tree_moves(tree, [DAN, BOB, "@fay:test"], [DAN, BOB, "@fay:test", ALICE]) == [
        (DAN, False), (BOB, True), ("@fay:test", True)]


# ---- with the app ---------------------------------------------------------------------------


@pytest.fixture
def elm(pod: Pod) -> Pod:
    """Elm Street: Alice coordinates; Bob, Carol, Dan and Eve have joined."""
    pod.transport.rooms[POD] = [ALICE, BOB, CAROL, DAN, EVE]
    pod.transport.rooms[ALICE_DM] = [ALICE]
    pod.transport.power_levels[ALICE] = 100
    return pod


async def _settle_membership(pod: Pod, person: str) -> list:
    return await pod.receive(Membership(f"$member{next(pod._events)}", POD, person,
                                        False, pod.clock()))


def _dms(sent, person):
    return [o.message.body for o in sent if o.user_id == person]


async def test_coordinators_are_alerted_once_per_crossing_of_the_split_size(elm):
    await elm.say(ALICE, "!pod name Elm Street")
    assert "split_size" in await elm.reply_to(ALICE, "!settings split_size 6")
    sent = await _settle_membership(elm, EVE)
    assert _dms(sent, ALICE) == []  # five people: below six
    elm.transport.rooms[POD].append("@fay:test")
    sent = await _settle_membership(elm, "@fay:test")
    [alert] = _dms(sent, ALICE)
    assert "**Elm Street** now has 6 people" in alert and "!pod split" in alert
    assert [o for o in sent if o.user_id != ALICE] == []  # members are not told, only coordinators
    elm.transport.rooms[POD].append("@gus:test")
    assert _dms(await _settle_membership(elm, "@gus:test"), ALICE) == []  # still above: once
    elm.transport.rooms[POD][-2:] = []
    assert _dms(await _settle_membership(elm, "@gus:test"), ALICE) == []  # below: re-armed
    elm.transport.rooms[POD].append("@fay:test")
    assert len(_dms(await _settle_membership(elm, "@fay:test"), ALICE)) == 1  # crossed again


async def test_a_restarted_bot_does_not_alert_again(elm):
    await elm.say(ALICE, "!settings split_size 5")
    assert len(_dms(await _settle_membership(elm, EVE), ALICE)) == 1
    await elm.app.stop()
    elm.app = elm.transport.app = App(elm.storage, elm.app.config, elm.transport, clock=elm.clock)
    assert _dms(await _settle_membership(elm, DAN), ALICE) == []


async def _dm(pod: Pod, text: str) -> list[str]:
    sent = await pod.say(ALICE, text, room=ALICE_DM, direct=True)
    return [o.message.body for o in sent if o.room_id == ALICE_DM]


async def _seed(pod: Pod):
    """Elm Street's open posts and shifts before the split."""
    await pod.say(ALICE, "!pod zones north, riverside")
    await pod.say(BOB, "!need groceries for riverside")  # 1: zone riverside
    await pod.say(DAN, "!offer ride to the clinic")  # 2: Dan's
    await pod.say(CAROL, "!need a ladder")  # 3: stays
    async with pod.storage.transaction() as tx:
        anonymous = await tx.posts.create(
            POD, PostKind.NEED, EVE, ParsedPost(category=Category.FOOD, urgency=Urgency.TODAY, what="food",
                       text=SECRET), pod.clock(),
            private=True, anonymous=True, zone="north")  # 4: anonymous, by Eve, north
        mine = await tx.posts.create(
            POD, PostKind.NEED, DAN, ParsedPost(category=Category.FOOD, urgency=Urgency.WHENEVER, what="food",
                       text=SECRET), pod.clock(),
            private=True, anonymous=True)  # 5: Dan's, anonymous, no zone: must not move
    await pod.say(ALICE, "!shift add Food bank riverside every saturday 10-13 at the Hall need 2")
    await pod.say(ALICE, "!shift add Tea round every sunday 15-16 at the Cafe need 1")
    return anonymous, mine


async def test_split_walks_a_coordinator_through_and_moves_what_was_chosen(elm):
    anonymous, mine = await _seed(elm)
    started = await elm.say(ALICE, "!pod split")
    assert [o.message.body for o in started if o.room_id == POD] == [
        "I have sent you a direct message to walk you through the split."]
    [intro] = _dms(started, ALICE)
    assert "What is the new pod called?" in intro
    assert "Which zones" in (await _dm(elm, "Riverside"))[0]
    assert "Who goes" in (await _dm(elm, "riverside, north"))[0]
    assert "I don't see zed" in (await _dm(elm, "dan zed"))[0]
    [summary] = await _dm(elm, f"dan {BOB}")
    assert "a new pod **Riverside**, zones riverside, north" in summary
    assert "Moving needs and offers: #1, #2, #4." in summary  # #5 is Dan's but anonymous
    assert "Moving shifts: S1." in summary
    assert EVE not in summary
    before = len(elm.transport.sent)
    [made] = await _dm(elm, "yes")
    assert "Making the room for Riverside" in made
    sent = elm.transport.sent[before:]
    [(name, invitees)] = elm.transport.private_rooms
    assert name == "Riverside" and set(invitees) == {DAN, BOB, ALICE}  # Alice: a coordinator
    async with elm.storage.transaction() as tx:
        [step] = [a for a in await tx.actions.pending()] or [None]
        moved = {p.number: p for p in await tx.posts.list(NEW_ROOM, limit=10)}
        staying = {p.number for p in await tx.posts.list(POD, limit=10)}
        new_shifts = await tx.shifts.list(NEW_ROOM)
        settings = await tx.settings.room(NEW_ROOM)
    assert step is None
    assert sorted(moved) == [1, 2, 3] and staying == {3, 5}
    assert moved[3].id == anonymous.id and moved[3].anonymous and moved[3].author == EVE
    assert [(s.number, s.title) for s in new_shifts] == [(1, "Food bank riverside")]
    assert settings["pod_name"] == "Riverside" and settings["zones"] == "riverside, north"
    [welcome] = [o.message.body for o in sent if o.room_id == NEW_ROOM]
    assert "Welcome to **Riverside**, a new pod split from **this pod**" in welcome
    assert "**#3** need" in welcome and "(was #4)" in welcome and "S1" in welcome
    assert SECRET not in welcome and EVE not in welcome  # the anonymous request stays so
    [notice] = [o.message.body for o in sent if o.room_id == POD]
    assert "**Riverside** split off from this pod: 3 people were invited" in notice
    assert "Nobody was removed" in notice and EVE not in notice and SECRET not in notice
    # Each poster learns the new number privately, the anonymous requester too.
    assert "#4 moved to the new pod **Riverside**, where it is #3" in _dms(sent, EVE)[0]
    assert "#2 moved" in _dms(sent, DAN)[0]
    # The new pod numbers on from its moved posts.
    assert "Noted need **#4**" in await elm.reply_to(DAN, "!need soup", room=NEW_ROOM)


async def test_a_split_can_be_stopped_and_needs_a_coordinator(elm):
    refused = await elm.reply_to(BOB, "!pod split")
    assert "A coordinator is needed to split the pod" in refused
    await elm.say(ALICE, "!pod split")
    await _dm(elm, "Riverside")
    assert "Stopped: nothing was split" in (await _dm(elm, "stop"))[0]
    assert elm.transport.private_rooms == []
    async with elm.storage.transaction() as tx:
        assert await tx.privacy.intake(ALICE) is None


async def test_a_post_claimed_before_the_room_exists_stays(elm):
    await _seed(elm)
    await elm.say(ALICE, "!pod split")
    for answer in ("Riverside", "riverside", "dan"):
        await _dm(elm, answer)
    # The room step waits (the homeserver is slow); meanwhile #2 is claimed in the old pod.
    elm.transport.room_faults.append(("before", DeliveryError("timeout")))
    await _dm(elm, "yes")
    await elm.say(CAROL, "!claim 2")
    elm.app.steps.retry_now()
    await elm.app.run_until_idle()
    async with elm.storage.transaction() as tx:
        moved = await tx.posts.list(NEW_ROOM, limit=10)
        claimed = await tx.posts.by_number(POD, 2)
    assert [p.number for p in moved] == [1]  # only #1 (riverside)
    assert claimed is not None and claimed.status is PostStatus.CLAIMED


async def test_a_room_made_before_a_failure_is_found_and_everything_moves_once(elm):
    await _seed(elm)
    await elm.say(ALICE, "!pod split")
    for answer in ("Riverside", "riverside", "dan"):
        await _dm(elm, answer)
    # Synapse made the room, then the request failed (an invite): the retry finds it by its tag.
    elm.transport.room_faults.append(("after", DeliveryError("M_UNKNOWN invite failed")))
    await _dm(elm, "yes")
    elm.app.steps.retry_now()
    await elm.app.run_until_idle()
    assert len(elm.transport.private_rooms) == 1
    async with elm.storage.transaction() as tx:
        moved = await tx.posts.list(NEW_ROOM, limit=10)
        staying = await tx.posts.list(POD, limit=10)
    assert [p.number for p in moved] == [1, 2] and sorted(p.number for p in staying) == [3, 4, 5]
    welcomes = [o for o in elm.transport.sent if o.room_id == NEW_ROOM]
    assert len(welcomes) == 1


async def _split(pod: Pod, zones: str, people: str) -> tuple[str, list]:
    """A whole split by Alice: the summary she confirmed, and what the bot sent meanwhile."""
    await pod.say(ALICE, "!pod split")
    await _dm(pod, "Riverside")
    await _dm(pod, zones)
    [summary] = await _dm(pod, people)
    before = len(pod.transport.sent)
    await _dm(pod, "yes")
    return summary, pod.transport.sent[before:]


async def _calls(pod: Pod, scheduler: Scheduler, text: str) -> set[str]:
    """Who the scheduler calls now with an alert saying `text`."""
    before = len(pod.transport.sent)
    await scheduler.run_due()
    await pod.app.deliver_pending()
    return {o.user_id for o in pod.transport.sent[before:]
            if o.user_id and "Phone tree alert" in o.message.body and text in o.message.body}


async def test_the_phone_tree_members_who_go_move_to_the_new_pods_tree(elm):
    scheduler = Scheduler(elm.app)
    for person, hours in ((BOB, " 8-22"), (CAROL, ""), (DAN, ""), (EVE, "")):
        assert "on the phone tree" in await elm.reply_to(person, f"!tree join{hours}")
    await elm.say(DAN, f"!tree backup {EVE}")  # Eve stays, and is not invited: cleared
    await elm.say(BOB, f"!tree backup {ALICE}")  # a coordinator, invited to the new room: kept
    await elm.say(CAROL, f"!tree backup {DAN}")  # Carol stays; Dan is still in her room: kept
    assert "Calling 4 people" in await elm.reply_to(ALICE, "!alert urgent Before the split")
    summary, sent = await _split(elm, "riverside", f"dan {BOB}")
    assert "Moving to its phone tree, with their hours: 2 of the people you chose." in summary
    [welcome] = [o.message.body for o in sent if o.room_id == NEW_ROOM]
    [notice] = [o.message.body for o in sent if o.room_id == POD]
    assert "2 phone-tree members moved to this pod's phone tree, with their hours" in welcome
    assert "2 phone-tree members moved to the phone tree of **Riverside**" in notice
    assert "no longer calls them" in notice
    for body in (welcome, notice):  # counted, not named
        assert DAN not in body and BOB not in body and EVE not in body
    [told] = _dms(sent, DAN)
    assert "your place on it moved to the new pod **Riverside**" in told
    assert f"Your backup, {EVE}, was not invited there, so I cleared it" in told
    assert "`!tree backup @person`" in told
    assert _dms(sent, BOB) == [] and _dms(sent, CAROL) == [] and _dms(sent, EVE) == []
    async with elm.storage.transaction() as tx:
        moved = {m.person: (m.hours, m.backup) for m in await tx.tree.members(NEW_ROOM)}
        staying = {m.person: m.backup for m in await tx.tree.members(POD)}
    assert moved == {BOB: ("8-22", ALICE), DAN: (None, None)}
    assert staying == {CAROL: DAN, EVE: None}
    # The alert sent before the split finishes where it started, calling whom it called.
    assert await _calls(elm, scheduler, "Before the split") == {BOB, CAROL, DAN, EVE}
    await elm.say(ALICE, "!alert close")
    assert "Calling 2 people" in await elm.reply_to(ALICE, "!alert urgent New pod",
                                                     room=NEW_ROOM)
    assert await _calls(elm, scheduler, "New pod") == {BOB, DAN}
    assert "Calling 2 people" in await elm.reply_to(ALICE, "!alert urgent Old pod")
    assert await _calls(elm, scheduler, "Old pod") == {CAROL, EVE}


async def test_an_open_standin_request_goes_with_its_shift_not_its_requester(elm):
    await elm.say(ALICE, "!pod zones north, riverside")
    await elm.say(ALICE, "!shift add Food bank riverside every saturday 10-13 at the Hall need 2")
    await elm.say(ALICE, "!shift add Tea round every sunday 15-16 at the Cafe need 1")
    await elm.say(DAN, "!signup S2 all")
    assert "`!cover R1`" in await elm.reply_to(DAN, "!standin S2 29 nov")  # Dan goes; S2 stays
    await elm.say(EVE, "!signup S1 all")
    assert "`!cover R2`" in await elm.reply_to(EVE, "!standin S1 28 nov")  # Eve stays; S1 goes
    summary, sent = await _split(elm, "riverside", "dan")
    assert "Moving shifts: S1." in summary
    assert "Moving stand-in requests (with their shifts): R2." in summary
    [welcome] = [o.message.body for o in sent if o.room_id == NEW_ROOM]
    [notice] = [o.message.body for o in sent if o.room_id == POD]
    assert "Stand-in request **R1** for S1 (was R2)" in welcome
    assert "Stand-in request **R1** for S1 (was R2)" in notice
    assert EVE not in welcome and EVE not in notice
    async with elm.storage.transaction() as tx:
        assert [(r.number, r.requester) for r in await tx.shifts.open_standins(NEW_ROOM)] == [
            (1, EVE)]
        assert [(r.number, r.requester) for r in await tx.shifts.open_standins(POD)] == [
            (1, DAN)]
    elm.transport.rooms[NEW_ROOM] = [ALICE, DAN]
    assert "in place of @eve:test" in await elm.reply_to(DAN, "!cover R1", room=NEW_ROOM)
    assert "in place of @dan:test" in await elm.reply_to(CAROL, "!cover R1")


async def test_an_alert_sent_before_the_split_escalates_a_silent_member_to_their_old_backup(elm):
    scheduler = Scheduler(elm.app)
    for person in (BOB, CAROL, DAN, EVE):
        assert "on the phone tree" in await elm.reply_to(person, "!tree join")
    await elm.say(DAN, f"!tree backup {EVE}")  # Dan goes, Eve stays: cleared by the split
    await elm.say(CAROL, f"!tree backup {BOB}")  # Carol stays, Bob goes: her backup is kept
    assert "Calling 4 people" in await elm.reply_to(ALICE, "!alert urgent Before the split")
    assert await _calls(elm, scheduler, "Before the split") == {BOB, CAROL, DAN, EVE}
    await _split(elm, "riverside", f"dan {BOB}")
    for person in (BOB, EVE):
        await elm.say(person, "ok", room=f"!dm-{person}", direct=True)
    # Dan (moved) and Carol (stayed) stay silent: each one's backup when the alert was sent is
    # told, not Alice, the caller.
    elm.clock.advance(minutes=10)
    before = len(elm.transport.sent)
    await scheduler.run_due()
    await elm.app.deliver_pending()
    sent = elm.transport.sent[before:]
    [to_eve] = _dms(sent, EVE)
    assert f"{DAN}, who named you as their backup, has not confirmed" in to_eve
    [to_bob] = _dms(sent, BOB)
    assert f"{CAROL}, who named you as their backup, has not confirmed" in to_bob
    assert not [body for body in _dms(sent, ALICE) if "has not confirmed" in body]
    # Then the caller, told that the backup was.
    elm.clock.advance(minutes=10)
    before = len(elm.transport.sent)
    await scheduler.run_due()
    await elm.app.deliver_pending()
    to_alice = " ".join(_dms(elm.transport.sent[before:], ALICE))
    assert f"{DAN} has not confirmed" in to_alice and f"told their backup, {EVE}" in to_alice
    # The new pod's tree keeps the split's answer: Dan has no backup there.
    async with elm.storage.transaction() as tx:
        assert (await tx.tree.member(NEW_ROOM, DAN)).backup is None
