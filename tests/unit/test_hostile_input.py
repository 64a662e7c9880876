"""Hostile input: whatever people type, the bot answers at most once, briefly, and never breaks.

Property tests drive the real dispatcher, handlers and storage (SQLite in memory) through a
light harness that is built once and reused across examples, so 10,000 examples run in seconds.
`MAB_HYPOTHESIS_EXAMPLES` sets the count for the main property (default 10,000); the others use a
tenth of it.

Also here: a named table of nasty inputs with the outcome each must have, a grid of out-of-range
numbers and dates after every command and every prefix of its examples, and the Matrix
transport's event filtering for malformed or unusual events. The markup property over every
command is in test_reply_markup.py.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import SORRY, App
from bot.commands import build_registry, dispatch, split_command
from bot.config import BotConfig
from bot.context import Context, Incoming, Outgoing
from bot.storage import Storage

from .conftest import Clock, FakeTransport

EXAMPLES = int(os.environ.get("MAB_HYPOTHESIS_EXAMPLES", "10000"))
FEWER = max(100, EXAMPLES // 10)
MAX_REPLY_BODY = 8_000  # characters; a full listing is well under this
MAX_REPLY_HTML = 32_000
ROOM = "!hostile:test"
ALICE = "@alice:test"


class Harness:
    """One app over storage in a temporary file, on a private event loop, shared by every example."""

    def __init__(self, database: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.storage = self.loop.run_until_complete(Storage.open(database))
        self.transport = FakeTransport()
        self.clock = Clock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
        self.app = App(self.storage, BotConfig(), self.transport, clock=self.clock)
        self._ids = count(1)

    def say(self, text: str, sender: str = ALICE, room: str = ROOM,
            direct: bool = False) -> tuple[str, list[Outgoing]]:
        event_id = f"$hostile{next(self._ids)}"
        before = len(self.transport.sent)

        async def run() -> None:
            await self.app.receive([Incoming(event_id, room, sender, text, direct, self.clock())])
            await self.app.run_until_idle(timeout=30)

        self.loop.run_until_complete(run())
        return event_id, self.transport.sent[before:]

    def dispatch(self, text: str, sender: str = ALICE, room: str = ROOM,
                 direct: bool = False) -> tuple[str, list[Outgoing]]:
        """The handler step alone, as App.handle runs it (one storage transaction), without the
        inbox and outbox around it: about a quarter of the trips to the database thread."""
        event_id = f"$hostile{next(self._ids)}"
        async def run() -> list[Outgoing]:
            async with self.storage.transaction() as tx:
                ctx = Context(sender=sender, room_id=room, is_direct=direct, text=text,
                              event_id=event_id, now=self.clock(), tx=tx,
                              config=self.app.config, transport=self.transport,
                              registry=self.app.registry)
                await dispatch(ctx)  # must not raise, whatever the text
                return ctx.outgoing

        return event_id, self.loop.run_until_complete(run())

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        async def run() -> list[tuple]:
            async with self.storage.transaction() as tx:
                return [tuple(r) for r in await tx.fetchall(sql, params)]

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.storage.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("hostile") / "bot.db")
    yield h
    h.close()


def replies_to(event_id: str, sent: list[Outgoing]) -> list[Outgoing]:
    return [o for o in sent if o.reply_to == event_id]


def command_words() -> list[str]:
    return sorted(build_registry().by_word)


any_text = st.text(max_size=400)
messages = st.one_of(
    any_text,
    st.builds(lambda w, t: f"!{w} {t}", st.sampled_from(command_words()), any_text),
    st.builds(lambda w, t: f"!{w}{t}", st.sampled_from(command_words()), any_text),
    st.builds(lambda t: "!" + t, any_text),
    st.builds(lambda w, t: f"  !{w.upper()}\n{t}", st.sampled_from(command_words()), any_text),
)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=messages, direct=st.booleans())
def test_any_message_gets_at_most_one_bounded_reply_and_never_breaks(harness, text, direct):
    event_id, sent = harness.dispatch(text, direct=direct)
    replies = replies_to(event_id, sent)
    assert len(replies) <= 1
    for reply in replies:
        assert reply.message.body != SORRY
        assert 0 < len(reply.message.body) <= MAX_REPLY_BODY
        assert len(reply.message.html) <= MAX_REPLY_HTML
        assert reply.message.mentions == ()  # a reply never pings anyone by itself
    if split_command(text, "!") is None and not direct:
        assert replies == []


@settings(max_examples=FEWER, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["need", "offer"]), text=st.text(min_size=1, max_size=300))
def test_stored_post_text_round_trips_exactly(harness, kind, text):
    (before,) = harness.query("SELECT COUNT(*) FROM posts")
    event_id, sent = harness.say(f"!{kind} {text}")
    (reply,) = replies_to(event_id, sent)
    (after,) = harness.query("SELECT COUNT(*) FROM posts")
    created = after[0] - before[0]
    assert created == (1 if reply.message.body.startswith("Noted") else 0)
    if created:
        (stored,) = harness.query("SELECT text, kind FROM posts ORDER BY id DESC LIMIT 1")
        assert stored == (text.strip(), kind)


# ---- a named table of nasty inputs --------------------------------------------------------------

BIDI = "\u202e"
ZWSP = "\u200b"

# name, message, expected reply fragment (None: no reply at all), stored post text (None: none)
NASTY = [
    ("64 KiB message", "!need " + "a" * 65_536, "a bit long", None),
    ("NUL and control characters", "!need bread\x00\x01\x1b[31m red", "Noted need",
     "bread\x00\x01\x1b[31m red"),
    ("right-to-left override", f"!need {BIDI}evil bread", "Noted need", f"{BIDI}evil bread"),
    ("zero-width inside the command word", f"!ne{ZWSP}ed groceries", "Did you mean `!need`", None),
    ("zero-width inside the text", f"!need gro{ZWSP}ceries", "Noted need", f"gro{ZWSP}ceries"),
    ("HTML injection", "!need <script>alert(1)</script><img src=x onerror=alert(1)>", "Noted need",
     "<script>alert(1)</script><img src=x onerror=alert(1)>"),
    ("markdown injection", "!need [click](https://evil.example) **bold** ![i](mxc://x/y)",
     "Noted need", "[click](https://evil.example) **bold** ![i](mxc://x/y)"),
    ("@room", "!need help @room now", "Noted need", "help @room now"),
    ("hand-made mention pill", '!need <a href="https://matrix.to/#/@x:y">x</a> please',
     "Noted need", '<a href="https://matrix.to/#/@x:y">x</a> please'),
    ("SQL fragment", "!need '); DROP TABLE posts; --", "Noted need", "'); DROP TABLE posts; --"),
    ("overlong category", "!needs " + "x" * 500, "I don't know that category", None),
    ("emoji only", "!need 🍞🥛", "Noted need", "🍞🥛"),
    ("empty command", "!", None, None),
    ("prefix and spaces only", "!   ", None, None),
    ("bidi override before the prefix", f"{BIDI}!need groceries", None, None),
    ("NUL glued to the command word", "!need\x00", "Did you mean `!need`", None),
    ("SQL in a post reference", "!claim 1; DELETE FROM posts", "Give the post number", None),
    ("huge post number", "!claim 99999999999999999999", "Give the post number", None),
    # Line breaks of every kind are normalised once, before escaping and markdown.
    ("carriage returns end a code span", "!x\r\r[pwn](https://ev.il/a)", "I don't know", None),
    ("carriage return makes a heading", "!need bread\r===", "Noted need", "bread\r==="),
    ("line separators around a link", "!need a\u2028\u2028[x](https://ev.il/a)", "Noted need",
     "a\u2028\u2028[x](https://ev.il/a)"),
    ("NEL and form feed", "!need a\x85\x85![i](https://ev.il/i.png)\x0c===", "Noted need",
     "a\x85\x85![i](https://ev.il/i.png)\x0c==="),
    ("indented code block after a blank line", "!need a\r\n\r\n    code", "Noted need",
     "a\r\n\r\n    code"),
    # Numbers in other scripts, and messages whose handling once grew faster than their size
    # (bench/inputsize.py times these shapes for every command).
    ("superscript digit as a post number", "!claim ²", "There is no post #2", None),
    ("Arabic-Indic post number", "!claim ١٢", "Give the post number", None),
    ("32,000 short words after !signup", "!signup " + "ab " * 32_000, "I can't find a shift",
     None),
    ("48 KiB of markdown characters as a setting", "!settings " + "*_[" * 16_384,
     "There is no setting", None),
]


@pytest.mark.parametrize("name, text, expected, stored", NASTY, ids=[n[0] for n in NASTY])
async def test_nasty_input(pod, name, text, expected, stored):
    sent = await pod.say(ALICE, text)
    replies = [o for o in sent if o.reply_to is not None]
    if expected is None:
        assert sent == []
    else:
        assert len(replies) == 1, [o.message.body for o in sent]
        body, html = replies[0].message.body, replies[0].message.html
        assert expected in body
        assert replies[0].message.mentions == ()
        assert len(body) <= MAX_REPLY_BODY
        # Nothing typed becomes markup, a link, a pill or a terminal escape in the reply.
        for forbidden in ("<script", "<img", "<a ", "<h1", "<h2", "<pre", "\x00", "\x1b", BIDI):
            assert forbidden not in html
        for forbidden in ("\x00", "\x1b", BIDI):
            assert forbidden not in body
    async with pod.storage.transaction() as tx:
        texts = [p.text for p in await tx.posts.list()]
    assert texts == ([stored] if stored is not None else [])


async def test_room_mention_never_pings(pod):
    (reply,) = await pod.say(ALICE, "!need help @room now")
    assert "@room" not in reply.message.body  # defused with a word joiner
    assert reply.message.mentions == ()


# ---- malformed or unusual Matrix events ----------------------------------------------------------


def _text_event(content: dict, sender: str = "@alice:test"):
    from nio import RoomMessage

    return RoomMessage.parse_event({
        "type": "m.room.message", "event_id": "$e", "sender": sender,
        "origin_server_ts": 1, "content": content,
    })


def test_event_text_acts_on_originals_only():
    from bot.transport.matrix import edited, event_text

    original = _text_event({"msgtype": "m.text", "body": "!need groceries"})
    assert event_text(original) == "!need groceries"
    # An edit is not a command: the original was already acted on; acting on the edit would be a
    # second effect, and acting on "* !need ..." fallbacks would be wrong. It reaches the app as
    # an Edit event (the new text, the event it replaces) instead.
    edit = _text_event({"msgtype": "m.text", "body": "* !need bread",
                        "m.new_content": {"msgtype": "m.text", "body": "!need bread"},
                        "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}})
    assert event_text(edit) is None
    assert edited(edit) == ("$orig", "!need bread")


@pytest.mark.parametrize("content, kind", [
    ({"msgtype": "m.text"}, "missing body"),
    ({"msgtype": "m.text", "body": 42}, "body not a string"),
    ({"msgtype": "m.notice", "body": "!need groceries"}, "notice from another bot"),
    ({"msgtype": "m.image", "body": "!need.png", "url": "mxc://x/y"}, "image"),
    ({"msgtype": "m.emote", "body": "!need groceries"}, "emote"),
    ({"msgtype": "org.example.custom", "body": "!need groceries"}, "unknown msgtype"),
])
def test_only_plain_text_messages_are_commands(content, kind):
    from nio import RoomMessageText

    from bot.transport.matrix import event_text

    event = _text_event(content)
    usable = isinstance(event, RoomMessageText) and event_text(event) is not None
    assert not usable, kind


async def test_events_from_before_the_join_own_and_notices_are_not_commands(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nio import RoomMessageNotice, RoomMessageText

    from bot.config import MatrixConfig
    from bot.transport.matrix import MatrixTransport

    monkeypatch.setenv("MAB_TEST_SECRET", "x")
    matrix = MatrixConfig(homeserver="http://127.0.0.1:1", user_id="@bot:test",
                          password={"env": "MAB_TEST_SECRET"},
                          store_passphrase={"env": "MAB_TEST_SECRET"})
    storage = await Storage.open(tmp_path / "bot.db")
    try:
        transport = MatrixTransport(BotConfig(matrix=matrix), storage)
        transport.client = SimpleNamespace(
            rooms={ROOM: SimpleNamespace(member_count=3, encrypted=True)})
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        joined = now_ms - 60_000
        async with storage.transaction() as tx:
            await tx.delivery.set_meta(f"joined:{ROOM}", str(joined))

        def event(cls, sender, ts, body="!need groceries", msgtype="m.text"):
            return cls.parse_event({"type": "m.room.message", "event_id": f"${sender}{ts}{msgtype}",
                                    "sender": sender, "origin_server_ts": ts,
                                    "content": {"msgtype": msgtype, "body": body}})

        events = [
            event(RoomMessageText, "@alice:test", joined - 1_000),  # before the bot joined
            event(RoomMessageText, "@bot:test", now_ms),  # the bot's own
            event(RoomMessageNotice, "@otherbot:test", now_ms, msgtype="m.notice"),
            event(RoomMessageText, "@alice:test", now_ms, body="just chatting"),
            event(RoomMessageText, "@alice:test", now_ms),  # the only command
        ]
        items = await transport._commands_from(ROOM, events)
        assert [(i.sender, i.text) for i in items] == [("@alice:test", "!need groceries")]
    finally:
        await storage.close()


# ---- out-of-range numbers and dates, in every command that could read one ----------------------

OUT_OF_RANGE = ["9999-12-31", "0001-01-01", "31 dec 9999", "99999999999999999999", "-5", "0",
                "1" * 5000, "²", "٣", "١٢", "𝟙", "1e9", "3.5", "9999", "S999999", "R999999",
                "#99999999999", "need 99999", "need -1", "need ²", "every 99999 days 10-12",
                "in 99999 weeks 10:00", "99:99", "10-13 for 99999h"]


def _grid() -> list[str]:
    """Each command word and each of its examples cut after each word, then an out-of-range value."""
    heads: set[str] = set()
    for cmd in build_registry().commands.values():
        heads.add(cmd.name)
        for example in cmd.examples:
            words = example.split()
            heads.update(" ".join(words[:n]) for n in range(1, len(words)))
    return sorted(heads)


@pytest.mark.parametrize("head", _grid())
def test_out_of_range_numbers_and_dates_get_usage_not_an_apology(harness, head):
    harness.transport.power_levels[ALICE] = 100  # coordinators reach the edit and cancel paths
    harness.transport.rooms[ROOM] = [ALICE]
    if not harness.query("SELECT 1 FROM shifts WHERE room_id = ? AND number = 1", (ROOM,)):
        harness.say("!shift add Food run every saturday 10-13 need 3")
    harness.query("UPDATE shifts SET active = 1 WHERE room_id = ? AND number = 1", (ROOM,))
    for value in OUT_OF_RANGE:
        for direct in (False, True):
            event_id, sent = harness.dispatch(f"!{head} {value}", direct=direct)  # must not raise
            for reply in replies_to(event_id, sent):
                assert reply.message.body != SORRY, (head, value)


# ---- ids inside text: what !forgetme finds (and must not over-find) ------------------------------

# text of a message the bot sends, the people it names (whole ids only)
NAMED = [
    ("sentence end", "On: @bob:example.org.", ["@bob:example.org"]),
    ("longer id sharing a prefix", "On: @bob:example.org.uk", ["@bob:example.org.uk"]),
    ("port", "ask @bob:example.org:8448 first", ["@bob:example.org:8448"]),
    ("brackets and commas", "(@a:x.org, @b:y.org)", ["@a:x.org", "@b:y.org"]),
    ("IPv6 server", "@c:[::1]:8448 is on", ["@c:[::1]:8448"]),
    ("an e-mail address is nobody", "mail bob@example.org", []),
    ("@room is nobody", "help @room now", []),
    ("repeated", "@a:x.org and @a:x.org", ["@a:x.org"]),
    ("markdown around it", "**@a:x.org**", ["@a:x.org"]),
]


@pytest.mark.parametrize("name, text, people", NAMED, ids=[n[0] for n in NAMED])
def test_ids_named_in_text_are_whole(name, text, people):
    from bot.store.delivery import named_in

    assert named_in(text) == people
