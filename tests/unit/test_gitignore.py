"""What the docs tell an operator to create is ignored by git: one `git add -A` must not publish it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="not a git checkout")

# config.example.toml's own paths (data/..., secrets/...), the config people copy it to, the secret
# files init and the demo write, migrate's backups, the console's default database, and build output.
CREATED_BY_OPERATORS = [
    "config.toml", "data/mutual-aid-bot.db", "data/store/session.json", "secrets/password",
    "password.txt", "store-passphrase.txt", "mutual-aid-bot.db.v4-20261201T120000Z.bak", "console.db", "console.db-wal", ".demo/credentials.json",
    "dist/mutual_aid_bot-0.2.0.tar.gz", "build/lib/bot/cli.py",
]


@pytest.mark.parametrize("path", CREATED_BY_OPERATORS)
def test_operator_files_are_ignored(path):
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", path],
                            check=False, timeout=30)
    assert result.returncode == 0, f"{path} is not covered by .gitignore"


def test_source_files_are_not_ignored():
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q",
                             "config.example.toml"], check=False, timeout=30)
    assert result.returncode == 1
