"""The organisers' page and the cheat sheet name only commands the bot has, and only plain words:
no install steps, no config keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.commands import build_registry

DOCS = Path(__file__).parents[2] / "docs"
PAGES = [DOCS / "organisers.md", DOCS / "cheatsheet.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_exists(page):
    words = set(build_registry().by_word)
    shown = set(re.findall(r"`!([a-z-]+)", page.read_text()))
    assert shown, "no commands found: the pattern is wrong"
    assert shown - words == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_install_steps_or_config(page):
    text = page.read_text()
    for word in ("pip install", "make ", "config.toml", "mutual-aid-bot init", "sudo"):
        assert word not in text, word


def test_the_cheat_sheet_fits_one_page():
    lines = (DOCS / "cheatsheet.md").read_text().splitlines()
    assert len(lines) <= 60  # about one printed A4 page with its tables
