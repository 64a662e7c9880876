"""The bot's account keeps no notification counts: the master push rule is turned on at start,
and a room whose sync still shows counts (stored before) gets one private receipt, a few at a
time; a homeserver that refuses either is logged and the bot runs on."""

from __future__ import annotations

import asyncio
import logging

from nio import (
    EnablePushRuleError,
    EnablePushRuleResponse,
    PushRuleKind,
    RoomReadMarkersError,
    RoomReadMarkersResponse,
    SyncResponse,
)

from bot.transport.quiet_account import MASTER_RULE, RECEIPTS_AT_ONCE, QuietAccount


def message(n: int) -> dict:
    return {"type": "m.room.message", "sender": "@alice:x", "event_id": f"$m{n}",
            "origin_server_ts": 1_700_000_000_000 + n, "content": {"msgtype": "m.text", "body": "hi"}}


def sync(rooms: dict[str, tuple[int, int]]) -> SyncResponse:
    """Per room: how many timeline events and the notification count the homeserver shows."""
    join = {room_id: {"timeline": {"events": [message(n) for n in range(events)], "limited": False},
                      "state": {"events": []}, "ephemeral": {"events": []},
                      "account_data": {"events": []},
                      "unread_notifications": {"notification_count": count, "highlight_count": 0}}
            for room_id, (events, count) in rooms.items()}
    response = SyncResponse.from_dict({"next_batch": "s1", "rooms": {"join": join}})
    assert isinstance(response, SyncResponse), response
    return response


class Homeserver:
    """The two calls QuietAccount makes, answered as told; receipts wait until `release` is set."""

    def __init__(self, *, rule_ok: bool = True, receipts_ok: bool = True) -> None:
        self.rule_ok, self.receipts_ok = rule_ok, receipts_ok
        self.rules: list[tuple[str, PushRuleKind, str, bool]] = []
        self.receipts: list[tuple[str, str, str | None]] = []
        self.in_flight = self.most_in_flight = 0
        self.release = asyncio.Event()

    async def enable_pushrule(self, scope, kind, rule_id, enable):
        self.rules.append((scope, kind, rule_id, enable))
        if self.rule_ok:
            return EnablePushRuleResponse()
        return EnablePushRuleError("M_FORBIDDEN")

    async def room_read_markers(self, room_id, fully_read_event, read_event=None,
                                private_read_event=None):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        self.receipts.append((room_id, fully_read_event, private_read_event))
        if self.receipts_ok:
            return RoomReadMarkersResponse(room_id)
        return RoomReadMarkersError("M_LIMIT_EXCEEDED")


async def settle(quiet: QuietAccount) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await quiet.close()


async def test_the_master_rule_is_turned_on_and_each_room_with_counts_read_once():
    server, quiet = Homeserver(), QuietAccount()
    await quiet.silence(server)
    assert server.rules == [("global", PushRuleKind.override, MASTER_RULE, True)]
    server.release.set()
    quiet.note_sync(server, sync({"!a:x": (3, 2), "!quiet:x": (2, 0), "!b:x": (1, 1)}))
    quiet.note_sync(server, sync({"!a:x": (1, 3), "!c:x": (0, 4)}))  # !c: nothing to mark
    await settle(quiet)
    assert sorted(server.receipts) == [("!a:x", "$m2", "$m2"), ("!b:x", "$m0", "$m0")]


async def test_receipts_go_a_few_at_a_time():
    server, quiet = Homeserver(), QuietAccount()
    await quiet.silence(server)
    quiet.note_sync(server, sync({f"!r{n}:x": (1, 1) for n in range(30)}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert server.most_in_flight == RECEIPTS_AT_ONCE
    server.release.set()
    await settle(quiet)
    assert len(server.receipts) == 30 and server.most_in_flight == RECEIPTS_AT_ONCE


async def test_a_refused_rule_is_logged_and_no_receipts_follow(caplog):
    server, quiet = Homeserver(rule_ok=False), QuietAccount()
    with caplog.at_level(logging.WARNING):
        await quiet.silence(server)
    assert "could not turn off notifications" in caplog.text
    server.release.set()
    quiet.note_sync(server, sync({"!a:x": (2, 5)}))
    await settle(quiet)
    assert server.receipts == []


async def test_a_refused_receipt_is_logged_and_not_retried(caplog):
    server, quiet = Homeserver(receipts_ok=False), QuietAccount()
    await quiet.silence(server)
    server.release.set()
    with caplog.at_level(logging.INFO):
        quiet.note_sync(server, sync({"!a:x": (2, 5)}))
        await asyncio.sleep(0.01)
        quiet.note_sync(server, sync({"!a:x": (1, 6)}))
        await settle(quiet)
    assert server.receipts == [("!a:x", "$m1", "$m1")]
    assert "could not mark !a:x read" in caplog.text


async def test_closing_cancels_receipts_still_waiting():
    server, quiet = Homeserver(), QuietAccount()
    await quiet.silence(server)
    quiet.note_sync(server, sync({"!a:x": (1, 1)}))
    await asyncio.sleep(0)
    await asyncio.wait_for(quiet.close(), 1)
    assert server.receipts == []


async def test_starting_waits_for_nothing_and_closing_ends_a_hanging_request():
    class Hanging(Homeserver):
        async def enable_pushrule(self, scope, kind, rule_id, enable):
            await asyncio.Event().wait()

    quiet = QuietAccount()
    quiet.start(Hanging())  # returns at once: the bot's first sync is not held up
    await asyncio.sleep(0)
    assert not quiet.silenced
    await asyncio.wait_for(quiet.close(), 1)
