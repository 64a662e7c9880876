"""Pods: naming them, their zones (areas, never addresses), and `!pod`'s summary."""

from __future__ import annotations

import pytest

from bot import pods

from .conftest import ALICE, BOB, DM, POD

COORD = "@coord:test"


@pytest.fixture
def coord(pod_rooms):
    pod_rooms.transport.power_levels[COORD] = 50
    pod_rooms.transport.rooms[POD].append(COORD)
    return pod_rooms


@pytest.mark.parametrize("text, zones", [
    ("North, Riverside", ("north", "riverside")),
    ("north;  old   town\nnorth", ("north", "old town")),
    ("none", ()),
    (" NONE ", ()),
])
def test_zones_are_parsed_in_order_without_repeats(text, zones):
    assert pods.parse_zones(text) == zones


@pytest.mark.parametrize("text", ["12 Elm Street", "E14 5AB", "10115", "@bob:test", "x" * 41,
                                  ", ,", ",".join(f"z{c}" for c in "abcdefghijklm")])
def test_zones_that_look_like_addresses_or_are_too_many_are_refused(text):
    with pytest.raises(pods.PodRuleError):
        pods.parse_zones(text)


@pytest.mark.parametrize("text, zone", [
    ("groceries for the riverside flats", "riverside"),
    ("ride from north east to clinic", "north east"),
    ("Riverside, please!", "riverside"),
    ("bread for northerners", None),
    ("north or riverside, either", None),
    ("nothing about places", None),
])
def test_a_post_is_counted_in_the_one_zone_it_names(text, zone):
    assert pods.zone_in_text(text, ("north", "north east", "riverside")) == zone


def test_a_pod_with_one_zone_counts_every_post_in_it():
    assert pods.zone_for_post("anything", ("riverside",)) == "riverside"
    assert pods.zone_for_post("anything", ()) is None


async def test_coordinators_name_the_pod_and_set_its_zones(coord):
    pod = coord
    assert "is now called **Elm Street**" in await pod.reply_to(COORD, "!pod name  Elm   Street")
    assert "north, riverside" in await pod.reply_to(COORD, "!pod zones North, Riverside")
    summary = await pod.reply_to(ALICE, "!pod")
    assert "**Elm Street**" in summary
    assert "Size: 4 people" in summary
    assert "Zones: north, riverside" in summary
    async with pod.storage.transaction() as tx:
        assert await tx.settings.room(POD) == {"pod_name": "Elm Street", "zones": "north, riverside"}


async def test_members_cannot_rename_the_pod_and_addresses_are_refused_with_usage(coord):
    pod = coord
    assert "A coordinator is needed to name the pod" in await pod.reply_to(BOB, "!pod name Mine")
    refused = await pod.reply_to(COORD, "!pod zones 12 elm street")
    assert "looks like an address" in refused and "!pod" in refused
    assert "one of: name, split, zones" in await pod.reply_to(ALICE, "!pod dance")
    async with pod.storage.transaction() as tx:
        assert await tx.settings.room(POD) == {}


async def test_the_summary_counts_open_needs_offers_and_shifts(coord):
    pod = coord
    await pod.say(ALICE, "!need groceries riverside")
    await pod.say(BOB, "!offer ride to clinic")
    await pod.say(BOB, "!offer spare bread")
    summary = await pod.reply_to(ALICE, "!pod")
    assert "Open: 1 needs, 2 offers" in summary
    assert "Shifts: 0" in summary
    assert "Coordinators can set them with" in summary


async def test_a_post_naming_a_zone_is_counted_in_it_and_zones_none_clears(coord):
    pod = coord
    await pod.say(COORD, "!pod zones north, riverside")
    await pod.say(ALICE, "!need groceries for riverside")
    await pod.say(ALICE, "!need a ladder")
    await pod.say(COORD, "!pod zones none")
    await pod.say(ALICE, "!need soup riverside")
    async with pod.storage.transaction() as tx:
        assert [(await tx.posts.by_number(POD, n)).zone for n in (1, 2, 3)] == [
            "riverside", None, None]
        assert await tx.settings.room(POD) == {}


async def test_a_private_request_to_a_pod_with_one_zone_is_not_asked_it(coord):
    pod = coord
    await pod.say(COORD, "!pod zones riverside")
    prompts = [(await pod.say(ALICE, answer, room=DM, direct=True))[-1].message.body
               for answer in ("!need food", "bread", "2")]
    assert "Which part" not in prompts[-1] and "How should it appear" in prompts[-1]
    await pod.say(ALICE, "1", room=DM, direct=True)
    await pod.say(ALICE, "yes", room=DM, direct=True)
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).zone == "riverside"


async def test_a_private_request_naming_no_zone_of_the_pod_is_asked_again(coord):
    pod = coord
    await pod.say(COORD, "!pod zones north, riverside")
    for answer in ("!need food", "bread", "2"):
        await pod.say(ALICE, answer, room=DM, direct=True)
    again = (await pod.say(ALICE, "12 elm street", room=DM, direct=True))[-1].message.body
    assert again.startswith("That is not one of the pod's zones.") and "2. riverside" in again
    chosen = (await pod.say(ALICE, "2", room=DM, direct=True))[-1].message.body
    assert "How should it appear" in chosen


async def test_the_old_single_zone_setting_becomes_the_pods_zones(tmp_path):
    from bot.storage import Storage
    from bot.store.migrations import MIGRATIONS

    path = tmp_path / "bot.db"
    before = next(i for i, m in enumerate(MIGRATIONS) if m.name == "pod zones")
    older = await Storage.open(path, migrations=MIGRATIONS[:before])
    async with older.transaction() as tx:
        await tx.settings.set(POD, "zone", "riverside")
    await older.close()
    storage = await Storage.open(path)
    async with storage.transaction() as tx:
        assert await tx.settings.room(POD) == {"zones": "riverside"}
    await storage.close()
