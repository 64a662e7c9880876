import asyncio

from bot.config import BotConfig
from bot.transport.console import run_console


async def test_console_chat_as_two_people_with_matching_and_dm(tmp_path):
    config = BotConfig()
    config.storage.database = tmp_path / "console.db"
    lines: asyncio.Queue = asyncio.Queue()
    for line in ["!need groceries", "/as bob", "!offer food", "!claim 1", "/dm", "!mine", "/quit"]:
        lines.put_nowait(line)
    out: list[str] = []
    assert await run_console(config, lines, out.append) == 0
    text = "\n".join(out)
    assert "[pod] bot: Noted need **#1**" in text
    assert "[now speaking as @bob:console]" in text
    assert "Possible match in food for @bob:console:\n    \n    - @alice:console needs **#1**" in text
    assert "**#1** is claimed" in text
    assert "You have no open posts here" in text  # bob's DM is a room of its own
