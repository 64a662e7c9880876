"""Records on a real Synapse in an encrypted room: the report's chart decrypts to a PNG of the size
its event states, with the database's numbers; the CSV export arrives in the coordinator's DM."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from nio.crypto.attachments import decrypt_attachment

from bot import reports

from ..unit.test_records import masked, png_facts, recompute
from .test_bot_basics import ask, pod_with
from .test_shifts_e2e import open_dm_with_bot


async def download(person, content: dict) -> bytes:
    info = content["file"]
    response = await person.client.download(mxc=info["url"])
    return decrypt_attachment(response.body, info["key"]["k"], info["hashes"]["sha256"],
                              info["iv"])


async def test_report_image_and_csv_export_in_an_encrypted_room(person_factory, bot):
    room, (alice, bob) = await pod_with(person_factory, bot, "alice", "bob")
    for what in ("groceries for 4", "bread", "nappies"):
        await ask(alice, room, f"!need {what}", bot)
    for what in ("soup for 6", "groceries", "bread"):
        await ask(bob, room, f"!offer {what}", bot)
    await ask(bob, room, "!claim 1", bot)
    await ask(bob, room, "!done 1", bot)

    reply = await ask(alice, room, "!report", bot, timeout=60)
    content = reply.source["content"]
    assert content["msgtype"] == "m.image"
    raw = await alice.raw_event(room, reply.event_id)
    assert raw["type"] == "m.room.encrypted"
    assert "url" not in content  # the file itself is encrypted, its key only in the event
    data = await download(alice, content)
    info = content["info"]
    width, height, texts = png_facts(data)  # raises unless it is a PNG
    assert (width, height) == (info["w"], info["h"]) == reports.CHART_SIZE_PX
    assert info["size"] == len(data) and info["mimetype"] == "image/png"
    # The numbers behind the chart are the database's, masked below 3.
    everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    expected = masked(recompute(bot.database, room, *everything))
    assert json.loads(texts["Description"]) == expected
    assert expected["category"]["food"] == {"needs": 3, "offers": 3, "fulfilled": None}
    # The text in the same event says the same, for screen readers.
    assert "- food: 3 / 3 / fewer than 3" in content["body"]
    assert "<" not in content["body"] and "food" in content["formatted_body"]

    dm = await open_dm_with_bot(alice, bot)
    export = await ask(alice, dm, "!export csv", bot, timeout=60)
    assert export.source["content"]["msgtype"] == "m.file"
    header, *rows = list(csv.reader(io.StringIO((await download(alice, export.source["content"])).decode())))
    assert tuple(header) == reports.CSV_HEADER
    assert ["needs", "category", "food", "3"] == rows[0][4:]
    refused = await ask(bob, room, "!export csv", bot)
    assert "only in a direct message" in refused.body
