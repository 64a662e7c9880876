"""A real Synapse homeserver on 127.0.0.1, for integration tests, the demo and benchmarks.

Synapse lives in its own virtualenv (it pins its own Twisted and friends), found by
`synapse_python()`. `Synapse` writes a self-contained config into a work directory, starts the
homeserver as a child process in its own process group, and registers users through the
shared-secret admin API. Nothing here is used by the bot in production.

    server = Synapse(Path(".demo/synapse"), synapse_python())
    await server.start()
    user_id, password = await server.register("alice")
    ...
    await server.stop()

A reused work directory keeps its port, secrets, signing key and database.

`Synapse(..., federation=True)` also serves the federation API over TLS on a second loopback
port and names the server `localhost:<that port>`, so two such servers federate with each other
on 127.0.0.1 with no DNS, SRV or .well-known: a server name with an explicit port is reached at
exactly that host and port. Each server has its own self-signed certificate and does not verify
the other's (`federation_verify_certificates: false`), so no CA has to be shared between work
directories; events are still signed with each server's signing key and checked. Synapse blocks
loopback addresses for federation by default, so 127.0.0.0/8 and ::1 are allowed explicitly.

Safety nets so that no homeserver outlives us: `stop()` kills the whole process group, an
`atexit` hook does the same for anything still running at interpreter exit, and on Linux the
child asks the kernel for SIGTERM if its parent dies (covers a SIGKILLed test run).

Run by hand: `python -m bot.devserver [WORKDIR]` starts a server and waits for Ctrl-C.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["Synapse", "SynapseError", "synapse_python"]

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "devserver.json"
CONFIG_FILE = "homeserver.yaml"
LOG_CONFIG_FILE = "log_config.yaml"
LOG_FILE = "homeserver.log"
SIGNING_KEY_FILE = "signing.key"
TLS_CERT_FILE = "federation.crt"
TLS_KEY_FILE = "federation.key"
ADMIN_LOCALPART = "mab-devserver-admin"

# Effectively unlimited; `rate_limited=False` applies this to every limiter.
_UNLIMITED = {"per_second": 10_000, "burst_count": 100_000}
# Synapse's own default for messages, stated explicitly for `rate_limited=True`.
_SYNAPSE_DEFAULT_MESSAGE_LIMIT = {"per_second": 0.2, "burst_count": 10}


class SynapseError(RuntimeError):
    """The homeserver failed to start, or an admin request failed."""


BOT_CONFIG = """\
# A mutual-aid-bot configuration for an account on a local dev homeserver.
# See config.example.toml for every key.
[matrix]
homeserver = "{homeserver}"
user_id = "{user_id}"
password = {{ file = "password.txt" }}
store_passphrase = {{ file = "store-passphrase.txt" }}
store_dir = "store"
allowed_inviters = [":{server_name}"]
{extra_matrix}
[storage]
database = "mutual-aid-bot.db"

[bot]
timezone = "{timezone}"
log_level = "{log_level}"
{extra_bot}{extra_sections}"""


def write_bot_config(directory: Path, base_url: str, server_name: str, user_id: str,
                     password: str, *, timezone: str = "UTC", log_level: str = "INFO",
                     extra_matrix: str = "", extra_bot: str = "", extra_sections: str = "") -> Path:
    """A bot config in `directory` with its secrets in files of mode 0600; returns its path."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_if_changed(directory / "password.txt", password + "\n")
    passphrase = directory / "store-passphrase.txt"
    if not passphrase.exists():
        _write_if_changed(passphrase, secrets.token_urlsafe(32) + "\n")
    config = directory / "config.toml"
    config.write_text(BOT_CONFIG.format(
        homeserver=base_url, user_id=user_id, server_name=server_name, timezone=timezone,
        log_level=log_level, extra_matrix=extra_matrix + "\n" if extra_matrix else "",
        extra_bot=extra_bot + "\n" if extra_bot else "", extra_sections=extra_sections,
    ))
    return config


def synapse_python() -> str:
    """The interpreter of the virtualenv that has matrix-synapse installed.

    `MAB_SYNAPSE_PYTHON` wins; else `<repo>/.venv-synapse/bin/python`.
    """
    env = os.environ.get("MAB_SYNAPSE_PYTHON")
    if env:
        if not Path(env).exists():
            raise FileNotFoundError(f"MAB_SYNAPSE_PYTHON={env!r} does not exist")
        return env
    candidate = REPO_ROOT / ".venv-synapse" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(
        "No Synapse interpreter found. Install one with `make synapse` (creates "
        f"{REPO_ROOT / '.venv-synapse'} with matrix-synapse), or point MAB_SYNAPSE_PYTHON at "
        "a Python that has matrix-synapse installed."
    )


