"""contrib/mutual-aid-bot.service is a unit systemd accepts, with its sandboxing in place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "contrib" / "mutual-aid-bot.service"
INSTALLED_AT = "/opt/mutual-aid-bot/bin/mutual-aid-bot"


def _settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_sandboxes_the_bot_and_runs_what_init_writes():
    settings = _settings()
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "StateDirectory": "mutual-aid-bot",
                       "User": "mutual-aid-bot"}.items():
        assert settings.get(key) == [value], key
    assert settings["ExecStart"] == [f"{INSTALLED_AT} run --config /var/lib/mutual-aid-bot/config.toml"]
    assert "init --config /var/lib/mutual-aid-bot/config.toml --state-dir /var/lib/mutual-aid-bot" \
        in UNIT.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here (CI installs Debian's systemd)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify also checks that the programs exist: point them at this environment's bot.
    bot = Path(sys.prefix) / "bin" / "mutual-aid-bot"
    assert bot.exists(), "the bot's console script is not installed in this environment"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(bot)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either
