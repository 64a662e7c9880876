import pytest

from .conftest import POD

ALICE = "@alice:test"


@pytest.mark.parametrize("text, expected", [
    ("!nede groceries", "Did you mean `!need`"),
    ("!xyzzy", "Send `!help`"),
    ("!need", "Usage: `!need <what> [<details>…]`"),
    ("!need    ", "Usage: `!need"),
    ("!claim", "Usage: `!claim <#id>`"),
    ("!claim seven", "Give the post number"),
    ("!claim 99", "There is no post #99"),
    ("!needs plutonium", "I don't know that category"),
])
async def test_bad_input_gets_friendly_usage(pod, text, expected):
    assert expected in await pod.reply_to(ALICE, text)


async def test_first_word_is_matched_exactly(pod):
    body = await pod.reply_to(ALICE, "!needy groceries")
    assert "I don't know `!needy`" in body
    async with pod.storage.transaction() as tx:
        assert await tx.posts.list(POD) == []


async def test_help_lists_every_command_and_explains_one(pod):
    body = await pod.reply_to(ALICE, "!help")
    for word in ("!need", "!offer", "!needs", "!offers", "!mine", "!claim", "!done", "!cancel"):
        assert word in body
    body = await pod.reply_to(ALICE, "!help claim")
    assert "Usage" not in body and "!claim <#id>" in body and "Example: `!claim 7`" in body


async def test_plain_chat_gets_no_reply(pod):
    assert await pod.say(ALICE, "hello everyone") == []


async def test_a_failing_handler_rolls_back_apologises_and_the_bot_goes_on(pod, monkeypatch):
    import bot.commands.posts as posts

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(posts, "find_matches", broken)
    body = await pod.reply_to(ALICE, "!need groceries")
    assert "something went wrong" in body
    async with pod.storage.transaction() as tx:
        assert await tx.posts.list(POD) == []  # the half-done post was rolled back
    monkeypatch.undo()
    assert "#1" in await pod.reply_to(ALICE, "!need groceries")


async def test_typed_markup_is_escaped_in_replies(pod):
    sent = await pod.say(ALICE, "!need <b>bread</b> @room [x](https://evil.example)")
    html = sent[0].message.html
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert "<a " not in html
    assert "@room" not in sent[0].message.body
    assert sent[0].message.mentions == ()


async def test_each_event_is_handled_once(pod):
    from datetime import UTC, datetime

    from bot.context import Incoming

    item = Incoming("$same", POD, ALICE, "!need groceries", False, datetime(2026, 11, 22, tzinfo=UTC))
    await pod.app.receive([item])
    await pod.app.receive([item])
    await pod.app.run_until_idle()
    assert len(pod.transport.sent) == 1
