"""The version is said in one place and the changelog has an entry for it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bot import __version__

ROOT = Path(__file__).parents[2]


def test_the_changelog_has_an_entry_for_this_version():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == __version__  # newest first
    assert "0.1.0" in headings


def test_the_package_version_comes_from_bot_init():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bot.__version__"}
