"""Rooms' state kept across restarts: nio's rooms rebuilt from the stored rows are the rooms nio
built from the syncs themselves (members, invitees, power levels, encryption, name), and nobody
who left is kept. Syncs lazy-load members: a room new to the bot, or one whose sync skipped events,
is read whole before its members count as complete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest_asyncio
from nio import AsyncClient, RoomGetStateError, RoomGetStateResponse, SyncResponse

from bot.storage import Storage
from bot.transport import room_state
from bot.transport.room_state import MemberGaps, fill_room, restore_rooms, sync_changes

BOT = "@bot:x"
POD = "!pod:x"
DM = "!dm:x"


def state(event_type: str, content: dict, state_key: str = "", sender: str = "@alice:x",
          n: int = 1) -> dict:
    return {"type": event_type, "state_key": state_key, "sender": sender, "content": content,
            "event_id": f"${event_type}{state_key}{n}", "origin_server_ts": 1_700_000_000_000 + n,
            "unsigned": {"age": 5, "prev_content": {"membership": "invite"}}}


def member(user_id: str, membership: str, n: int = 1, **extra) -> dict:
    return state("m.room.member", {"membership": membership, **extra}, user_id, sender=user_id,
                 n=n)


def sync(rooms: dict[str, tuple[list[dict], list[dict]]], left: tuple[str, ...] = (),
         batch: str = "s1", limited: tuple[str, ...] = ()) -> SyncResponse:
    """A sync response as the homeserver sends it: per room, its state and timeline events
    (`limited`: the rooms whose timeline skipped events)."""
    join = {room_id: {"state": {"events": st},
                      "timeline": {"events": tl, "limited": room_id in limited},
                      "ephemeral": {"events": []}, "account_data": {"events": []}}
            for room_id, (st, tl) in rooms.items()}
    leave = {room_id: {"state": {"events": []}, "timeline": {"events": [], "limited": False}}
             for room_id in left}
    response = SyncResponse.from_dict({"next_batch": batch,
                                       "rooms": {"join": join, "invite": {}, "leave": leave}})
    assert isinstance(response, SyncResponse), response
    return response


FIRST = sync({
    POD: ([state("m.room.create", {"room_version": "12", "additional_creators": ["@carol:x"]}),
           state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
           state("m.room.name", {"name": "Elm Street pod"}),
           state("m.room.power_levels", {"users": {"@bob:x": 50}}),
           member("@alice:x", "join", displayname="Alice", avatar_url="mxc://x/face"),
           member("@bob:x", "join"), member(BOT, "join"), member("@dora:x", "invite"),
           state("m.room.topic", {"topic": "our street"}),
           state("org.example.anything", {"filler": "x" * 1000}, "k")],
          [member("@erin:x", "join", n=2)]),
    DM: ([state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, sender="@bob:x"),
          member("@bob:x", "join"), member(BOT, "join")], []),
})
LATER = sync({
    POD: ([member("@alice:x", "leave", n=3)],
          [member("@dora:x", "join", n=4), member("@erin:x", "leave", n=5),
           member("@erin:x", "join", n=6),
           state("m.room.power_levels", {"users": {"@bob:x": 100}}, n=7)]),
}, left=(DM,), batch="s2")


async def synced_client(*responses: SyncResponse) -> AsyncClient:
    client = AsyncClient("http://127.0.0.1:1", BOT)
    for response in responses:
        await client.receive_response(response)
    return client


def picture(client: AsyncClient, room_id: str) -> dict:
    room = client.rooms[room_id]
    return {"users": {u: user.display_name for u, user in room.users.items()},
            "invited": sorted(room.invited_users), "encrypted": room.encrypted,
            "power": dict(room.power_levels.users), "name": room.display_name,
            "members": room.member_count}


@pytest_asyncio.fixture
async def storage(tmp_path) -> AsyncIterator[Storage]:
    opened = await Storage.open(tmp_path / "bot.db")
    yield opened
    await opened.close()


async def stored(storage: Storage, *responses: SyncResponse) -> None:
    first, *rest = responses
    async with storage.transaction() as tx:
        await tx.rooms.replace(sync_changes(first)[0], [])
    for response in rest:
        async with storage.transaction() as tx:
            await tx.rooms.update(*sync_changes(response), [])


async def restored(storage: Storage) -> tuple[AsyncClient, dict[str, list]]:
    client = AsyncClient("http://127.0.0.1:1", BOT)
    seen: dict[str, list] = {}
    async with storage.transaction() as tx:
        rows = await tx.rooms.load()
        gaps = await tx.rooms.gaps()
    count = await restore_rooms(client, rows, gaps,
                                lambda room_id, events: seen.setdefault(room_id, events))
    assert count == len(client.rooms)
    return client, seen


async def test_rooms_rebuilt_from_a_full_state_are_the_rooms_the_sync_built(storage):
    async with storage.transaction() as tx:
        assert not await tx.rooms.complete()  # nothing stored: the first start asks for all
    await stored(storage, FIRST)
    async with storage.transaction() as tx:
        assert await tx.rooms.complete()
    client, seen = await restored(storage)
    expected = await synced_client(FIRST)
    assert set(client.rooms) == {POD, DM}
    for room_id in (POD, DM):
        assert picture(client, room_id) == picture(expected, room_id)
    assert picture(client, POD)["users"]["@alice:x"] == "Alice"
    assert picture(client, POD)["invited"] == ["@dora:x"]
    assert client.rooms[POD].encrypted and POD in client.encrypted_rooms
    # The transport reads the creators of a version 12 room from the restored state too.
    assert any(e.source["type"] == "m.room.create" for e in seen[POD])


async def test_changes_after_the_full_state_are_kept_and_who_left_is_not(storage):
    await stored(storage, FIRST, LATER)
    client, _ = await restored(storage)
    expected = await synced_client(FIRST, LATER)
    assert set(client.rooms) == {POD}  # the bot left the direct chat: not rebuilt
    assert picture(client, POD) == picture(expected, POD)
    assert set(client.rooms[POD].users) == {"@bob:x", BOT, "@dora:x", "@erin:x"}
    assert client.rooms[POD].power_levels.users["@bob:x"] == 100
    async with storage.transaction() as tx:
        rows = await tx.fetchall("SELECT room_id, state_key, event FROM room_state")
    assert "@alice:x" not in {row["state_key"] for row in rows}  # she left: her row went
    text = " ".join(row["event"] for row in rows)
    assert "Alice" not in text and "mxc://" not in text and "prev_content" not in text
    assert {row["room_id"] for row in rows} == {POD}


async def test_a_full_state_replaces_what_was_stored(storage):
    await stored(storage, FIRST, LATER)
    only_dm = sync({DM: ([member("@bob:x", "join"), member(BOT, "join")], [])}, batch="s3")
    await stored(storage, only_dm)
    client, _ = await restored(storage)
    assert set(client.rooms) == {DM}
    assert set(client.rooms[DM].users) == {"@bob:x", BOT}


def test_a_member_row_keeps_only_who_they_are_in_the_room():
    changes, left = sync_changes(FIRST)
    assert left == []
    alice = next(c for c in changes if c.state_key == "@alice:x")
    assert json.loads(alice.event)["content"] == {"membership": "join", "displayname": "Alice"}
    assert "unsigned" not in json.loads(alice.event)
    # Only the state the bot needs: not the topic, not whatever else members put in a room.
    assert {c.event_type for c in changes} == {
        "m.room.create", "m.room.encryption", "m.room.name", "m.room.power_levels",
        "m.room.member"}
    # The timeline's state events follow the state section's, in the order they happened.
    assert [c.state_key for c in changes if c.room_id == POD][-1] == "@erin:x"


# ---- lazy-loaded members ------------------------------------------------------------------------

# What a sync lazy-loading members gives for the pod: only the member behind its timeline event.
LAZY = sync({
    POD: ([state("m.room.create", {"room_version": "10"}),
           state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
           state("m.room.power_levels", {"users": {"@alice:x": 100}}),
           member("@alice:x", "join", displayname="Alice"), member(BOT, "join")],
          [{"type": "m.room.message", "sender": "@alice:x", "event_id": "$m1",
            "origin_server_ts": 1_700_000_000_100, "content": {"msgtype": "m.text", "body": "hi"}}]),
    DM: ([state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, sender="@bob:x"),
          member("@bob:x", "join"), member(BOT, "join")], []),
})
# The pod's whole state, as /state answers: bob (silent so far) joined, dora is invited, erin left.
POD_STATE = [
    state("m.room.create", {"room_version": "10"}),
    state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}),
    state("m.room.power_levels", {"users": {"@alice:x": 100}}),
    state("m.room.topic", {"topic": "not kept"}),
    member("@alice:x", "join", displayname="Alice"), member(BOT, "join"),
    member("@bob:x", "join", displayname="Bob"), member("@dora:x", "invite"),
    member("@erin:x", "leave", n=9)]
DM_STATE = [state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, sender="@bob:x"),
            member("@bob:x", "join"), member(BOT, "join")]


class StateReadingClient(AsyncClient):
    """nio's client with /state answered from `states` (a room not in it fails, as a homeserver
    that is down would), counting the reads."""

    def __init__(self, states: dict[str, list[dict]], held: str | None = None) -> None:
        super().__init__("http://127.0.0.1:1", BOT)
        self.states = states
        self.reads: dict[str, int] = {}
        self.held = held  # a room whose answer waits for `release`
        self.release = asyncio.Event()

    async def room_get_state(self, room_id):
        self.reads[room_id] = self.reads.get(room_id, 0) + 1
        if room_id == self.held:
            await self.release.wait()
        if room_id not in self.states:
            return RoomGetStateError("no answer", "M_UNKNOWN", room_id=room_id)
        return RoomGetStateResponse(self.states[room_id], room_id)


async def synced_lazily(storage: Storage, client: AsyncClient, gaps: MemberGaps,
                        response: SyncResponse, *, full_state: bool) -> list[str]:
    """What the transport does with a sync: nio takes it in, then its state and gaps are stored."""
    await client.receive_response(response)
    if full_state:
        gaps.forget()
    found = gaps.note_sync(response)
    changes, left = sync_changes(response)
    async with storage.transaction() as tx:
        if full_state:
            await tx.rooms.replace(changes, found)
        else:
            await tx.rooms.update(changes, left, found)
    return found


async def test_a_room_seen_lazily_is_read_whole_before_its_members_count(storage):
    client = StateReadingClient({POD: POD_STATE, DM: DM_STATE})
    gaps = MemberGaps(storage, lambda room_id, events: None)
    assert await synced_lazily(storage, client, gaps, LAZY, full_state=True) == [POD, DM]
    # Stored as gaps: a restart now would not take these members as the room's.
    restarted, _ = await restored(storage)
    assert set(restarted.rooms[POD].users) == {"@alice:x", BOT}
    assert not restarted.rooms[POD].members_synced  # nio would read them itself before sending
    await gaps.fill(client)
    room = client.rooms[POD]
    assert set(room.users) == {"@alice:x", BOT, "@bob:x", "@dora:x"}
    assert set(room.invited_users) == {"@dora:x"} and room.users["@bob:x"].display_name == "Bob"
    assert room.members_synced and client.rooms[DM].members_synced
    assert gaps.gaps == set()
    async with storage.transaction() as tx:
        assert await tx.rooms.gaps() == set()
        rows = await tx.fetchall("SELECT event_type, state_key FROM room_state WHERE room_id = ?",
                                 (POD,))
    assert "m.room.topic" not in {row["event_type"] for row in rows}
    assert "@erin:x" not in {row["state_key"] for row in rows}  # she left: no row
    # A restart now rebuilds the whole member list, and trusts it.
    restarted, _ = await restored(storage)
    assert picture(restarted, POD)["users"] == picture(client, POD)["users"]
    assert restarted.rooms[POD].members_synced
    # A later sync of a complete room is no gap; one that skipped events is.
    quiet = sync({POD: ([], [member("@bob:x", "leave", n=10)])}, batch="s2")
    assert await synced_lazily(storage, client, gaps, quiet, full_state=False) == []
    assert "@bob:x" not in client.rooms[POD].users
    skipped = sync({POD: ([], [])}, batch="s3", limited=(POD,))
    assert await synced_lazily(storage, client, gaps, skipped, full_state=False) == [POD]
    async with storage.transaction() as tx:
        assert await tx.rooms.gaps() == {POD}


async def test_whoever_left_unseen_is_taken_out_when_the_room_is_read_whole(storage):
    client = StateReadingClient({POD: POD_STATE, DM: DM_STATE})
    await client.receive_response(sync({POD: ([member("@erin:x", "join"), member(BOT, "join")],
                                              [])}))
    assert "@erin:x" in client.rooms[POD].users
    rows = fill_room(client, POD, POD_STATE, lambda room_id, events: None)
    assert rows is not None and "@erin:x" not in client.rooms[POD].users
    assert fill_room(client, "!gone:x", POD_STATE, lambda room_id, events: None) is None


async def test_a_room_whose_state_cannot_be_read_waits_alone(storage, monkeypatch):
    client = StateReadingClient({DM: DM_STATE})  # the pod's state read fails
    gaps = MemberGaps(storage, lambda room_id, events: None)
    await synced_lazily(storage, client, gaps, LAZY, full_state=True)
    await gaps.fill(client)
    assert client.rooms[DM].members_synced and not client.rooms[POD].members_synced
    assert gaps.gaps == {POD}
    async with storage.transaction() as tx:
        assert await tx.rooms.gaps() == {POD}  # a restart reads it again too
    # Tried again only after its back-off: the next sync does not wait on it.
    await gaps.fill(client)
    assert client.reads == {POD: 1, DM: 1}
    # Once due again, its read is started but no sync waits for it (a wait here would hang).
    monkeypatch.setattr(room_state, "_FILL_WAIT_S", 3600)
    client.held = POD
    gaps._retry[POD] = (1, 0.0)  # its back-off is over
    async with asyncio.timeout(30):
        await gaps.fill(client)
    assert gaps.reading and gaps.gaps == {POD}
    await gaps.close()


async def test_a_slow_read_does_not_hold_the_sync_and_a_stale_one_is_not_taken_in(storage,
                                                                                  monkeypatch):
    monkeypatch.setattr(room_state, "_FILL_WAIT_S", 0.05)
    client = StateReadingClient({POD: POD_STATE, DM: DM_STATE}, held=POD)
    gaps = MemberGaps(storage, lambda room_id, events: None)
    await synced_lazily(storage, client, gaps, LAZY, full_state=True)
    await gaps.fill(client)  # returns while the pod's read is still waiting
    assert client.rooms[DM].members_synced and gaps.gaps == {POD}
    # Meanwhile a sync says bob left; the read, begun before, answers with him still in.
    await synced_lazily(storage, client, gaps, sync({POD: ([], [member("@bob:x", "leave", n=10)])},
                                                    batch="s2"), full_state=False)
    client.release.set()
    await asyncio.sleep(0)
    await gaps.fill(client)
    assert "@bob:x" not in client.rooms[POD].users  # the older answer was not taken in
    assert gaps.gaps == {POD} and not client.rooms[POD].members_synced
    await gaps.close()


async def test_a_read_that_ends_after_its_sync_is_taken_in_by_the_next(storage, monkeypatch):
    monkeypatch.setattr(room_state, "_FILL_WAIT_S", 0.05)
    client = StateReadingClient({POD: POD_STATE, DM: DM_STATE}, held=POD)
    gaps = MemberGaps(storage, lambda room_id, events: None)
    await synced_lazily(storage, client, gaps, LAZY, full_state=True)
    await gaps.fill(client)
    client.release.set()
    await gaps._reading[POD]  # it answers between two syncs
    quiet = sync({DM: ([], [])}, batch="s2")
    await synced_lazily(storage, client, gaps, quiet, full_state=False)
    await gaps.fill(client)
    assert set(client.rooms[POD].users) == {"@alice:x", BOT, "@bob:x", "@dora:x"}
    assert gaps.gaps == set() and client.reads == {POD: 1, DM: 1}
    async with storage.transaction() as tx:
        assert await tx.rooms.gaps() == set()
