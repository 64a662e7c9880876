"""Delivery keeps order per destination; one failing destination never holds up the others, and
what cannot be delivered ends as a dead letter that coordinators see (issue 9)."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.messages import DeliveryError, Outgoing, Rendered

from .conftest import ALICE, BOB, POD, FakeTransport

OTHER = "!other:test"
GONE = "!gone:test"


class FlakyTransport(FakeTransport):
    """Fails every send to some destinations: permanently, or for now."""

    def __init__(self) -> None:
        super().__init__()
        self.permanent: set[str] = set()
        self.transient: set[str] = set()
        self.attempts: dict[str, int] = {}

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        self.attempts[out.destination] = self.attempts.get(out.destination, 0) + 1
        if out.destination in self.permanent:
            raise DeliveryError("the bot is not in this room", permanent=True)
        if out.destination in self.transient:
            raise DeliveryError("server unreachable")
        return await super().deliver(out, txn_id)


def _message(text: str, room: str | None = None, user: str | None = None) -> Outgoing:
    return Outgoing(Rendered(text, text), room_id=room, user_id=user)


async def _queue(pod, *items: Outgoing) -> None:
    async with pod.storage.transaction() as tx:
        await tx.delivery.enqueue(list(items), pod.clock())


def _dead(pod) -> list[tuple[str, str]]:
    with sqlite3.connect(pod.storage.path) as db:
        return db.execute("SELECT destination, dead_reason FROM outbox WHERE dead_at IS NOT NULL "
                          "ORDER BY id").fetchall()


async def test_a_failing_destination_backs_off_alone_and_keeps_its_order(pod):
    transport = FlakyTransport()
    pod.app.transport = pod.transport = transport
    transport.transient.add(f"person:{BOB}")
    await _queue(pod, _message("to bob 1", user=BOB), _message("pod 1", room=POD),
                 _message("to bob 2", user=BOB), _message("other 1", room=OTHER),
                 _message("pod 2", room=POD))
    await pod.app.deliver_pending()
    assert [o.message.body for o in transport.sent] in (
        ["pod 1", "pod 2", "other 1"], ["other 1", "pod 1", "pod 2"])
    # Bob's first message was tried once, his second not at all (order is kept for him), and
    # a second pass right away does not hammer his server: he is backing off.
    assert transport.attempts[f"person:{BOB}"] == 1
    await pod.app.deliver_pending()
    assert transport.attempts[f"person:{BOB}"] == 1

    transport.transient.clear()
    pod.app._failing.clear()  # the back-off has run out
    await pod.app.deliver_pending()
    assert [o.message.body for o in transport.sent][-2:] == ["to bob 1", "to bob 2"]
    assert _dead(pod) == []


async def test_permanent_failures_become_dead_letters_at_once_and_are_never_retried(pod):
    transport = FlakyTransport()
    pod.app.transport = pod.transport = transport
    transport.permanent.add(GONE)
    await _queue(pod, _message("lost 1", room=GONE), _message("kept", room=POD),
                 _message("lost 2", room=GONE))
    await pod.app.deliver_pending()
    assert [o.message.body for o in transport.sent] == ["kept"]
    assert _dead(pod) == [(GONE, "the bot is not in this room")] * 2
    await pod.app.deliver_pending()
    assert transport.attempts[GONE] == 2  # each tried once, never again
    # What they said is not kept; where and why are.
    with sqlite3.connect(pod.storage.path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL "
                          "AND body != ''").fetchone()[0] == 0


async def test_a_transient_failure_that_outlasts_the_bound_becomes_a_dead_letter(pod):
    transport = FlakyTransport()
    pod.app.transport = pod.transport = transport
    transport.transient.add(f"person:{BOB}")
    await _queue(pod, _message("reminder", user=BOB))
    await pod.app.deliver_pending()
    assert _dead(pod) == []
    pod.clock.advance(hours=pod.app.config.delivery.give_up_after_hours + 1)
    pod.app._failing.clear()
    await pod.app.deliver_pending()
    [(destination, reason)] = _dead(pod)
    assert destination == f"person:{BOB}" and reason.startswith("still failing after 24 hours")


async def test_a_hanging_destination_does_not_delay_another(pod):
    release = asyncio.Event()

    delivered = asyncio.Event()

    class HangingTransport(FakeTransport):
        async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
            if out.room_id == GONE:
                await release.wait()
            event_id = await super().deliver(out, txn_id)
            delivered.set()
            return event_id

    transport = HangingTransport()
    pod.app.transport = pod.transport = transport
    pod.app.start()
    await _queue(pod, _message("slow", room=GONE))
    pod.app.wake_outbox()
    await asyncio.sleep(0.05)
    await _queue(pod, _message("quick", room=POD))
    pod.app.wake_outbox()
    async with asyncio.timeout(5):
        await delivered.wait()
    assert [o.message.body for o in transport.sent] == ["quick"]
    delivered.clear()
    release.set()
    async with asyncio.timeout(5):
        await delivered.wait()
    assert [o.message.body for o in transport.sent] == ["quick", "slow"]


async def test_status_lists_this_rooms_dead_letters_to_coordinators_only(pod_rooms):
    pod = pod_rooms
    transport = FlakyTransport()
    transport.rooms = pod.transport.rooms
    pod.app.transport = pod.transport = transport
    transport.permanent.update({POD, f"person:{BOB}", OTHER})
    await _queue(pod, _message("digest", room=POD), _message("reminder", user=BOB),
                 _message("elsewhere", room=OTHER))
    await pod.app.deliver_pending()
    transport.permanent.clear()

    [refused] = await pod.say(BOB, "!status")
    assert "A coordinator is needed" in refused.message.body
    transport.power_levels[ALICE] = 100
    [reply] = await pod.say(ALICE, "!status")
    body = reply.message.body
    assert "2 message(s) could not be delivered" in body
    assert "a message in this room: the bot is not in this room" in body
    assert f"a direct message to {BOB}" in body
    assert "Version:" in body and "Messages waiting to be sent (all rooms): 0" in body
    # Another room's trouble is not this room's business.
    assert "elsewhere" not in body and OTHER not in body


async def test_status_says_when_nothing_is_stuck(pod_rooms):
    pod = pod_rooms
    pod.transport.power_levels[ALICE] = 100
    [reply] = await pod.say(ALICE, "!status")
    assert "Nothing is stuck" in reply.message.body

