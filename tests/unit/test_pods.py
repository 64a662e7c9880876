"""One pod across networks, with the real app, handlers and storage behind a fake transport: shared
numbers, matches told in each room, relays across networks, and the router that picks a network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bot.app import App
from bot.commands import build_registry
from bot.config import BotConfig, PodConfig
from bot.formatting import render
from bot.messages import DeliveryError, Edit, Outgoing, Reaction, RoomRequest
from bot.router import Router
from bot.storage import Storage

from .conftest import ALICE, BOB, POD, Clock, FakeTransport, Pod

GROUP_ID = "R3JvdXBJZA=="
GROUP = f"signal:group:{GROUP_ID}"
SAM = "@signal:5a5a5a5a-0000-4000-8000-00000000005a"
SAM_DM = "signal:dm:5a5a5a5a-0000-4000-8000-00000000005a"
OTHER_POD = "!elsewhere:test"


@pytest.fixture
async def pods(tmp_path):
    config = BotConfig(pods=[PodConfig(name="Elm Street", matrix_rooms=[POD],
                                       signal_groups=[GROUP_ID])])
    storage = await Storage.open(tmp_path / "bot.db")
    transport = FakeTransport(rooms={POD: [ALICE, BOB], GROUP: [SAM], OTHER_POD: [BOB]})
    clock = Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    app = App(storage, config, transport, clock=clock)
    yield Pod(app, storage, transport, clock)
    await app.stop()
    await storage.close()


def bodies(sent: list[Outgoing], **where: str) -> list[str]:
    return [o.message.body for o in sent
            if all(getattr(o, key) == value for key, value in where.items())]


async def test_a_need_on_signal_matches_an_offer_on_matrix_and_both_rooms_are_told(pods):
    need = await pods.say(SAM, "!need groceries for two", room=GROUP)
    assert bodies(need, room_id=GROUP)[0].startswith("Noted need **#1**")
    offer = await pods.say(ALICE, "!offer groceries run saturday")
    [reply] = bodies(offer, room_id=POD)
    assert "Noted offer **#2**" in reply  # numbers are shared by the pod's rooms
    assert f"{SAM} needs **#1**" in reply
    [elsewhere] = [o for o in offer if o.room_id == GROUP]
    assert f"{SAM}'s need **#1**" in elsewhere.message.body and "!claim 2" in elsewhere.message.body
    assert SAM in elsewhere.message.mentions and ALICE in elsewhere.message.mentions
    # A room outside the pod sees nothing and matches nothing.
    other = await pods.say(BOB, "!offer groceries too", room=OTHER_POD)
    assert "Possible match" not in bodies(other, room_id=OTHER_POD)[0]
    assert "#1" in bodies(other, room_id=OTHER_POD)[0]  # its own numbering


async def test_a_claim_across_networks_opens_a_relay_until_end(pods):
    await pods.say(SAM, "!need groceries for two", room=GROUP)
    claimed = await pods.say(ALICE, "!claim 1")
    assert "another network" in bodies(claimed, room_id=POD)[0]
    assert "is claimed" in bodies(claimed, room_id=GROUP)[0]
    assert all("connected about **#1**" in b for b in
               bodies(claimed, user_id=SAM) + bodies(claimed, user_id=ALICE))

    passed = await pods.say(SAM, "Thanks! 6pm?\nat the library", room=SAM_DM, direct=True)
    [relayed] = [o for o in passed if o.user_id == ALICE]
    assert relayed.message.body == f"[relayed from {SAM}] Thanks! 6pm?\nat the library"
    back = await pods.say(ALICE, "6pm works", room="!dm-alice:test", direct=True)
    assert bodies(back, user_id=SAM) == [f"[relayed from {ALICE}] 6pm works"]
    # Commands in the DM are still commands, not relayed.
    mine = await pods.say(ALICE, "!mine", room="!dm-alice:test", direct=True)
    assert bodies(mine, user_id=SAM) == []

    ended = await pods.say(SAM, "!end", room=SAM_DM, direct=True)
    assert "Ended" in bodies(ended, room_id=SAM_DM)[0]
    assert "ended the relayed conversation" in bodies(ended, user_id=ALICE)[0]
    after = await pods.say(SAM, "one more thing", room=SAM_DM, direct=True)
    assert bodies(after, user_id=ALICE) == []
    again = await pods.say(SAM, "!end", room=SAM_DM, direct=True)
    assert "no relayed conversation" in bodies(again, room_id=SAM_DM)[0]


async def test_a_private_request_accepted_across_networks_is_relayed_not_a_room(pods):
    await pods.say(SAM, "!need", room=SAM_DM, direct=True)
    for answer in ("food", "insulin pickup", "2", "1", "yes"):
        await pods.say(SAM, answer, room=SAM_DM, direct=True)
    claimed = await pods.say(ALICE, "!claim 1")
    assert any("offered to help" in b for b in bodies(claimed, user_id=SAM))
    accepted = await pods.say(SAM, "yes", room=SAM_DM, direct=True)
    assert pods.transport.private_rooms == []
    assert any("connected about **#1**" in b for b in bodies(accepted, user_id=ALICE))
    assert "being handled" in bodies(accepted, room_id=GROUP)[0]


async def test_edits_and_reactions_are_typed_events_handled_once(pods):
    when = pods.clock()
    edit = Edit("$e1", POD, ALICE, "$orig", "!need bread", False, when)
    reaction = Reaction("$r1", POD, ALICE, "$orig", "👍", False, when)
    assert await pods.app.receive([edit, reaction]) == 2
    assert await pods.app.receive([edit, reaction]) == 0  # a second delivery is the same event
    await pods.app.run_until_idle()
    assert pods.transport.sent == []  # an edit is never a second command
    async with pods.storage.transaction() as tx:
        rows = await tx.fetchall("SELECT kind, target, handled_at FROM inbox ORDER BY seq")
    assert [(r["kind"], r["target"]) for r in rows] == [("edit", "$orig"), ("reaction", "$orig")]
    assert all(r["handled_at"] for r in rows)


def test_pods_name_rooms_once_and_matrix_rooms_by_id():
    config = BotConfig(pods=[PodConfig(name="A", matrix_rooms=["!a:x"], signal_groups=["g"])])
    assert config.pod_rooms("signal:group:g") == ("signal:group:g", "!a:x")
    assert config.pod_rooms("!other:x") == ("!other:x",)
    with pytest.raises(ValidationError, match="belongs to one pod"):
        BotConfig(pods=[PodConfig(name="A", matrix_rooms=["!a:x"]),
                        PodConfig(name="B", matrix_rooms=["!a:x"])])
    with pytest.raises(ValidationError, match="not a Matrix room id"):
        PodConfig(name="A", matrix_rooms=["#alias:x"])


class NetworkFake(FakeTransport):
    def __init__(self, network: str) -> None:
        super().__init__()
        self.network = network


async def test_the_router_hands_each_destination_to_its_network():
    router = Router()
    matrix, signal = NetworkFake("matrix"), NetworkFake("signal")
    router.attach(matrix)
    router.attach(signal)
    await router.deliver(Outgoing(render("hi"), room_id=GROUP), "mab-1")
    await router.deliver(Outgoing(render("hi"), user_id=SAM), "mab-2")
    await router.deliver(Outgoing(render("hi"), room_id=POD), "mab-3")
    await router.deliver(Outgoing(render("hi"), user_id=ALICE), "mab-4")
    assert signal.txn_ids == ["mab-1", "mab-2"] and matrix.txn_ids == ["mab-3", "mab-4"]
    with pytest.raises(DeliveryError, match="one network") as mixed:
        await router.make_room(RoomRequest("tag-1", "Mutual aid #1", (ALICE, SAM)), None)
    assert mixed.value.permanent
    only_matrix = Router()
    only_matrix.attach(NetworkFake("matrix"))
    with pytest.raises(DeliveryError) as error:
        await only_matrix.deliver(Outgoing(render("hi"), user_id=SAM), "mab-5")
    assert error.value.permanent


def test_each_registry_is_its_own_instance():
    first, second = build_registry(), build_registry()
    assert first.by_word.keys() == second.by_word.keys() and first is not second
    assert [h.__name__ for h in first.direct_hooks] == [
        "ignore_blocked", "on_confirmation", "on_owner_answer", "relay_direct", "on_direct"]
    first.by_word.clear()
    assert "need" in second.by_word
