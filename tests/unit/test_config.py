import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.cli import main
from bot.config import BotConfig, ConfigError, load_config

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        section = next((a for a in inner if issubclass(a, BaseModel) and a.__name__ != "SecretSource"), None)
        if section is not None:
            keys |= _keys(section, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _flatten(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:  # an array of tables ([[pods]])
                keys |= _flatten(item, f"{prefix}{name}.")
        elif isinstance(value, dict) and not {"env", "file"} & set(value):
            keys |= _flatten(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_example_config_documents_every_key_and_validates():
    documented = _flatten(tomllib.loads(EXAMPLE.read_text()))
    assert documented == _keys(BotConfig)
    config = load_config(EXAMPLE)
    assert config.matrix.user_id == "@mutualaid:example.org"


def _write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


VALID = """
[matrix]
homeserver = "http://127.0.0.1:8008"
user_id = "@bot:localhost"
password = { env = "MAB_TEST_PASSWORD" }
store_passphrase = { file = "pass.txt" }
"""


def test_unknown_key_is_an_error_with_its_path(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, VALID + "\n[bot]\ntimezon = 'UTC'\n"))
    assert ("bot.timezon", ) == tuple(p[0] for p in error.value.problems)
    assert "did you mean `timezone`?" in str(error.value)


@pytest.mark.parametrize("text, where, fix", [
    (VALID + "\n[bot]\nmax_match = 2\n", "bot.max_match", "did you mean `max_matches`?"),
    (VALID + "\n[shift]\ndigest_day = 'monday'\n", "shift", "did you mean `shifts`?"),
    (VALID + 'devise_name = "b"\n', "matrix.devise_name",
     "did you mean `device_name`?"),
    (VALID + "\n[bot]\nwhatever = 1\n", "bot.whatever", "check the spelling"),
])
def test_a_mistyped_key_gets_did_you_mean(tmp_path, text, where, fix):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert any(p[0] == where and fix in p[2] for p in error.value.problems), error.value.problems


def test_a_secret_written_inline_is_explained_in_plain_words(tmp_path):
    text = VALID.replace('password = { env = "MAB_TEST_PASSWORD" }', 'password = "hunter2"')
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    [(where, what, fix)] = error.value.problems
    assert where == "matrix.password"
    assert what == "must say where the secret is kept"
    assert '{ file = "path/to/file" }' in fix and '{ env = "VARIABLE_NAME" }' in fix
    assert "SecretSource" not in str(error.value) and "Input should be" not in str(error.value)
    assert "hunter2" not in str(error.value)


def test_check_config_reports_every_problem_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAB_TEST_PASSWORD", raising=False)
    text = VALID + '\n[bot]\ntimezone = "Mars/Olympus"\nmax_match = 2\n'
    assert main(["check-config", str(_write(tmp_path, text))]) == 1
    err = capsys.readouterr().err
    # The wrong keys and both missing secrets, in one go.
    for expected in ("bot.timezone", "unknown time zone", "bot.max_match", "max_matches",
                     "MAB_TEST_PASSWORD", "is not set", "pass.txt", "cannot be read"):
        assert expected in err, expected


def test_check_config_prints_each_problem_with_hint_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAB_TEST_PASSWORD", raising=False)
    path = _write(tmp_path, VALID)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "MAB_TEST_PASSWORD" in err and "is not set" in err
    assert "pass.txt" in err and "cannot be read" in err


def test_check_config_accepts_a_good_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAB_TEST_PASSWORD", "secret")
    (tmp_path / "pass.txt").write_text("passphrase\n")
    assert main(["check-config", str(_write(tmp_path, VALID))]) == 0
    assert "OK" in capsys.readouterr().out


def test_run_refuses_the_same_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAB_TEST_PASSWORD", raising=False)
    assert main(["run", "--config", str(_write(tmp_path, VALID))]) == 1
    assert "MAB_TEST_PASSWORD" in capsys.readouterr().err


@pytest.mark.parametrize("text, where", [
    ('[matrix]\nhomeserver = "ftp://x"\nuser_id = "bot"\n', "matrix.homeserver"),
    (VALID + '\n[bot]\ntimezone = "Mars/Olympus"\n', "bot.timezone"),
    ('[matrix]\nhomeserver = "http://x"\nuser_id = "@b:x"\npassword = "inline"\n'
     'store_passphrase = { env = "X" }\n', "matrix.password"),
    ("this is = not toml [", "config.toml"),
])
def test_bad_values_are_reported_by_key(tmp_path, text, where):
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert any(where in p[0] for p in error.value.problems), error.value.problems


def test_unencrypted_rooms_can_no_longer_be_allowed():
    from pydantic import ValidationError

    from bot.config import MatrixConfig

    base = {"homeserver": "http://127.0.0.1:8008", "user_id": "@bot:example.org",
            "password": {"env": "P"}, "store_passphrase": {"env": "S"}}
    assert MatrixConfig.model_validate({**base, "allow_unencrypted_rooms": False})
    try:
        MatrixConfig.model_validate({**base, "allow_unencrypted_rooms": True})
    except ValidationError as exc:
        assert "never sends into a room that is not end-to-end encrypted" in str(exc)
    else:
        raise AssertionError("allow_unencrypted_rooms = true was accepted")
