"""The bot as a real process (`python -m bot run`), so tests can restart it, kill it or stop it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from bot.config import load_config
from bot.devserver import Synapse, write_bot_config
from bot.secret_box import read_sealed, write_sealed


class BotProcess:
    def __init__(self, synapse: Synapse, workdir: Path, user_id: str, password: str,
                 *, config_path: Path | None = None, extra_matrix: str = "", extra_bot: str = "",
                 extra_sections: str = "") -> None:
        """Writes a config for the account in `workdir`, unless given one (`config_path`)."""
        self.synapse = synapse
        self.workdir = workdir
        self.user_id = user_id
        self.password = password
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = workdir / "bot.log"
        self.config_path = config_path or write_bot_config(
            workdir, synapse.base_url, synapse.server_name, user_id, password, log_level="DEBUG",
            extra_matrix=extra_matrix, extra_bot=extra_bot, extra_sections=extra_sections,
        )

    @classmethod
    async def create(cls, synapse: Synapse, workdir: Path, localpart: str = "bot",
                     **kwargs: str) -> BotProcess:
        user_id, password = await synapse.register(localpart)
        return cls(synapse, workdir, user_id, password, **kwargs)

    @property
    def database(self) -> Path:
        return self.workdir / "mutual-aid-bot.db"

    def saved_session(self) -> dict:
        """The bot's saved login (user, device, access token), unsealed with its passphrase."""
        passphrase = load_config(self.config_path).matrix.store_passphrase.read()
        return json.loads(read_sealed(self.workdir / "store" / "session.json", passphrase,
                                      "session"))

    def save_session(self, session: dict) -> None:
        passphrase = load_config(self.config_path).matrix.store_passphrase.read()
        write_sealed(self.workdir / "store" / "session.json", json.dumps(session).encode(),
                     passphrase, "session")

    async def start(self, timeout: float = 60, test_env: dict[str, str] | None = None) -> None:
        """Start and wait until the bot has finished its first sync. `test_env` sets test-only
        variables (MAB_TEST_*), which are otherwise never passed on."""
        assert self.process is None or self.process.returncode is not None
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: ASYNC230, SIM115 - handed to the child, tiny
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAB_TEST")}
        env.update(test_env or {})
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--config", str(self.config_path),
            stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=self.workdir, env=env,
        )
        log.close()
        await self.wait_for_log("first sync complete", timeout, offset)

    async def wait_for_log(self, text: str, timeout: float = 30, offset: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace")[offset:]:
                return
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"bot exited with {self.process.returncode}:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"bot log never said {text!r}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
