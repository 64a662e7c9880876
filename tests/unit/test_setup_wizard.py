"""`mutual-aid-bot init`'s questions and the config it writes, without a homeserver (the
integration tests run it against Synapse)."""

from __future__ import annotations

import argparse
import tomllib

import pytest

from bot.config import load_for_run
from bot.setup_wizard import (
    Answers,
    SetupError,
    add_arguments,
    gather,
    render_config,
    write_files,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_asks_for_what_the_flags_leave_out(tmp_path, monkeypatch):
    answers = iter(["", "matrix.example.org", "@aid:example.org"])  # state dir: the default
    questions = []

    def ask(prompt):
        questions.append(prompt)
        return next(answers)

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    monkeypatch.setattr("builtins.input", ask)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "s3cret")
    got = gather(_args("--config", str(tmp_path / "c.toml")), interactive=True)
    assert got.homeserver == "https://matrix.example.org"  # the scheme is added
    assert got.user == "@aid:example.org" and got.password == "s3cret"
    assert got.state_dir == tmp_path / "state-home" / "mutual-aid-bot"
    assert any("secrets and data" in q and str(got.state_dir) in q for q in questions)


def test_without_a_terminal_a_missing_password_is_named_with_its_flags(tmp_path):
    with pytest.raises(SetupError) as error:
        gather(_args("--config", str(tmp_path / "c.toml"), "--state-dir", str(tmp_path / "s"),
                     "--homeserver", "http://127.0.0.1:1", "--user", "aid"), interactive=False)
    assert "--password-file" in str(error.value) and "--registration-token" in str(error.value)


def test_a_bad_time_zone_is_refused_before_anything_else(tmp_path):
    with pytest.raises(SetupError, match="unknown time zone"):
        gather(_args("--config", str(tmp_path / "c.toml"), "--timezone", "Mars/Olympus"),
               interactive=False)


def test_existing_state_is_not_overwritten(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "mutual-aid-bot.db").write_bytes(b"pod records")
    with pytest.raises(SetupError, match="already holds a bot's state"):
        gather(_args("--config", str(tmp_path / "c.toml"), "--state-dir", str(tmp_path / "s")),
               interactive=False)
    assert (tmp_path / "s" / "mutual-aid-bot.db").read_bytes() == b"pod records"


def test_written_files_pass_check_config_and_hold_no_secret(tmp_path):
    answers = Answers(config=tmp_path / "etc" / "config.toml", state_dir=tmp_path / 'st"ate',
                      homeserver="https://matrix.example.org", user="aid", password="pw-1",
                      registration_token=None, shared_secret=None, timezone="Europe/Berlin")
    write_files(answers, "@aid:example.org", "pw-1")
    config = load_for_run(answers.config)
    assert config.matrix.password.read() == "pw-1"
    assert len(config.matrix.store_passphrase.read()) >= 32
    assert config.storage.database.parent == answers.state_dir.resolve()
    assert "pw-1" not in answers.config.read_text()
    assert tomllib.loads(render_config(answers, "@aid:example.org"))["bot"]["timezone"] \
        == "Europe/Berlin"
    with pytest.raises(FileExistsError):  # never overwritten, even past the first check
        write_files(answers, "@aid:example.org", "other")
    assert config.matrix.password.read() == "pw-1"


def test_a_config_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    answers = Answers(config=not_a_folder / "sub" / "config.toml", state_dir=tmp_path / "state",
                      homeserver="https://matrix.example.org", user="aid", password="pw",
                      registration_token=None, shared_secret=None, timezone="UTC")
    with pytest.raises(SetupError, match="nothing was kept"):
        write_files(answers, "@aid:example.org", "pw")
    assert list((tmp_path / "state").iterdir()) == []
