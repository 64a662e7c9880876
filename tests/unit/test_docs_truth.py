"""The documentation names only commands and settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot import room_settings
from bot.commands import REGISTRY, load_commands

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "config.example.toml", *sorted((ROOT / "docs").glob("*.md"))]
# `!word` followed by ":" is a Matrix room id (!abc:example.org), not a command.
COMMAND = re.compile(r"(?<![\w!\\])!([a-z][a-z-]*)\b(?!:)")
SETTING = re.compile(r"(?<![\w!\\])!settings? ([a-z_]+)")
# Words after "!" in the docs that are not commands: hostile-input examples and typos on purpose.
NOT_COMMANDS = {"x", "nee", "ned", "neeed"}

load_commands()


def _named(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [(doc.name, m.group(1)) for doc in DOCUMENTS
            for m in pattern.finditer(doc.read_text(encoding="utf-8"))]


def test_the_documents_are_read():
    names = {word for _, word in _named(COMMAND)}
    assert {"need", "offer", "claim", "shift", "settings", "forgetme"} <= names


@pytest.mark.parametrize("doc, word", sorted(set(_named(COMMAND))))
def test_every_command_named_in_the_docs_exists(doc, word):
    assert word in REGISTRY.by_word or word in NOT_COMMANDS, f"{doc} names !{word}"


@pytest.mark.parametrize("doc, key", sorted(set(_named(SETTING))))
def test_every_setting_named_in_the_docs_exists(doc, key):
    assert key in room_settings.SETTINGS, f"{doc} names !settings {key}"
