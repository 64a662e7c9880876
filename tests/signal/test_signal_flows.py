"""What people in a Signal group and in 1:1 chats see, through the real app, storage and transport,
with the fake daemon on a loopback socket."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import timedelta

import pytest

from bot.context import Outgoing
from bot.formatting import render
from bot.scheduler import Scheduler
from bot.signal_text import MENTION_PLACEHOLDER, person_id
from bot.transport.signal import WITHHELD_NOTICE, SignalSetupError, SignalTransport
from bot.transport.signal_link import link_device
from bot.transport.signal_rpc import SignalRpc
from tests.signal_fake import FakeSignalDaemon

from .conftest import ALICE, BOB, BOT, CAROL, NUMBERS, POD_GROUP, until

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "insulin pickup at 12 Elm Street"


def span(text: str, param: str) -> tuple[str, str]:
    """(the text a `start:length:X` range covers, X), counting UTF-16 units as Signal does."""
    start, length, what = param.split(":", 2)
    units = text.encode("utf-16-le")
    return units[int(start) * 2:(int(start) + int(length)) * 2].decode("utf-16-le"), what


def assert_no_phone_numbers(pod, caplog) -> None:
    stored = pod.database_text()
    sent = repr([s.params for s in pod.fake.sends])
    for number in NUMBERS.values():
        assert number not in stored and number not in sent and number not in caplog.text


async def test_a_need_and_a_match_in_a_group_with_mentions_quotes_and_styles(signal_pod, caplog):
    pod = signal_pod
    caplog.set_level(logging.DEBUG)
    need = await pod.say(ALICE, "!need groceries for a family of 4")
    [reply] = pod.fake.messages(to_group=POD_GROUP)
    assert reply["message"].startswith("Noted need #1 · food: groceries for a family of 4")
    assert "**" not in reply["message"] and "`" not in reply["message"]
    styles = [span(reply["message"], s) for s in reply["textStyle"]]
    assert ("#1", "BOLD") in styles and ("!claim 1", "MONOSPACE") in styles
    assert (reply["quoteTimestamp"], reply["quoteAuthor"]) == (need["timestamp"], ALICE)

    await pod.say(BOB, "!offer food: soup for 4 tonight")
    match = pod.fake.messages(to_group=POD_GROUP)[-1]
    assert "Possible match in food" in match["message"]
    mentioned = [span(match["message"], m) for m in match["mention"]]
    assert (MENTION_PLACEHOLDER, BOB) in mentioned and (MENTION_PLACEHOLDER, ALICE) in mentioned
    assert "@signal:" not in match["message"]
    assert_no_phone_numbers(pod, caplog)


async def test_a_mention_in_a_command_names_the_person(signal_pod):
    pod = signal_pod
    await pod.say(ALICE, "!shift add Food run tomorrow 18:00")
    # "!noshow @Bob S1 <date>": Signal puts a placeholder where Bob's name is, and a mention.
    date = (pod.clock() + timedelta(days=1)).date().isoformat()
    text = f"!noshow {MENTION_PLACEHOLDER} S1 {date}"
    await pod.say(ALICE, text, mentions=[{"uuid": BOB, "start": 8, "length": 1}])
    reply = pod.fake.messages(to_group=POD_GROUP)[-1]
    assert reply["message"].startswith("Noted: ")
    assert [span(reply["message"], m) for m in reply["mention"]] == [(MENTION_PLACEHOLDER, BOB)]


async def test_coordinators_are_the_groups_admins_read_live(signal_pod):
    pod = signal_pod
    await pod.say(BOB, "!settings digest off")
    assert "coordinator" in pod.fake.messages(to_group=POD_GROUP)[-1]["message"]
    pod.fake.groups[POD_GROUP]["admins"].append(BOB)
    pod.transport._groups[POD_GROUP].fetched_at = 0.0  # as if the cache time had passed
    await pod.say(BOB, "!settings digest off")
    assert "coordinator" not in pod.fake.messages(to_group=POD_GROUP)[-1]["message"]


async def private_request(pod) -> None:
    """Alice asks privately in her 1:1 chat, through every step of the conversation."""
    for answer in ("hi", "groceries", SECRET, "1", "1"):
        await pod.say(ALICE, answer, group=False)
    await pod.say(ALICE, "yes", group=False, replies=2)  # the DM answer and the group notice


async def test_a_private_request_by_1_1_posts_only_a_redacted_notice(signal_pod, caplog):
    pod = signal_pod
    await private_request(pod)
    to_alice = [m["message"] for m in pod.fake.messages(to=ALICE)]
    assert "What kind of help" in to_alice[0] and "Posted as #1" in to_alice[-1]
    assert any(SECRET in m for m in to_alice)  # her summary, in her 1:1 chat only
    [notice] = pod.fake.messages(to_group=POD_GROUP)
    assert notice["message"].startswith("#1 Someone needs: food")
    assert SECRET not in repr(pod.fake.messages(to_group=POD_GROUP))
    assert_no_phone_numbers(pod, caplog)


async def test_a_shift_reminder_arrives_by_1_1(signal_pod):
    pod = signal_pod
    start = (pod.clock() + timedelta(days=3)).replace(hour=10, minute=0, second=0)
    await pod.say(ALICE, f"!shift add Food run {start.date().isoformat()} 10:00-13:00 at Hall")
    await pod.say(BOB, "!signup S1")
    before = len(pod.fake.messages(to=BOB))
    pod.clock.now = start - timedelta(hours=2)
    await Scheduler(pod.app).run_due()
    await until(lambda: len(pod.fake.messages(to=BOB)) > before, "the reminder")
    reminder = pod.fake.messages(to=BOB)[-1]
    assert "starts in 2 hours" in reminder["message"] and "**" not in reminder["message"]
    assert "groupId" not in reminder
    assert ("S1 Food run", "BOLD") in [span(reminder["message"], s) for s in reminder["textStyle"]]


async def test_an_identity_change_holds_back_the_introduction_until_confirmed(signal_pod):
    pod = signal_pod
    await private_request(pod)
    pod.fake.identity_changed.add(BOB)  # Bob reinstalled Signal, or someone else has his number
    # Bob offers help: the group reply cannot reach Bob's new device; Alice is asked in her DM.
    await pod.say(BOB, "!claim 1", replies=2)
    # (The answer to an anonymous request's claim goes to Bob's DM: it fails, and is not resent.)
    await until(lambda: any("safety number" in m["message"] for m in pod.fake.messages(to=BOB)),
                "the safety-number notice to Bob")
    notice = pod.fake.messages(to=BOB)[-1]
    assert "safety number" in notice["message"] and "!confirm" in notice["message"]
    assert pod.transport.identity_unconfirmed(person_id(BOB))
    await pod.say(ALICE, "!accept 1", group=False, replies=3)
    intro_group = next(g for g in pod.fake.groups if g != POD_GROUP)
    assert set(pod.fake.groups[intro_group]["members"]) == {BOT, ALICE, BOB}
    in_intro = pod.fake.messages(to_group=intro_group)
    assert [m["message"] for m in in_intro] == [WITHHELD_NOTICE]
    assert SECRET not in repr([s.params for s in pod.fake.sends if s.params.get("recipient") == [BOB]
                               or s.params.get("groupId") == intro_group])
    # Once Bob confirms in his DM, private messages reach him again.
    await pod.say(BOB, "!confirm", group=False)
    assert "confirmed" in pod.fake.messages(to=BOB)[-1]["message"]
    assert not pod.transport.identity_unconfirmed(person_id(BOB))
    await pod.say(BOB, "!confirm", group=False)
    assert "nothing to confirm" in pod.fake.messages(to=BOB)[-1]["message"]


async def test_a_rate_limited_send_is_retried_after_the_delay_signal_asked_for(signal_pod, caplog):
    pod = signal_pod
    pod.fake.fail_next(CAROL, "RATE_LIMIT_FAILURE", retryAfterSeconds=2)
    await pod.say(CAROL, "!help", group=False, replies=2)
    first, second = [s for s in pod.fake.sends if s.params.get("recipient") == [CAROL]]
    assert second.at - first.at >= 2.0
    assert first.params["message"] == second.params["message"]
    assert "rate limited" in caplog.text


async def test_a_rate_limit_challenge_is_reported_to_the_operator(signal_pod, caplog):
    pod = signal_pod
    pod.fake.fail_next(CAROL, "RATE_LIMIT_FAILURE", retryAfterSeconds=1, token="challenge-token-1")
    await pod.say(CAROL, "!help", group=False, replies=2)
    assert "submitRateLimitChallenge --challenge challenge-token-1" in caplog.text


async def test_an_unregistered_recipient_is_a_permanent_failure(signal_pod, caplog):
    pod = signal_pod
    pod.fake.fail_next(CAROL, "UNREGISTERED_FAILURE")
    await pod.say(CAROL, "!help", group=False)
    await pod.say(CAROL, "!mine", group=False)  # the next message is not stuck behind it
    assert len(pod.fake.messages(to=CAROL)) == 2
    assert "no longer registered" in caplog.text


async def test_a_daemon_restart_mid_burst_loses_nothing_and_answers_nothing_twice(signal_pod):
    pod = signal_pod
    pod.fake.crash_after = 5
    envelopes = [pod.fake.inject(pod.fake.envelope(ALICE, f"!need item {n}", group_id=POD_GROUP))
                 for n in range(12)]
    await pod.fake.crashed.wait()
    await pod.fake.start()  # same port: the daemon came back
    pod.fake.redeliver(envelopes[4])  # it had not known that one was handed over
    commands = {e["timestamp"] for e in envelopes}

    def answered() -> list[int]:
        return [m.get("quoteTimestamp") for m in pod.fake.messages(to_group=POD_GROUP)]

    await until(lambda: commands <= set(answered()), "every command to be answered")
    assert sorted(answered()) == sorted(commands)
    assert pod.transport.rpc.reconnects >= 1


async def test_both_shapes_of_receive_notification_are_understood(signal_pod):
    pod = signal_pod
    pod.fake.notification_shape = "plain"  # {"envelope": ..., "account": ...} without a subscription
    await pod.say(ALICE, "!need bread")
    assert pod.fake.messages(to_group=POD_GROUP)[-1]["message"].startswith("Noted need #1")


async def test_messages_for_another_account_of_the_daemon_are_ignored(signal_pod):
    pod = signal_pod
    pod.fake.account = "+15550100199"  # the daemon now says these are for another account
    pod.fake.inject(pod.fake.envelope(ALICE, "!need bread", group_id=POD_GROUP))
    pod.fake.account = BOT
    await pod.say(ALICE, "!need milk")
    [reply] = pod.fake.messages(to_group=POD_GROUP)
    assert "milk" in reply["message"]


async def test_a_deleted_command_withdraws_the_post_and_deletes_the_reply(signal_pod):
    pod = signal_pod
    need = await pod.say(ALICE, "!need groceries")
    before = len(pod.fake.sends)
    pod.fake.inject(pod.fake.envelope(ALICE, None, group_id=POD_GROUP,
                                      remote_delete=need["timestamp"]))
    await until(lambda: len(pod.fake.sends) >= before + 2, "the deletion and the notice")
    deletes = [s.params for s in pod.fake.sends if s.method == "remoteDelete"]
    assert len(deletes) == 1 and deletes[0]["groupId"] == POD_GROUP
    assert "withdrawn" in pod.fake.messages(to_group=POD_GROUP)[-1]["message"]


async def test_an_introduction_is_a_new_group_with_the_pods_disappearing_timer(signal_pod):
    pod = signal_pod
    pod.fake.groups[POD_GROUP]["expiration"] = 7 * 24 * 3600
    await private_request(pod)
    await pod.say(BOB, "!claim 1", replies=2)
    await pod.say(ALICE, "!accept 1", group=False, replies=3)
    intro_group = next(g for g in pod.fake.groups if g != POD_GROUP)
    assert set(pod.fake.groups[intro_group]["members"]) == {BOT, ALICE, BOB}
    assert pod.fake.groups[intro_group]["expiration"] == 7 * 24 * 3600
    [intro] = pod.fake.messages(to_group=intro_group)
    assert SECRET in intro["message"]
    assert {span(intro["message"], m)[1] for m in intro["mention"]} == {ALICE, BOB}


async def test_the_calendar_file_goes_as_an_attachment(signal_pod):
    pod = signal_pod
    await pod.say(ALICE, "!shift add Food run every saturday 10:00-13:00")
    await pod.say(ALICE, "!shifts ics")
    sent = pod.fake.messages(to_group=POD_GROUP)[-1]
    [attachment] = sent["attachments"]
    header, _, data = attachment.partition(",")
    assert header == "data:text/calendar;filename=shifts.ics;base64"
    assert b"BEGIN:VCALENDAR" in base64.b64decode(data)


async def test_linking_shows_a_qr_code_and_the_link_address(signal_pod):
    shown: list[str] = []
    await link_device(signal_pod.transport.signal, shown.append)
    qr, instructions = shown
    assert "█" in qr and len(qr.splitlines()) > 10
    assert "sgnl://linkdevice?" in instructions and "Linked devices" in instructions


async def test_a_resend_after_a_crash_before_the_sent_mark_is_not_sent_again(signal_pod):
    pod = signal_pod
    out = Outgoing(render("Reminder: **S1** tomorrow"), user_id=person_id(ALICE))
    first = await pod.transport.deliver(out, txn_id="mab-9001")
    # The bot died before committing the sent mark; a new process delivers the row again.
    restarted = SignalTransport(pod.transport.config, pod.storage)
    restarted.app = pod.app
    await restarted.connect()
    restarted.rpc = pod.transport.rpc
    assert await restarted.deliver(out, txn_id="mab-9001") == first
    assert len(pod.fake.messages(to=ALICE)) == 1


async def test_a_daemon_without_the_configured_account_stops_the_transport_with_the_reason(
        signal_pod):
    config = signal_pod.transport.config.model_copy(deep=True)
    config.signal.account = "+15550100199"
    transport = SignalTransport(config, signal_pod.storage)
    transport.app = signal_pod.app
    with pytest.raises(SignalSetupError, match="Specified account does not exist.*signal.account"):
        await asyncio.wait_for(transport.run(), 10)


async def test_the_daemon_can_be_reached_on_a_unix_socket(tmp_path):
    fake = FakeSignalDaemon(account=BOT, bot_uuid=BOT, socket_path=str(tmp_path / "signal.sock"))
    await fake.start()
    client = SignalRpc(fake.address)
    running = asyncio.create_task(client.run())
    try:
        await client.wait_connected(10)
        assert await client.call("version") == {"version": "0.13.19"}
    finally:
        await client.close()
        await asyncio.wait_for(running, 10)
        await fake.stop()


async def test_a_network_failure_is_retried(signal_pod):
    pod = signal_pod
    pod.fake.fail_next(CAROL, "NETWORK_FAILURE")
    await pod.say(CAROL, "!help", group=False, replies=2)
    first, second = pod.fake.messages(to=CAROL)
    assert first["message"] == second["message"]


async def test_a_direct_message_to_a_changed_safety_number_is_withheld_until_confirmed(signal_pod):
    pod = signal_pod
    pod.fake.identity_changed.add(CAROL)
    await pod.say(CAROL, "!mine", group=False, replies=2)  # the failed reply, then the notice
    await until(lambda: len(pod.fake.messages(to=CAROL)) == 2, "the notice")
    assert "safety number" in pod.fake.messages(to=CAROL)[-1]["message"]
    before = len(pod.fake.sends)
    await pod.say(CAROL, "!mine", group=False, replies=0)
    await pod.say(ALICE, "!needs")  # a later message goes out: the withheld one is not retried
    assert len(pod.fake.sends) == before + 1
    assert await pod.transport.confirm_identity(person_id(CAROL))
    await pod.say(CAROL, "!mine", group=False)
    assert pod.fake.messages(to=CAROL)[-1]["message"] == pod.fake.messages(to=CAROL)[0]["message"]


async def test_the_bot_itself_is_not_a_member_to_invite_or_mention(signal_pod):
    members = signal_pod.transport.members(f"signal:group:{POD_GROUP}")
    assert members == sorted(person_id(u) for u in (ALICE, BOB, CAROL))
