"""`mutual-aid-bot init`: set the bot up for a real homeserver, asking for what flags leave out.

It checks the homeserver answers, registers the bot's account when given a registration token or the
homeserver's registration shared secret, logs in once to check the password (and logs that device
out again), then writes config.toml and the secret files (0600) and says how to invite and start
the bot. It never overwrites: an existing config or existing state is reported and left alone.
State (secrets, crypto store, database) goes outside the source tree by default.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from bot.config import ConfigError, load_for_run

APP = "mutual-aid-bot"
PASSWORD_FILE = "password.txt"
PASSPHRASE_FILE = "store-passphrase.txt"
STORE_DIR = "store"
DATABASE_FILE = "mutual-aid-bot.db"
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)
_MAX_AUTH_STAGES = 4  # a registration flow longer than this is not one init can complete


class SetupError(Exception):
    """What went wrong and what to do about it, in words for the operator."""


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP / "config.toml"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / APP


@dataclass
class Answers:
    config: Path
    state_dir: Path
    homeserver: str
    user: str  # @name:server or just name
    password: str | None  # None: make one up (only when registering)
    registration_token: str | None
    shared_secret: str | None
    timezone: str


# ---- asking -------------------------------------------------------------------------------------

def _ask(value: str | None, question: str, flag: str, interactive: bool, default: str = "") -> str:
    if value:
        return value
    if not interactive:
        if default:
            return default
        raise SetupError(f"{question}: give it with {flag} (no terminal to ask on)")
    suffix = f" [{default}]" if default else ""
    answer = input(f"{question}{suffix}: ").strip() or default
    if not answer:
        raise SetupError(f"{question}: needed; give it with {flag}")
    return answer


def _read_secret_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SetupError(f"{what} file {path} cannot be read ({exc.strerror})") from exc
    if not value:
        raise SetupError(f"{what} file {path} is empty")
    return value


def gather(args: argparse.Namespace, interactive: bool) -> Answers:
    config = Path(args.config).expanduser() if args.config else default_config_path()
    state_dir = Path(_ask(args.state_dir, "Where should the bot keep its secrets and data",
                          "--state-dir", interactive, str(default_state_dir()))).expanduser()
    refuse_to_overwrite(config, state_dir)
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SetupError(f"--timezone {args.timezone}: unknown time zone; use an Area/City name "
                         "like Europe/Berlin") from exc
    homeserver = _ask(args.homeserver, "Homeserver address (like https://matrix.example.org)",
                      "--homeserver", interactive)
    if not homeserver.startswith(("http://", "https://")):
        homeserver = "https://" + homeserver
    user = _ask(args.user, "The bot's account (like @mutualaid:example.org)", "--user",
                interactive)
    token = args.registration_token
    shared_secret = _read_secret_file(args.shared_secret_file, "shared secret")
    password = _read_secret_file(args.password_file, "password")
    if password is None and interactive:
        prompt = ("Password for the bot's account (leave empty to make one up)"
                  if token or shared_secret else "Password of the bot's account")
        password = getpass.getpass(prompt + ": ").strip() or None
    if password is None and not (token or shared_secret):
        raise SetupError("the bot account's password is needed: give --password-file (a file with "
                         "the password on one line), or a --registration-token or "
                         "--shared-secret-file to create the account")
    return Answers(config=config, state_dir=state_dir, homeserver=homeserver.rstrip("/"),
                   user=user, password=password, registration_token=token,
                   shared_secret=shared_secret, timezone=args.timezone)


# ---- nothing is overwritten ---------------------------------------------------------------------

def refuse_to_overwrite(config: Path, state: Path) -> None:
    if config.exists():
        raise SetupError(f"{config} already exists; nothing was changed. To set up another "
                         "bot, give --config with a new path; to redo this one, move the old file "
                         "away first.")
    taken = [state / name for name in (PASSWORD_FILE, PASSPHRASE_FILE, DATABASE_FILE, STORE_DIR)
             if (state / name).exists()]
    if taken:
        raise SetupError(f"{state} already holds a bot's state ({', '.join(p.name for p in taken)}); "
                         "nothing was changed. Give --state-dir with an empty folder, or keep "
                         "using the config that goes with it.")


# ---- talking to the homeserver ------------------------------------------------------------------

class Homeserver:
    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            async with self.http.request(method, self.base_url + path, **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {}
                return response.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SetupError(f"cannot reach the homeserver at {self.base_url} ({exc or type(exc).__name__}). "
                             "Check the address (it is the one your Matrix client connects to) and "
                             "that this machine can reach it.") from exc

    async def check_reachable(self) -> None:
        status, body = await self._call("GET", "/_matrix/client/versions")
        if status != 200 or "versions" not in body:
            raise SetupError(f"{self.base_url} answered, but not as a Matrix homeserver (HTTP "
                             f"{status} for /_matrix/client/versions). Check the address.")

    async def register_with_shared_secret(self, localpart: str, password: str,
                                          shared_secret: str) -> str:
        """Synapse's admin registration: an HMAC of a nonce with the server's shared secret."""
        path = "/_synapse/admin/v1/register"
        status, body = await self._call("GET", path)
        if status != 200 or "nonce" not in body:
            raise SetupError("this homeserver does not offer shared-secret registration (Synapse's "
                             f"{path}, HTTP {status}). " + ASK_ADMIN)
        mac = hmac.new(shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([body["nonce"].encode(), localpart.encode(), password.encode(),
                                 b"notadmin"]))
        status, body = await self._call("POST", path, json={
            "nonce": body["nonce"], "username": localpart, "password": password, "admin": False,
            "mac": mac.hexdigest(), "inhibit_login": True})
        if status == 200:
            return body["user_id"]
        raise SetupError(_registration_refused(status, body, "the shared secret"))

    async def register_with_token(self, localpart: str, password: str, token: str) -> str:
        """Client-API registration, completing the token stage (and a dummy stage if asked)."""
        request: dict[str, Any] = {"username": localpart, "password": password,
                                   "inhibit_login": True, "initial_device_display_name": APP}
        for _ in range(_MAX_AUTH_STAGES):
            status, body = await self._call("POST", "/_matrix/client/v3/register", json=request)
            if status == 200:
                return body["user_id"]
            # A 401 that carries an error is a stage refused (a used-up token), not the next one.
            if status != 401 or "session" not in body or body.get("errcode"):
                raise SetupError(_registration_refused(status, body, "the registration token"))
            stage = _next_stage(body)
            request["auth"] = {"type": stage, "session": body["session"]}
            if stage == "m.login.registration_token":
                request["auth"]["token"] = token
        raise SetupError("registration did not finish; " + ASK_ADMIN)

    async def login(self, user: str, password: str) -> tuple[str, str]:
        status, body = await self._call("POST", "/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, "initial_device_display_name": f"{APP} init (check)"})
        if status == 200:
            return body["user_id"], body["access_token"]
        if body.get("errcode") == "M_FORBIDDEN":
            raise SetupError(f"the homeserver refused the password for {user}. Check it (it is "
                             "the bot account's password, not yours); nothing was written.")
        raise SetupError(f"logging in as {user} failed: {body.get('error') or f'HTTP {status}'}")

    async def logout(self, access_token: str) -> None:
        await self._call("POST", "/_matrix/client/v3/logout",
                         headers={"Authorization": f"Bearer {access_token}"}, json={})

    async def username_available(self, localpart: str) -> bool:
        status, _ = await self._call(
            "GET", f"/_matrix/client/v3/register/available?username={quote(localpart)}")
        return status == 200


ASK_ADMIN = ("Ask your homeserver's admin for one of: (1) a registration token (Synapse admins "
             "make one with the admin API: POST /_synapse/admin/v1/registration_tokens/new), "
             "then run init again with --registration-token TOKEN; or (2) to create the bot's "
             "account for you (Synapse: register_new_matrix_user), then run init with its "
             "password in --password-file.")


def _registration_refused(status: int, body: dict[str, Any], credential: str) -> str:
    errcode, error = body.get("errcode", ""), body.get("error", f"HTTP {status}")
    if errcode == "M_USER_IN_USE":
        return ("that account already exists. If it is the bot's, run init again with its "
                "password in --password-file and without a registration credential.")
    if errcode in ("M_FORBIDDEN", "M_UNAUTHORIZED") or status in (401, 403):
        return f"the homeserver refused {credential} ({error}). " + ASK_ADMIN
    return f"the homeserver refused to register the account ({error}). " + ASK_ADMIN


def _next_stage(body: dict[str, Any]) -> str:
    done = set(body.get("completed", []))
    usable = {"m.login.registration_token", "m.login.dummy"}
    for flow in body.get("flows", []):
        stages = flow.get("stages", [])
        if set(stages) <= usable:
            for stage in stages:
                if stage not in done:
                    return stage
    raise SetupError("this homeserver asks for more than a registration token to register (an "
                     "email address or a captcha, say). " + ASK_ADMIN)


def _localpart(user: str) -> str:
    return user[1:].split(":", 1)[0] if user.startswith("@") else user


# ---- writing ------------------------------------------------------------------------------------

def _write_new_private_file(path: Path, text: str) -> None:
    """Mode 0600 from the start; O_EXCL: a file that appeared since the check is not overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _toml(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def render_config(answers: Answers, user_id: str) -> str:
    state = answers.state_dir.resolve()
    return f"""# Written by `mutual-aid-bot init`. Every setting is explained in config.example.toml.
# Check it with:  mutual-aid-bot check-config {answers.config}

[matrix]
homeserver = {_toml(answers.homeserver)}
user_id = {_toml(user_id)}
password = {{ file = {_toml(state / PASSWORD_FILE)} }}
store_passphrase = {{ file = {_toml(state / PASSPHRASE_FILE)} }}
store_dir = {_toml(state / STORE_DIR)}

[storage]
database = {_toml(state / DATABASE_FILE)}

[bot]
timezone = {_toml(answers.timezone)}
"""


def write_files(answers: Answers, user_id: str, password: str) -> None:
    files = [(answers.state_dir / PASSWORD_FILE, password + "\n"),
             (answers.state_dir / PASSPHRASE_FILE, secrets.token_urlsafe(32) + "\n"),
             (answers.config, render_config(answers, user_id))]
    written: list[Path] = []
    try:
        for path, text in files:
            _write_new_private_file(path, text)
            written.append(path)
    except FileExistsError:
        raise  # appeared since the check: someone else's, left alone (as are ours, to compare)
    except OSError as exc:
        for path in written:  # a half-written set-up would block the next try
            path.unlink()
        raise SetupError(f"cannot write {exc.filename} ({exc.strerror}); nothing was kept. "
                         "Choose other places with --config and --state-dir.") from exc


# ---- the whole run ------------------------------------------------------------------------------

async def set_up(answers: Answers) -> str:
    """Check, register if asked, log in once, write; returns the bot's user id."""
    async with aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as http:
        server = Homeserver(http, answers.homeserver)
        await server.check_reachable()
        password = answers.password or secrets.token_urlsafe(24)
        localpart = _localpart(answers.user)
        if answers.shared_secret:
            print(f"Creating the account {localpart} with the shared secret...")
            await server.register_with_shared_secret(localpart, password, answers.shared_secret)
        elif answers.registration_token:
            print(f"Creating the account {localpart} with the registration token...")
            await server.register_with_token(localpart, password, answers.registration_token)
        print("Logging in once to check the account...")
        try:
            user_id, access_token = await server.login(answers.user, password)
        except SetupError as exc:
            if await server.username_available(localpart):
                raise SetupError(f"there is no account {answers.user} on {answers.homeserver} "
                                 "yet. " + ASK_ADMIN) from exc
            raise
        await server.logout(access_token)
    write_files(answers, user_id, password)
    return user_id


def next_steps(answers: Answers, user_id: str) -> str:
    return f"""
Done. Wrote {answers.config} and the bot's secrets in {answers.state_dir} (readable by you only).

Next:
  1. Start the bot:      mutual-aid-bot run --config {answers.config}
     (to keep it running, use the systemd unit: see "Running it as a service" in the README)
  2. Invite it: in your pod's room (end-to-end encrypted), invite {user_id}
     (Element: room name > People > Invite). It joins and answers !help.
  3. Back up {answers.state_dir}: it holds the bot's memory and its encryption keys.
"""


def run_init(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and not args.no_input
    try:
        answers = gather(args, interactive)
        user_id = asyncio.run(set_up(answers))
    except SetupError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\ninit: stopped; nothing was written.", file=sys.stderr)
        return 1
    try:
        load_for_run(answers.config)
    except ConfigError as exc:  # would be a bug in what init writes: say so plainly
        print(f"init: the written config does not pass check-config:\n{exc}", file=sys.stderr)
        return 1
    print(next_steps(answers, user_id))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"where to write the config (default: "
                        f"{default_config_path()})")
    parser.add_argument("--state-dir", help="where the secrets, crypto store and database live "
                        f"(default: {default_state_dir()})")
    parser.add_argument("--homeserver", help="the homeserver's address, like https://matrix.example.org")
    parser.add_argument("--user", help="the bot's account: @name:server, or just the name")
    parser.add_argument("--password-file", help="a file holding the account's password (else "
                        "asked; made up when registering)")
    parser.add_argument("--registration-token", help="create the account with this registration "
                        "token from the homeserver's admin")
    parser.add_argument("--shared-secret-file", help="create the account with the homeserver's "
                        "registration shared secret (Synapse's registration_shared_secret), read "
                        "from this file")
    parser.add_argument("--timezone", default="UTC",
                        help="the pod's time zone, like Europe/Berlin (default: UTC)")
    parser.add_argument("--no-input", action="store_true",
                        help="never ask; fail if something is missing")
