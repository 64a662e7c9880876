"""`mutual-aid-bot init` against a real Synapse, run as an operator would, without a terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from bot.devserver import Synapse

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, **(env or {})},
                          check=False)


def _secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / "given" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n")
    return str(path)


def _name() -> str:
    return f"pod-bot-{uuid.uuid4().hex[:8]}"


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_init_registers_with_the_shared_secret_and_writes_outside_the_tree(synapse, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_STATE_HOME": str(tmp_path / "xdg-state")}
    secret = _secret_file(tmp_path, "shared", synapse.registration_shared_secret)
    name = _name()
    result = _cli("init", "--homeserver", synapse.base_url, "--user", name,
                  "--shared-secret-file", secret, "--timezone", "Europe/Berlin", env=env)
    assert result.returncode == 0, result.stderr
    config = tmp_path / "xdg-config" / "mutual-aid-bot" / "config.toml"
    state = tmp_path / "xdg-state" / "mutual-aid-bot"
    user_id = synapse.user_id(name)
    assert f"invite {user_id}" in result.stdout
    assert f"mutual-aid-bot run --config {config}" in result.stdout
    assert {_mode(config), _mode(state / "password.txt"), _mode(state / "store-passphrase.txt")} == {0o600}
    assert _mode(state) == 0o700
    settings = tomllib.loads(config.read_text())
    assert settings["matrix"]["user_id"] == user_id
    assert settings["bot"]["timezone"] == "Europe/Berlin"
    # No secret in the config itself, and the made-up password is the account's.
    password = (state / "password.txt").read_text().strip()
    assert password not in config.read_text()
    assert synapse.registration_shared_secret not in config.read_text()
    check = _cli("check-config", str(config))
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr

    # Run again: the config exists, so nothing is touched.
    before = config.read_text(), password
    again = _cli("init", "--homeserver", synapse.base_url, "--user", name,
                 "--shared-secret-file", secret, env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (config.read_text(), (state / "password.txt").read_text().strip()) == before


async def test_init_registers_with_a_registration_token_once(synapse: Synapse, tmp_path):
    token = await synapse.registration_token()
    name = _name()
    args = ("--homeserver", synapse.base_url, "--user", f"@{name}:{synapse.server_name}",
            "--registration-token", token)
    result = _cli("init", *args, "--config", str(tmp_path / "a" / "config.toml"),
                  "--state-dir", str(tmp_path / "a-state"))
    assert result.returncode == 0, result.stderr
    assert _cli("check-config", str(tmp_path / "a" / "config.toml")).returncode == 0

    # The token was single-use: a second account is refused, with what to ask the admin for.
    used = _cli("init", "--homeserver", synapse.base_url, "--user", _name(),
                "--registration-token", token, "--config", str(tmp_path / "b" / "config.toml"),
                "--state-dir", str(tmp_path / "b-state"))
    assert used.returncode == 1
    assert "refused the registration token" in used.stderr and "registration_tokens/new" in used.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "b-state").exists()


async def test_init_with_an_existing_account_checks_its_password(synapse: Synapse, tmp_path):
    user_id, password = await synapse.register(_name())
    config, state = tmp_path / "config.toml", tmp_path / "state"
    common = ("--homeserver", synapse.base_url, "--user", user_id, "--config", str(config),
              "--state-dir", str(state))

    wrong = _cli("init", *common, "--password-file", _secret_file(tmp_path, "wrong", "not-it"))
    assert wrong.returncode == 1
    assert f"refused the password for {user_id}" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert not config.exists() and not state.exists()

    right = _cli("init", *common, "--password-file", _secret_file(tmp_path, "right", password))
    assert right.returncode == 0, right.stderr
    assert (state / "password.txt").read_text().strip() == password
    assert _cli("check-config", str(config)).returncode == 0


async def test_init_without_an_account_says_what_to_ask_the_admin_for(synapse, tmp_path):
    result = _cli("init", "--homeserver", synapse.base_url, "--user", _name(),
                  "--password-file", _secret_file(tmp_path, "pw", "whatever"),
                  "--config", str(tmp_path / "config.toml"), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "no account" in result.stderr
    assert "registration token" in result.stderr and "register_new_matrix_user" in result.stderr
    assert not (tmp_path / "config.toml").exists()


def test_init_reports_an_unreachable_homeserver(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _cli("init", "--homeserver", f"http://127.0.0.1:{port}", "--user", "bot",
                  "--password-file", _secret_file(tmp_path, "pw", "x"),
                  "--config", str(tmp_path / "config.toml"), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1
    assert "cannot reach the homeserver" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "config.toml").exists() and not (tmp_path / "s").exists()


def test_init_without_a_terminal_names_the_missing_flag(tmp_path):
    result = _cli("init", "--config", str(tmp_path / "config.toml"), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 1 and "--homeserver" in result.stderr


def test_version_is_the_package_version():
    from bot import __version__

    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mutual-aid-bot {__version__}"