def _free_port(avoid: int | None = None) -> int:
    for _ in range(10):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != avoid:
            return port
    raise SynapseError(f"the kernel kept offering port {avoid}, which is taken")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Synapse itself binds: connections of a just-stopped server lingering in TIME_WAIT
        # must not count as "busy", only a live listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _self_signed_certificate(hostname: str) -> tuple[bytes, bytes]:
    """A certificate and private key (PEM) for the federation listener of a loopback server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        # Long-lived because a reused work directory keeps it; nothing ever verifies it.
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    # ssl=False: the federation listener's certificate is self-signed; this only asks "is it up".
    try:
        async with http.get(url, ssl=False) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _tail(path: Path, lines: int = 60) -> str:
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _write_if_changed(path: Path, text: str, mode: int = 0o600) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Process-group bookkeeping: the safety net for interpreter exit.

_LIVE_GROUPS: dict[int, int] = {}  # pid -> process group id


def _kill_group(pid: int, pgid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for pid, pgid in list(_LIVE_GROUPS.items()):
        _kill_group(pid, pgid, grace=5.0)
        _LIVE_GROUPS.pop(pid, None)


# Runs inside the Synapse interpreter before it becomes the homeserver: ask Linux to SIGTERM us
# when the parent goes away (even if it is SIGKILLed), then exec Synapse in place.
_LAUNCHER = """\
import os, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    import ctypes, signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
if os.getppid() != parent:
    sys.exit("parent exited before Synapse started")
