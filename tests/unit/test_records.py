"""Records through the real app and storage: the ledger, !report, !export csv, the time bank, zones,
masking, retention and !forgetme."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from datetime import timedelta
from pathlib import Path

import pytest

from bot import reports
from bot.commands.privacy import sweep
from bot.commands.records import runner_for
from bot.messages import Outgoing

from .conftest import ALICE, BOB, CAROL, DM, POD

COORD = "@coord:test"
POD2 = "!pod2:test"
COORD_DM = "!dm-coord:test"


def png_facts(data: bytes) -> tuple[int, int, dict[str, str]]:
    """Width, height and text chunks of a PNG, read from its bytes (no imaging library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, texts, size = 8, {}, (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            _, _, rest = rest[2:].partition(b"\0")
            _, _, text = rest.partition(b"\0")
            texts[key.decode("latin-1")] = text.decode()
        pos += 12 + length
    return size[0], size[1], texts


async def ask_report(pod, text: str, sender: str = ALICE, room: str = POD,
                     direct: bool = False) -> Outgoing:
    """Send a report command, let the runner make it, and return the one answer with a file."""
    before = len(pod.transport.sent)
    await pod.say(sender, text, room=room, direct=direct)
    await runner_for(pod.app).idle()
    await pod.app.run_until_idle()
    [answer] = [o for o in pod.transport.sent[before:] if o.attachment is not None]
    return answer


def recompute(db_path, room: str, start, end) -> dict[str, dict[str, dict[str, int]]]:
    """The aggregates straight from the database, independently of bot/reports.py."""
    db = sqlite3.connect(db_path)
    out: dict[str, dict[str, dict[str, int]]] = {"category": {}, "zone": {}}
    since, until = start.isoformat(timespec="microseconds"), end.isoformat(timespec="microseconds")
    for panel, column in (("category", "category"), ("zone", "coalesce(zone, 'no zone')")):
        for key, kind, n in db.execute(
                f"SELECT {column}, kind, COUNT(*) FROM posts WHERE room_id = ? AND created_at "  # noqa: S608
                f">= ? AND created_at <= ? GROUP BY 1, 2", (room, since, until)):
            out[panel].setdefault(key, {"needs": 0, "offers": 0, "fulfilled": 0})[kind + "s"] = n
        for key, n in db.execute(
                f"SELECT {column}, COUNT(*) FROM ledger WHERE room_id = ? AND done_at >= ? "  # noqa: S608
                f"AND done_at <= ? GROUP BY 1", (room, since, until)):
            out[panel].setdefault(key, {"needs": 0, "offers": 0, "fulfilled": 0})["fulfilled"] = n
    db.close()
    return out


def masked(numbers, minimum=3):
    return {panel: {key: {m: (None if 0 < v < minimum else v) for m, v in cells.items()}
                    for key, cells in groups.items()} for panel, groups in numbers.items()}


@pytest.fixture
def coord(pod_rooms):
    pod_rooms.transport.power_levels[COORD] = 50
    pod_rooms.transport.rooms[POD].append(COORD)
    pod_rooms.transport.rooms[COORD_DM] = [COORD]
    return pod_rooms


async def busy_pod(pod) -> None:
    """Food needs and offers with some fulfilled, a few transport posts: a mix of big and small."""
    for i in range(5):
        await pod.say(ALICE, f"!need groceries for family {i}")
    for i in range(4):
        await pod.say(BOB, f"!offer soup for {i + 2}")
    await pod.say(CAROL, "!need ride to clinic")
    for number in (1, 2, 3):
        await pod.say(BOB, f"!claim {number}")
        pod.clock.advance(hours=number)
        await pod.say(BOB, f"!done {number}")
    pod.clock.advance(minutes=5)


# ---- the report -----------------------------------------------------------------------------------


async def test_report_chart_and_table_show_the_aggregates_in_the_database(coord):
    pod = coord
    await pod.say(COORD, "!pod zones riverside")
    await busy_pod(pod)
    answer = await ask_report(pod, "!report")
    assert answer.room_id == POD and answer.reply_to is not None
    image = answer.attachment
    assert image.mimetype == "image/png" and image.is_image
    width, height, texts = png_facts(image.data)
    assert (width, height) == (image.width, image.height) == reports.CHART_SIZE_PX
    plotted = json.loads(texts["Description"])
    now = pod.clock()
    expected = masked(recompute(pod.storage.path, POD, now - timedelta(days=30), now))
    assert plotted == expected
    assert plotted["category"]["food"] == {"needs": 5, "offers": 4, "fulfilled": 3}
    assert plotted["category"]["transport"] == {"needs": None, "offers": 0, "fulfilled": 0}
    # The text table in the same message says the same numbers, masked the same way.
    body = answer.message.body
    assert "- food: 5 / 4 / 3" in body
    assert "- transport: fewer than 3 / 0 / 0" in body
    assert "- riverside: 6 / 4 / 3" in body
    assert "Median time to match: 1.0 hours (3 matched)" in body  # 0, 1 and 3 hours
    assert "Oldest unmet needs: #4 food" in body and "#10 transport" in body


async def test_small_counts_are_masked_in_chart_text_and_csv(coord):
    pod = coord
    await pod.say(ALICE, "!need groceries")
    await pod.say(ALICE, "!need bread")
    await pod.say(BOB, "!claim 1")
    await pod.say(BOB, "!done 1")
    answer = await ask_report(pod, "!report week")
    plotted = json.loads(png_facts(answer.attachment.data)[2]["Description"])
    assert plotted["category"]["food"] == {"needs": None, "offers": 0, "fulfilled": None}
    assert "- food: fewer than 3 / 0 / fewer than 3" in answer.message.body
    assert "2 /" not in answer.message.body and "1 /" not in answer.message.body
    assert "Median time to match: not shown (fewer than 3 matched)" in answer.message.body
    export = await ask_report(pod, "!export csv week", sender=COORD, room=COORD_DM, direct=True)
    rows = list(csv.DictReader(io.StringIO(export.attachment.data.decode())))
    food = {r["measure"]: r["value"] for r in rows
            if r["dimension"] == "category" and r["group"] == "food"}
    assert food == {"needs": "fewer than 3", "offers": "0", "fulfilled": "fewer than 3"}
    # A pod can raise (or lower) the minimum.
    await pod.say(COORD, "!settings report_minimum 1")
    answer = await ask_report(pod, "!report week")
    assert "- food: 2 / 0 / 1" in answer.message.body


async def test_a_bad_period_gets_the_usage(pod):
    body = await pod.reply_to(ALICE, "!report decade")
    assert "use week, month, quarter or year" in body and "Usage: `!report" in body


async def test_a_report_asked_for_before_a_restart_is_made_after_it(coord, tmp_path):
    pod = coord
    await pod.say(ALICE, "!need groceries")
    # The command is handled (its request stored) but the bot stops before making the report.
    await pod.app.receive([pod_incoming(pod, "!report")])
    await pod.app.run_until_idle()
    await runner_for(pod.app).shutdown()
    async with pod.storage.transaction() as tx:
        assert (await tx.fetchone("SELECT COUNT(*) FROM report_requests"))[0] == 1
    runner_for(pod.app).kick()  # what startup does
    await runner_for(pod.app).idle()
    await pod.app.run_until_idle()
    assert sum(1 for o in pod.transport.sent if o.attachment is not None) == 1
    async with pod.storage.transaction() as tx:
        assert (await tx.fetchone("SELECT COUNT(*) FROM report_requests"))[0] == 0


def pod_incoming(pod, text):
    from bot.messages import Incoming

    return Incoming("$restart-report", POD, ALICE, text, False, pod.clock())


# ---- !export csv ----------------------------------------------------------------------------------


async def test_csv_export_parses_with_a_header_and_the_same_numbers(coord):
    pod = coord
    await busy_pod(pod)
    export = await ask_report(pod, "!export csv", sender=COORD, room=COORD_DM, direct=True)
    assert export.room_id == COORD_DM and export.attachment.mimetype == "text/csv"
    text = export.attachment.data.decode()
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert tuple(header) == reports.CSV_HEADER
    values = {(r[4], r[5], r[6]): r[7] for r in rows}
    assert values[("needs", "category", "food")] == "5"
    assert values[("fulfilled", "category", "food")] == "3"
    assert values[("needs", "category", "transport")] == "fewer than 3"
    assert values[("needs", "total", "all")] == "6"
    assert all(r[0] == POD and r[1] == "month" for r in rows)


async def test_csv_is_refused_in_a_pod_room_and_to_non_coordinators(coord):
    pod = coord
    sent = await pod.say(COORD, "!export csv")
    assert [o.attachment for o in sent] == [None]
    assert "only in a direct message" in sent[0].message.body
    sent = await pod.say(ALICE, "!export csv", room=DM, direct=True)
    await runner_for(pod.app).idle()
    assert "Only a pod's coordinators" in sent[0].message.body
    async with pod.storage.transaction() as tx:
        assert (await tx.fetchone("SELECT COUNT(*) FROM report_requests"))[0] == 0


async def test_a_coordinator_of_several_pods_is_asked_which(coord):
    pod = coord
    pod.transport.rooms[POD2] = [COORD, ALICE]
    sent = await pod.say(COORD, "!export csv", room=COORD_DM, direct=True)
    body = sent[0].message.body
    assert "Which pod?" in body and "`!export csv month 2`" in body
    export = await ask_report(pod, "!export csv month 2", sender=COORD, room=COORD_DM,
                              direct=True)
    assert all(row.startswith(POD2) for row in export.attachment.data.decode().splitlines()[1:])


# ---- the time bank ----------------------------------------------------------------------------------


async def test_time_bank_credits_the_helper_and_shows_only_their_own_hours(coord):
    pod = coord
    await pod.say(ALICE, "!need help moving boxes")
    await pod.say(BOB, "!claim 1")
    refused = await pod.reply_to(BOB, "!done 1 2h")
    assert "time bank is off" in refused
    await pod.say(COORD, "!settings timebank on")
    sent = await pod.say(BOB, "!done 1 2h")
    assert any(o.room_id == POD and "2 hours credited to the helper" in o.message.body
               for o in sent)
    assert any(o.user_id == BOB and "2 hours for **#1**" in o.message.body for o in sent)
    # In the pod, the balance goes to the person only; the room sees no number.
    sent = await pod.say(BOB, "!balance")
    [private] = [o for o in sent if o.user_id == BOB]
    [public] = [o for o in sent if o.room_id == POD]
    assert "2 hours given" in private.message.body
    assert "2" not in public.message.body and "hour" not in public.message.body
    sent = await pod.say(ALICE, "!balance")
    assert "No hours" in [o for o in sent if o.user_id == ALICE][0].message.body
    for n in range(2, 5):
        await pod.say(ALICE, f"!need help {n}")
        await pod.say(BOB, f"!claim {n}")
        await pod.say(BOB, f"!done {n} 1.5")
    answer = await ask_report(pod, "!report")
    assert "Time bank: 6.5 hours given in the pod" in answer.message.body
    assert BOB not in answer.message.body


@pytest.mark.parametrize("hours", ["0h", "25h", "two hours", "-1"])
async def test_bad_hours_get_the_usage_and_change_nothing(coord, hours):
    pod = coord
    await pod.say(COORD, "!settings timebank on")
    await pod.say(ALICE, "!need help")
    await pod.say(BOB, "!claim 1")
    body = await pod.reply_to(BOB, f"!done 1 {hours}")
    assert "Usage: `!done" in body
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).status.value == "claimed"


# ---- zones ------------------------------------------------------------------------------------------


async def test_a_private_request_is_asked_its_zone_when_the_pod_uses_zones(coord):
    pod = coord
    await pod.say(COORD, "!pod zones riverside, old town")
    replies = []
    for answer in ("food", "bread and milk", "1", "old town", "1"):
        sent = await pod.say(ALICE, answer, room=DM, direct=True)
        replies.append(sent[-1].message.body)
    assert "Which part of the pod's area" in replies[2]
    assert "1. riverside\n2. old town" in replies[2]
    assert "zone old town" in replies[-1]
    await pod.say(ALICE, "yes", room=DM, direct=True)
    async with pod.storage.transaction() as tx:
        assert (await tx.posts.by_number(POD, 1)).zone == "old town"


# ---- retention and !forgetme ------------------------------------------------------------------------


async def numbers(pod) -> dict:
    return json.loads(png_facts((await ask_report(pod, "!report year")).attachment.data)[2][
        "Description"])


async def test_retention_and_forgetme_keep_the_numbers_and_drop_the_names(coord):
    pod = coord
    await pod.say(COORD, "!settings timebank on")
    await busy_pod(pod)
    await pod.say(BOB, "!lend ladder for 2 days")
    await pod.say(ALICE, "!borrow 1")
    await pod.say(BOB, "yes", room="!dm-bob:test", direct=True)
    await pod.say(BOB, "!returned 1")
    before = await numbers(pod)
    # Retention: everything closed long enough ago loses its people.
    pod.clock.advance(days=31)
    await sweep(pod.storage, pod.app.config, pod.clock())
    async with pod.storage.transaction() as tx:
        assert await tx.fetchall("SELECT * FROM loans WHERE borrower IS NOT NULL "
                                 "OR owner IS NOT NULL") == []
        assert await tx.fetchall("SELECT * FROM posts WHERE status = 'done' "
                                 "AND (author IS NOT NULL OR claimed_by IS NOT NULL)") == []
    pod.clock.now -= timedelta(days=31)  # the same period as before
    assert await numbers(pod) == before
    # !forgetme: no row in any table names the person; the numbers stay.
    for person in (ALICE, BOB):
        dm_room = DM if person == ALICE else "!dm-bob:test"
        await pod.say(person, "!forgetme", room=dm_room, direct=True)
        await pod.say(person, "yes", room=dm_room, direct=True)
        async with pod.storage.transaction() as tx:
            named = {t: n for t, n in (await tx.privacy.table_rows_mentioning(person)).items() if n}
        assert named == {}
    after = await numbers(pod)
    assert after["category"]["food"]["fulfilled"] == before["category"]["food"]["fulfilled"] == 3
    # Open posts of the forgotten were withdrawn; what was posted and fulfilled still counts.
    assert after == before


# ---- the ledger ---------------------------------------------------------------------------------------


async def test_the_ledger_names_nobody_and_records_the_times(coord):
    pod = coord
    await pod.say(ALICE, "!need groceries urgent")
    pod.clock.advance(hours=3)
    await pod.say(BOB, "!claim 1")
    pod.clock.advance(hours=2)
    await pod.say(ALICE, "!done 1")
    async with pod.storage.transaction() as tx:
        [row] = await tx.fetchall("SELECT * FROM ledger")
    assert (row["category"], row["urgency"], row["room_id"]) == ("food", 2, POD)
    assert row["match_seconds"] == 3 * 3600 and row["fulfil_seconds"] == 5 * 3600
    assert not any(isinstance(v, str) and "@" in v for v in dict(row).values())


# ---- network rooms --------------------------------------------------------------------------------


async def test_a_report_in_a_network_room_answers_pod_by_pod_for_this_bots_pods(coord):
    pod = coord
    network = "!network:test"
    pod.transport.rooms[network] = [COORD]
    await pod.say(COORD, "!pod name Elm Street")
    await busy_pod(pod)
    await pod.say(BOB, "!need soup", room=POD2)
    async with pod.storage.transaction() as tx:
        await tx.network.link(POD, network, "#city:test", pod.clock())
        await tx.network.link(POD2, network, "#city:test", pod.clock())
    before = len(pod.transport.sent)
    await pod.say(COORD, "!report", room=network)
    await runner_for(pod.app).idle()
    await pod.app.run_until_idle()
    answers = [o for o in pod.transport.sent[before:] if o.attachment is not None]
    assert [o.room_id for o in answers] == [network, network]
    titles = sorted(o.message.body.splitlines()[0] for o in answers)
    assert titles == ["An unnamed pod", "Elm Street pod"]
    elm = next(o for o in answers if o.message.body.startswith("Elm Street pod"))
    now = pod.clock()
    plotted = json.loads(png_facts(elm.attachment.data)[2]["Description"])
    assert plotted == masked(recompute(pod.storage.path, POD, now - timedelta(days=30), now))
    for answer in answers:
        assert ALICE not in answer.message.body and BOB not in answer.message.body


_BOT_WITH_A_DRAWING_PROCESS = """
import os, sys, time
from bot.commands.records import _render_pool
print(_render_pool().submit(os.getpid).result(), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (one nobody reaped is gone as far as anyone can tell)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_drawing_process_ends_when_the_bot_is_killed_outright():
    bot = subprocess.Popen([sys.executable, "-c", _BOT_WITH_A_DRAWING_PROCESS],
                           stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        drawer = int(bot.stdout.readline())
        assert _running(drawer)
        bot.kill()  # as kill -9: the pool is never shut down
        bot.wait(10)
        deadline = time.monotonic() + 15
        while _running(drawer) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(drawer), "the drawing process outlived the bot"
    finally:
        bot.kill()
        bot.wait(10)
