"""!forgetme, retention, coordinator checks, file modes and what reaches the log."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime

import pytest

from bot import retention
from bot.commands.privacy import sweep
from bot.logs import SecretFilter
from bot.models import PostStatus
from bot.storage import Storage
from bot.store.privacy import PrivacyArea
from bot.store.rooms import StateEvent

from .conftest import ALICE, BOB, CAROL, DM, POD, SECRET


async def dm(pod, text, sender=ALICE, room=DM):
    sent = await pod.say(sender, text, room=room, direct=True)
    return [o.message.body for o in sent if o.room_id == room]


async def mentioning(pod, text):
    async with pod.storage.transaction() as tx:
        return {t: n for t, n in (await tx.privacy.table_rows_mentioning(text)).items() if n}


# ---- !forgetme ----------------------------------------------------------------------------------


async def test_forgetme_erases_every_row_naming_the_person(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries for two")
    await pod.say(BOB, "!need ride to clinic")
    await pod.say(ALICE, "!claim 2")
    for answer in ("food", SECRET, "1", "1", "yes"):
        await dm(pod, answer)
    await pod.say(BOB, "!claim 3")  # consent asked: an introduction row names alice
    await dm(pod, "hello")  # an unfinished conversation
    assert await mentioning(pod, ALICE)
    before = len(pod.transport.sent)

    replies = await dm(pod, "!forgetme")
    assert "Reply yes" in replies[0]
    replies = await dm(pod, "yes")
    assert replies[-1].startswith("Done. I erased:")
    assert await mentioning(pod, ALICE) == {}
    assert await mentioning(pod, SECRET) == {}
    # open posts withdrawn, claimed one reopened, the bot's messages about her redacted
    pod_notes = [o.message.body for o in pod.transport.sent[before:] if o.room_id == POD]
    assert "**#1** was withdrawn." in pod_notes and "**#2** is open again." in pod_notes
    assert len(pod.transport.redactions) >= 4
    async with pod.storage.transaction() as tx:
        posts = {p.number: p for p in await tx.posts.list(
            POD, statuses=tuple(PostStatus), limit=10)}
    assert posts[1].status is PostStatus.CANCELLED and posts[1].text == "" and posts[1].author == ""
    assert posts[2].status is PostStatus.OPEN and posts[2].claimed_by is None
    assert posts[2].author == BOB  # other people's rows keep what is theirs


async def test_forgetme_takes_the_person_out_of_the_stored_room_state(pod_rooms):
    pod = pod_rooms
    member = '{"type":"m.room.member","state_key":"%s","content":{"membership":"join"}}'
    levels = '{"type":"m.room.power_levels","state_key":"","content":{"users":{"%s":50,"%s":100}}}'
    async with pod.storage.transaction() as tx:
        await tx.rooms.replace([
            StateEvent(POD, "m.room.member", ALICE, member % ALICE),
            StateEvent(POD, "m.room.member", BOB, member % BOB),
            StateEvent(POD, "m.room.power_levels", "", levels % (ALICE, BOB))], [])
        assert await tx.rooms.complete()
    await dm(pod, "!forgetme")
    replies = await dm(pod, "yes")
    assert "room-state records" in replies[-1]
    assert await mentioning(pod, ALICE) == {}
    async with pod.storage.transaction() as tx:
        rows = await tx.rooms.load()
        # What is left is no longer the whole state: the next start reads it from the homeserver.
        assert not await tx.rooms.complete()
    assert [(r.event_type, r.state_key) for r in rows] == [("m.room.member", BOB),
                                                           ("m.room.power_levels", "")]


async def test_forgetme_walks_tables_it_does_not_know(pod_rooms):
    pod = pod_rooms
    async with pod.storage.transaction() as tx:
        await tx.execute("CREATE TABLE future_things (id INTEGER PRIMARY KEY, who TEXT NOT NULL, "
                          "note TEXT)")
        await tx.execute("INSERT INTO future_things (who, note) VALUES (?, ?), (?, ?)",
                          (ALICE, "x", BOB, f"asked {ALICE} about it"))
    await dm(pod, "!forgetme")
    await dm(pod, "yes")
    assert await mentioning(pod, ALICE) == {}


class Crash(Exception):
    """The bot stopping in the middle of an erasure."""


async def test_an_erasure_cut_short_is_carried_out_again_and_finishes(pod_rooms, monkeypatch):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries for two")
    await pod.say(BOB, "!need ride to clinic")
    await pod.say(ALICE, "!claim 2")
    async with pod.storage.transaction() as tx:
        await tx.execute("CREATE TABLE zz_later (id INTEGER PRIMARY KEY, note TEXT)")
        await tx.execute("INSERT INTO zz_later (note) VALUES (?)", (f"ask {ALICE}",))
    walk = PrivacyArea.forget_in_rows

    async def stops_before_the_last_table(self, user_id, table, *args):
        if table == "zz_later":
            raise Crash
        return await walk(self, user_id, table, *args)

    monkeypatch.setattr(PrivacyArea, "forget_in_rows", stops_before_the_last_table)
    await dm(pod, "!forgetme")
    before = len(pod.transport.sent)
    with pytest.raises(Crash):
        await dm(pod, "yes")
    assert (await mentioning(pod, ALICE)).keys() == {"zz_later", "erasures"}  # still to do

    monkeypatch.setattr(PrivacyArea, "forget_in_rows", walk)
    await pod.settle()  # the next round of housekeeping, or the first after a restart
    assert await mentioning(pod, ALICE) == {}
    said = [o.message.body for o in pod.transport.sent[before:]]
    assert sum(body.startswith("Done. I erased") for body in said) == 1
    # What the first attempt queued goes out once: the second finds nothing left to announce.
    assert said.count("**#1** was withdrawn.") == 1 and said.count("**#2** is open again.") == 1


async def test_forgetme_needs_confirmation_and_a_dm(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries")
    assert "direct message" in await pod.reply_to(ALICE, "!forgetme")
    await dm(pod, "!forgetme")
    assert "nothing was erased" in (await dm(pod, "no"))[0]
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).author == ALICE


# ---- retention ----------------------------------------------------------------------------------


def test_retention_rule():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    old = datetime(2026, 10, 1, tzinfo=UTC)
    assert retention.is_due(PostStatus.DONE, old, now, 30)
    assert not retention.is_due(PostStatus.OPEN, old, now, 30)
    assert not retention.is_due(PostStatus.CANCELLED, now, now, 30)


async def test_retention_erases_details_after_the_period(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, f"!need {SECRET}")
    await pod.say(BOB, "!claim 1")
    await pod.say(ALICE, "!done 1")
    await pod.say(ALICE, "!need bread")  # still open: kept whole
    pod.clock.advance(days=29)
    assert await sweep(pod.storage, pod.app.config, pod.clock()) == 0
    assert await mentioning(pod, SECRET)
    pod.clock.advance(days=2)
    assert await sweep(pod.storage, pod.app.config, pod.clock()) > 0
    assert await mentioning(pod, SECRET) == {}
    async with pod.storage.transaction() as tx:
        done = await tx.posts.by_number(POD, 1)
        still = await tx.posts.by_number(POD, 2)
    assert (done.status, done.category.value, done.text, done.author, done.claimed_by) == (
        PostStatus.DONE, "medical", "", "", None)
    assert still.author == ALICE and still.text == "bread"


# ---- coordinators -------------------------------------------------------------------------------


async def test_removing_someone_elses_post_needs_a_coordinator(pod_rooms):
    pod = pod_rooms
    await pod.say(ALICE, "!need groceries")
    refused = await pod.reply_to(BOB, "!cancel 1")
    assert "coordinator" in refused and "power level 50" in refused
    pod.transport.power_levels[CAROL] = 50
    assert "cancelled" in await pod.reply_to(CAROL, "!cancel 1")


async def test_require_coordinator_helper(pod_rooms):
    from bot.commands import require_coordinator
    from bot.context import Context

    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 100

    def ctx(sender, direct=False):
        return Context(sender=sender, room_id=POD, is_direct=direct, text="", event_id="$x",
                       now=pod.clock(), tx=None, config=pod.app.config,
                       transport=pod.transport, registry=pod.app.registry)

    refused = ctx(BOB)
    assert not await require_coordinator(refused, "change pod settings")
    assert "A coordinator is needed to change pod settings" in refused.outgoing[0].message.body
    allowed = ctx(CAROL)
    assert await require_coordinator(allowed, "change pod settings") and not allowed.outgoing
    in_dm = ctx(CAROL, direct=True)
    assert not await require_coordinator(in_dm, "export")


# ---- hygiene ------------------------------------------------------------------------------------


async def test_database_file_and_directory_are_private(tmp_path):
    path = tmp_path / "data" / "bot.db"
    storage = await Storage.open(path)
    await storage.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_secret_filter_replaces_secrets_in_messages_and_args():
    secret_filter = SecretFilter()
    secret_filter.secrets = {"syt_token_value"}
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "token %s in use",
                               ("syt_token_value",), None)
    secret_filter.filter(record)
    assert "syt_token_value" not in record.getMessage()


async def test_nothing_private_is_logged_during_a_private_request(pod_rooms, caplog):
    from bot.logs import configure_logging

    pod = pod_rooms
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("nio", "aiohttp", "aiosqlite")}
    configure_logging("DEBUG")  # as `run` does: DEBUG for us, noisy libraries kept quiet
    root.addHandler(caplog.handler)
    try:
        for answer in ("food", SECRET, "1", "1", "yes"):
            await dm(pod, answer)
        await pod.say(BOB, "!claim 1")
        await dm(pod, "yes")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in noisy.items():
            logging.getLogger(name).setLevel(old)
    assert caplog.records  # the app does log each handled event
    assert SECRET not in caplog.text


async def test_forgetme_withdraws_from_shifts(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    created = await pod.reply_to(
        CAROL, "!shift add Food distribution every saturday 10-13 at Community Hall need 3")
    assert "S1" in created
    await pod.say(ALICE, "!signup S1 all")
    await pod.say(BOB, "!signup S1 all")
    assert (await mentioning(pod, ALICE)).get("shift_signups")
    await dm(pod, "!forgetme")
    reply = await dm(pod, "yes")
    assert "shift sign-ups" in reply[-1]
    assert await mentioning(pod, ALICE) == {}
    assert (await mentioning(pod, BOB)).get("shift_signups")  # others stay signed up


# ---- erasure touches only the person ------------------------------------------------------------

BOB_ORG = "@bob:example.org"
BOB_UK = "@bob:example.org.uk"  # another person whose id starts with the first one's


async def naming_whole(pod, user_id):
    """Per table, rows in which `user_id` appears as a whole id."""
    from bot.store.privacy import names_person

    async with pod.storage.transaction() as tx:
        found = {}
        for table, column in await tx.privacy._text_columns():
            values = await tx.fetchall(f"SELECT {column['name']} FROM {table}")  # noqa: S608
            n = sum(names_person(v[0], user_id) for v in values)
            if n:
                found[table] = found.get(table, 0) + n
        return found


async def test_forgetme_matches_whole_ids_only(pod):
    pod.transport.rooms[POD] = [BOB_ORG, BOB_UK, CAROL]
    pod.transport.power_levels[CAROL] = 50
    for bob in (BOB_ORG, BOB_UK):
        await pod.say(bob, f"!need groceries for {bob}")  # post authors (and text)
        await pod.say(bob, "!mine", room=f"!dm-{bob}", direct=True)  # DM rows
    await pod.say(CAROL, "!claim 2")  # a reply mentioning the other bob
    await pod.say(CAROL, "!shift add Food every saturday 10-13")
    for bob in (BOB_ORG, BOB_UK):
        await pod.say(bob, "!signup S1 all")  # shift sign-ups
    other_before = await naming_whole(pod, BOB_UK)
    assert set(other_before) >= {"posts", "dm_rooms", "outbox", "shift_signups"}
    claim_reply = [o for o in pod.transport.sent if BOB_UK in o.message.mentions]
    assert claim_reply

    await pod.say(BOB_ORG, "!forgetme", room=f"!dm-{BOB_ORG}", direct=True)
    await pod.say(BOB_ORG, "yes", room=f"!dm-{BOB_ORG}", direct=True)

    assert await naming_whole(pod, BOB_ORG) == {}
    assert await naming_whole(pod, BOB_UK) == other_before
    sent_ids = {f"$sent{i + 1}": o for i, o in enumerate(pod.transport.sent)}
    redacted = {sent_ids[event_id].room_id or "dm" for _, event_id in pod.transport.redactions}
    assert redacted and f"!dm-{BOB_UK}" not in redacted
    assert all(BOB_UK not in sent_ids[event_id].message.mentions
               for _, event_id in pod.transport.redactions)
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 2)).author == BOB_UK
        assert await tx.delivery.get_dm_room(BOB_UK) == f"!dm-{BOB_UK}"


async def test_forgetme_redacts_messages_that_name_the_person_in_their_text(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[CAROL] = 50
    await pod.say(CAROL, "!shift add Food every saturday 10-13")
    pod.clock.now = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    noted = await pod.say(CAROL, f"!noshow {BOB} S1 2026-11-28")
    assert BOB in noted[0].message.body and BOB not in noted[0].message.mentions
    noted_event = f"$sent{pod.transport.sent.index(noted[0]) + 1}"
    await pod.say(BOB, "!forgetme", room="!dm-bob:test", direct=True)
    await pod.say(BOB, "yes", room="!dm-bob:test", direct=True)
    assert (POD, noted_event) in pod.transport.redactions


async def test_forgetme_says_exactly_what_stays(pod_rooms):
    question = (await dm(pod_rooms, "!forgetme"))[0]
    assert "last 30 days" in question and "What stays" in question