os.execv(sys.executable, [sys.executable, "-m", "synapse.app.homeserver", *sys.argv[2:]])
"""


# ---------------------------------------------------------------------------------------------


class Synapse:
    """One Synapse homeserver process bound to 127.0.0.1, configured from `workdir`."""

    def __init__(
        self,
        workdir: Path,
        python: str | Path,
        *,
        port: int | None = None,
        rate_limited: bool = False,
        server_name: str | None = None,
        federation: bool = False,
        move_if_busy: bool = False,
    ) -> None:
        """`server_name` defaults to "localhost"; a federating server is always named
        `localhost:<federation port>` (chosen once per work directory), so it takes none.

        `move_if_busy=True`: when the port a reused work directory recorded is taken at `start()`
        (a work dir copied from elsewhere, e.g. a test fixture), listen on a free port instead of
        failing. Only for a server that does not federate, whose name does not include a port."""
        if federation and server_name is not None:
            raise ValueError("a federating devserver is named localhost:<federation port>")
        if federation and move_if_busy:
            raise ValueError("a federating devserver's name includes its port, so it cannot move")
        self.move_if_busy = move_if_busy
        self.workdir = Path(workdir).resolve()
        self.python = str(python)
        self.rate_limited = rate_limited
        self.federation = federation
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state = self._load_or_create_state(
            port=port, server_name=server_name or "localhost", federation=federation
        )
        self.server_name: str = self._state["server_name"]
        self.port: int = self._state["port"]
        self.base_url: str = f"http://127.0.0.1:{self.port}"
        # None when the server does not federate.
        self.federation_port: int | None = self._state.get("federation_port")
        self._proc: asyncio.subprocess.Process | None = None
        self._log_handle: Any = None

    # -- paths -----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_FILE

    # -- persistent state: port and secrets survive a reused workdir ----------------------------

    def _load_or_create_state(
        self, *, port: int | None, server_name: str, federation: bool
    ) -> dict[str, Any]:
        path = self.workdir / STATE_FILE
        if path.exists():
            state = json.loads(path.read_text())
            if federation != ("federation_port" in state):
                kind = "a federating" if "federation_port" in state else "a non-federating"
                raise ValueError(
                    f"{self.workdir} holds {kind} homeserver ({state['server_name']!r}); "
                    f"cannot reuse it with federation={federation} (use another workdir)"
                )
            if federation:
                server_name = state["server_name"]
            if state["server_name"] != server_name:
                raise ValueError(
                    f"{self.workdir} holds a homeserver for {state['server_name']!r}; "
                    f"cannot reuse it as {server_name!r} (use another workdir)"
                )
            if port is not None and port != state["port"]:
                state["port"] = port
                self._save_state(state)
            return state
        state = {
            "server_name": server_name,
            "port": port if port is not None else _free_port(),
            "registration_shared_secret": secrets.token_urlsafe(32),
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "admin": None,
        }
        if federation:
            state["federation_port"] = _free_port(avoid=state["port"])
            state["server_name"] = f"localhost:{state['federation_port']}"
        self._save_state(state)
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        _write_if_changed(self.workdir / STATE_FILE, json.dumps(state, indent=2) + "\n")

    # -- configuration ----------------------------------------------------------------------------

    def _rate_limits(self) -> dict[str, Any]:
        u = _UNLIMITED
        relaxed_auth = {
            "rc_registration": u,
            "rc_registration_token_validity": u,
            "rc_login": {"address": u, "account": u, "failed_attempts": u},
        }
        if self.rate_limited:
            # Realistic: Synapse's defaults everywhere, except logging in and registering, which
            # tests and benchmarks do in bulk.
            return {"rc_message": _SYNAPSE_DEFAULT_MESSAGE_LIMIT, **relaxed_auth}
        return {
            **relaxed_auth,
            "rc_message": u,
            "rc_admin_redaction": u,
            "rc_joins": {"local": u, "remote": u},
            "rc_joins_per_room": u,
            "rc_3pid_validation": u,
            "rc_invites": {"per_room": u, "per_user": u, "per_issuer": u},
            "rc_third_party_invite": u,
            "rc_key_requests": u,
            "rc_media_create": u,
            "rc_presence": {"per_user": u},
            "rc_delayed_event_mgmt": u,
            "rc_room_creation": u,
            "rc_reports": u,
            "rc_user_directory": u,
            "rc_profile": u,
        }

    def _federation_config(self) -> dict[str, Any]:
        wd = self.workdir
        return {
            "listeners": [
                {
                    "port": self.federation_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": True,
                    "x_forwarded": False,
                    # "federation" also serves the signing keys (/_matrix/key/v2/server), which
                    # the other server fetches directly since trusted_key_servers is empty.
                    "resources": [{"names": ["federation"], "compress": False}],
                }
            ],
            "tls_certificate_path": str(wd / TLS_CERT_FILE),
            "tls_private_key_path": str(wd / TLS_KEY_FILE),
            "federation_verify_certificates": False,
            # Synapse refuses to federate with loopback addresses unless allowed here.
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        }

    def _config(self) -> dict[str, Any]:
        wd = self.workdir
        s = self._state
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(wd / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(wd / "homeserver.db")}},
            "log_config": str(wd / LOG_CONFIG_FILE),
            "media_store_path": str(wd / "media_store"),
            "signing_key_path": str(wd / SIGNING_KEY_FILE),
            "report_stats": False,
            "enable_metrics": False,
            "registration_shared_secret": s["registration_shared_secret"],
            "macaroon_secret_key": s["macaroon_secret_key"],
            "form_secret": s["form_secret"],
            # Open only to holders of a registration token (`registration_token()`), as many
            # community servers run; the harness itself registers with the shared secret.
            "enable_registration": True,
            "registration_requires_token": True,
            "allow_guest_access": False,
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "presence": {"enabled": False},
            "max_upload_size": "50M",
            **self._rate_limits(),
        }
        if self.federation:
            federation = self._federation_config()
            config["listeners"] += federation.pop("listeners")
            config.update(federation)
        return config

    def _log_config(self) -> dict[str, Any]:
        root_level = os.environ.get("MAB_SYNAPSE_LOG_LEVEL", "WARNING").upper()
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "filters": {
                "context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "filters": ["context"],
                    "encoding": "utf8",
                }
            },
            "loggers": {
                "synapse.app": {"level": "INFO"},
                "synapse.storage.SQL": {"level": "WARNING"},
                "twisted": {"level": "WARNING"},
            },
            "root": {"level": root_level, "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def _write_config(self) -> None:
        # JSON is YAML, so no YAML library is needed on this side.
        (self.workdir / "media_store").mkdir(exist_ok=True)
        tls_files = (self.workdir / TLS_CERT_FILE, self.workdir / TLS_KEY_FILE)
        if self.federation and not all(path.exists() for path in tls_files):
            certificate, key = _self_signed_certificate("localhost")
            _write_if_changed(self.workdir / TLS_CERT_FILE, certificate.decode(), mode=0o644)
            _write_if_changed(self.workdir / TLS_KEY_FILE, key.decode())
        _write_if_changed(
            self.workdir / LOG_CONFIG_FILE, json.dumps(self._log_config(), indent=2) + "\n"
        )
        _write_if_changed(self.config_path, json.dumps(self._config(), indent=2) + "\n")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(var, None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _generate_keys(self, timeout: float) -> None:  # noqa: ASYNC109
        if (self.workdir / SIGNING_KEY_FILE).exists():
            return
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "synapse.app.homeserver",
            "-c",
            str(self.config_path),
            "--generate-keys",
            cwd=self.workdir,
            env=self._child_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise SynapseError(
                f"generating Synapse signing keys took over {timeout:.0f}s"
            ) from None
        if proc.returncode != 0 or not (self.workdir / SIGNING_KEY_FILE).exists():
            raise SynapseError(
                f"generating Synapse signing keys failed (exit {proc.returncode}):\n"
                + out.decode("utf-8", "replace")[-4000:]
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def _claim_ports(self) -> None:
        """Fail clearly if a port Synapse needs is taken, or move the client port when allowed:
        the name of a server that does not federate ("localhost") does not include its port, so
        users, rooms, tokens and signatures all stay valid and only `base_url` changes."""
        if not _port_is_free(self.port):
            if not self.move_if_busy:
                raise SynapseError(
                    f"port {self.port} on 127.0.0.1 is busy; is an old Synapse from {self.workdir} "
                    f"still running (see {self.workdir / 'homeserver.pid'})? Stop it or pick a port."
                )
            self.port = self._state["port"] = _free_port(avoid=self.port)
            self._save_state(self._state)
            self.base_url = f"http://127.0.0.1:{self.port}"
        if self.federation_port is not None and not _port_is_free(self.federation_port):
            # Not "pick a port": the federation port is part of the server's name.
            raise SynapseError(
                f"federation port {self.federation_port} on 127.0.0.1 is busy; is an old Synapse "
                f"from {self.workdir} still running? Stop it, or use a fresh work dir."
            )

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout: float = 90) -> None:  # noqa: ASYNC109
        """Write config, generate keys, start Synapse and wait until the client API answers."""
        if self.is_running():
            return
        deadline = time.monotonic() + timeout
        self._claim_ports()
        self._write_config()
        await self._generate_keys(max(1.0, deadline - time.monotonic()))

        self._log_handle = open(self.log_path, "ab")  # noqa: ASYNC230, SIM115 - closed in stop()
        self._log_handle.write(f"\n==== devserver start {time.ctime()} ====\n".encode())
        self._log_handle.flush()
        self._proc = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            _LAUNCHER,
            str(os.getpid()),
            "-c",
            str(self.config_path),
            cwd=self.workdir,
            env=self._child_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=self._log_handle,
            start_new_session=True,  # own session => own process group (pgid == pid)
        )
        _LIVE_GROUPS[self._proc.pid] = self._proc.pid
        try:
            await self._wait_ready(deadline)
        except BaseException:
            await self.stop(timeout=5)
            raise

    async def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        pending = [f"{self.base_url}/_matrix/client/versions"]
        if self.federation_port is not None:
            pending.append(
                f"https://127.0.0.1:{self.federation_port}/_matrix/federation/v1/version"
            )
        probe_timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=probe_timeout) as http:
            while True:
                if self._proc.returncode is not None:
                    raise SynapseError(
                        f"Synapse exited with code {self._proc.returncode} during start-up; "
                        f"log tail ({self.log_path}):\n{_tail(self.log_path)}"
                    )
                pending = [url for url in pending if not await _answers(http, url)]
                if not pending:
                    return
                if time.monotonic() >= deadline:
                    raise SynapseError(
                        f"Synapse did not answer {pending[0]} in time; log tail "
                        f"({self.log_path}):\n"
                        f"{_tail(self.log_path)}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        """SIGTERM the process group, wait up to `timeout`, then SIGKILL it."""
        proc = self._proc
        if proc is not None:
            pgid = proc.pid
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    pass
            # Whatever is left in the group (normally nothing) gets SIGKILL.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
            _LIVE_GROUPS.pop(proc.pid, None)
            self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    # -- users --------------------------------------------------------------------------------

    def user_id(self, localpart: str) -> str:
        return f"@{localpart.lower()}:{self.server_name}"

    async def _shared_secret_register(
        self,
        http: aiohttp.ClientSession,
        localpart: str,
        password: str,
        admin: bool,
        *,
        login: bool,
    ) -> tuple[int, dict[str, Any]]:
        url = f"{self.base_url}/_synapse/admin/v1/register"
        async with http.get(url) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise SynapseError(f"register nonce: HTTP {resp.status} {body}")
            nonce = body["nonce"]
        mac = hmac.new(self._state["registration_shared_secret"].encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            )
        )
        payload = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
            "inhibit_login": not login,
        }
        async with http.post(url, json=payload) as resp:
            return resp.status, await resp.json(content_type=None)

    async def _admin_token(self, http: aiohttp.ClientSession) -> str:
        """An access token for the devserver's own admin account, created on first use."""
        admin = self._state.get("admin")
        if admin:
            async with http.get(
                f"{self.base_url}/_matrix/client/v3/account/whoami",
                headers={"Authorization": f"Bearer {admin['access_token']}"},
            ) as resp:
                if resp.status == 200:
                    return admin["access_token"]
            # Token lost (e.g. database wiped): log in again, or register afresh below.
            async with http.post(
                f"{self.base_url}/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": admin["user_id"]},
                    "password": admin["password"],
                },
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status == 200:
                    admin["access_token"] = body["access_token"]
                    self._save_state(self._state)
                    return admin["access_token"]
        password = secrets.token_urlsafe(18)
        status, body = await self._shared_secret_register(
            http, ADMIN_LOCALPART, password, True, login=True
        )
        if status != 200:
            raise SynapseError(f"registering the devserver admin failed: HTTP {status} {body}")
        self._state["admin"] = {
            "user_id": body["user_id"],
            "password": password,
            "access_token": body["access_token"],
        }
        self._save_state(self._state)
        return body["access_token"]

    async def register(
        self, localpart: str, password: str | None = None, *, admin: bool = False
    ) -> tuple[str, str]:
        """Create a user with the shared-secret admin API; returns (user_id, password).

        If the user already exists, its password is set to `password` (or to a fresh random one
        when None) through the admin API, without logging out its devices, so the returned
        password always works. `admin=True` also promotes an existing user; False never demotes.
        """
        if password is None:
            password = secrets.token_urlsafe(18)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            status, body = await self._shared_secret_register(
                http, localpart, password, admin, login=False
            )
            if status == 200:
                return body["user_id"], password
            if body.get("errcode") != "M_USER_IN_USE":
                raise SynapseError(f"registering {localpart!r} failed: HTTP {status} {body}")
            user_id = self.user_id(localpart)
            token = await self._admin_token(http)
            change: dict[str, Any] = {"password": password, "logout_devices": False}
            if admin:
                change["admin"] = True
            async with http.put(
                f"{self.base_url}/_synapse/admin/v2/users/{quote(user_id, safe='')}",
                json=change,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status not in (200, 201):
                    raise SynapseError(
                        f"updating existing user {user_id} failed: HTTP {resp.status} "
                        f"{await resp.text()}"
                    )
            return user_id, password

    async def registration_token(self) -> str:
        """A new single-use registration token, as a homeserver admin would hand one out."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            token = await self._admin_token(http)
            async with http.post(
                f"{self.base_url}/_synapse/admin/v1/registration_tokens/new",
                json={"uses_allowed": 1},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise SynapseError(f"creating a registration token failed: HTTP {resp.status} {body}")
                return body["token"]

    async def joined_rooms(self, user_id: str) -> list[str]:
        """The rooms `user_id` has joined, as the admin API lists them (no login as them)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            token = await self._admin_token(http)
            async with http.get(
                f"{self.base_url}/_synapse/admin/v1/users/{quote(user_id, safe='')}/joined_rooms",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise SynapseError(f"listing the rooms of {user_id} failed: HTTP {resp.status} {body}")
                return body["joined_rooms"]

    async def exempt_from_rate_limits(self, user_id: str, exempt: bool = True) -> None:
        """Lift the message rate limit for one account, as a homeserver admin would for the bot
        (README: "Rate limits"): `messages_per_second` 0 means unlimited. `exempt=False`
        removes the override again: the server's `rc_message` applies."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            token = await self._admin_token(http)
            async with http.request(
                "POST" if exempt else "DELETE",
                f"{self.base_url}/_synapse/admin/v1/users/{quote(user_id, safe='')}/"
                "override_ratelimit",
                json={"messages_per_second": 0, "burst_count": 0} if exempt else None,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status != 200:
                    raise SynapseError(f"exempting {user_id} from rate limits failed: HTTP "
                                       f"{resp.status} {await resp.text()}")

    @property
    def registration_shared_secret(self) -> str:
        return self._state["registration_shared_secret"]

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<Synapse {self.server_name} {self.base_url} {state} workdir={self.workdir}>"


async def _main(argv: list[str]) -> int:
    workdir = Path(argv[0]) if argv else REPO_ROOT / ".demo" / "synapse"
    server = Synapse(workdir, synapse_python())
    started = time.monotonic()
    await server.start()
    print(
        f"Synapse {server.server_name} at {server.base_url} "
        f"(ready in {time.monotonic() - started:.1f}s, workdir {server.workdir}); Ctrl-C stops"
    )
    try:
        assert server._proc is not None
        await server._proc.wait()
    finally:
        await server.stop()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(_main(sys.argv[1:])))
