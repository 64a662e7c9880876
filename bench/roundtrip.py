"""Command -> reply through a real Synapse: mutual-aid-bot against a bare matrix-nio echo bot.

One run starts its own Synapse (bot/devserver.py) and measures, for each bot in turn, in the same
kind of end-to-end encrypted room:

  (a) 200 sequential commands: command -> reply latency p50 / p95;
  (b) a 500-command burst from 8 concurrent senders: replies/s and commands lost;
  (c) a paced phase at 30 commands/s: the bot's CPU (% of one core) and CPU seconds per command,
      from /proc/<pid>/stat. If replies fall behind 30/s, the CPU over the phase is the CPU at
      the rate achieved (also reported); the CPU at 30/s is CPU per reply x 30.

It prints a table and writes bench/results/roundtrip.json, with the bot/echo ratios and whether
the targets are met. Needs the Synapse interpreter (MAB_SYNAPSE_PYTHON or .venv-synapse).

    python bench/roundtrip.py [--sequential 200] [--burst 500] [--senders 8] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    MegolmEvent,
    RoomMessage,
    SyncResponse,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, write_results  # noqa: E402
from bot.devserver import Synapse, synapse_python, write_bot_config  # noqa: E402

MEGOLM = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class Client:
    """A person: an E2EE nio client. The listener also records when each reply arrives."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.replies: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def login(cls, synapse: Synapse, localpart: str, store: Path) -> Client:
        user_id, password = await synapse.register(localpart)
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                                   request_timeout=60, max_limit_exceeded=20)
        client = AsyncClient(synapse.base_url, user_id, store_path=str(store), config=config)
        response = await client.login(password, device_name=localpart)
        assert isinstance(response, LoginResponse), response
        if client.should_upload_keys:
            await client.keys_upload()
        await client.sync(timeout=0, full_state=True)
        return cls(client)

    async def housekeeping(self) -> None:
        c = self.client
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            await c.keys_query()
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()

    async def sync(self, timeout_ms: int = 0) -> None:
        response = await self.client.sync(timeout=timeout_ms)
        assert isinstance(response, SyncResponse), response
        await self.housekeeping()

    def listen(self, *bot_ids: str) -> None:
        async def on_message(room: Any, event: RoomMessage) -> None:
            if event.sender not in bot_ids:
                return
            relates = event.source.get("content", {}).get("m.relates_to") or {}
            target = (relates.get("m.in_reply_to") or {}).get("event_id")
            if target and target not in self.replies:
                self.replies[target] = time.monotonic()
                waiter = self.waiters.get(target)
                if waiter:
                    waiter.set()

        late: list[tuple[Any, MegolmEvent]] = []

        async def on_encrypted(room: Any, event: MegolmEvent) -> None:
            late.append((room, event))  # its key is not here yet

        self.client.add_event_callback(on_message, RoomMessage)
        self.client.add_event_callback(on_encrypted, MegolmEvent)

        async def loop() -> None:
            while True:
                try:
                    await self.sync(timeout_ms=30_000)
                except Exception as exc:  # noqa: BLE001 - keep listening
                    print(f"listener: {type(exc).__name__}: {exc}", file=sys.stderr)
                    await asyncio.sleep(1)
                    continue
                still = []
                for room, event in late:
                    event.room_id = room.room_id
                    try:
                        decrypted = self.client.decrypt_event(event)
                    except Exception:  # noqa: BLE001 - still no key
                        still.append((room, event))
                        continue
                    if isinstance(decrypted, RoomMessage):
                        await on_message(room, decrypted)
                late[:] = still

        self._task = asyncio.create_task(loop())

    async def send(self, room: str, text: str) -> tuple[str, float]:
        started = time.monotonic()
        response = await self.client.room_send(room, "m.room.message",
                                               {"msgtype": "m.text", "body": text},
                                               ignore_unverified_devices=True)
        return response.event_id, started

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close()


READY = {"echo": "echo bot ready", "bot": "first sync complete"}


async def start_process(kind: str, synapse: Synapse, work: Path,
                        localpart: str | None = None) -> tuple[asyncio.subprocess.Process, str]:
    """Register (or re-password) the account, start the bot and wait until it has synced."""
    user_id, password = await synapse.register(localpart or f"{kind}-bench")
    proc = await launch(kind, synapse, work, user_id, password)
    await wait_ready(kind, proc, work)
    return proc, user_id


async def launch(kind: str, synapse: Synapse, work: Path, user_id: str,
                 password: str) -> asyncio.subprocess.Process:
    """Start the echo bot or mutual-aid-bot (through its CLI) as `user_id`; its log is out.log."""
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "out.log", "wb")  # noqa: SIM115, ASYNC230 - handed to the child
    if kind == "echo":
        args = [str(ROOT / "bench" / "echo_bot.py"), synapse.base_url, user_id, password,
                str(work / "store")]
        (work / "store").mkdir(exist_ok=True)
    else:
        config = write_bot_config(work, synapse.base_url, synapse.server_name, user_id, password)
        args = ["-m", "bot", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=log,
                                                stderr=asyncio.subprocess.STDOUT, cwd=work, env=env)
    log.close()
    return proc


async def wait_ready(kind: str, proc: asyncio.subprocess.Process, work: Path,
                     timeout: float = 60) -> None:  # noqa: ASYNC109
    for _ in range(int(timeout * 10)):
        if READY[kind] in (work / "out.log").read_text(errors="replace"):
            return
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{kind} did not start:\n{(work / 'out.log').read_text()[-3000:]}")


async def measure(kind: str, synapse: Synapse, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    proc, bot_id = await start_process(kind, synapse, work / kind)
    people = [await Client.login(synapse, f"{kind}-p{i}", work / kind / f"p{i}")
              for i in range(args.senders)]
    listener = await Client.login(synapse, f"{kind}-listener", work / kind / "listener")
    owner = people[0]
    try:
        created = await owner.client.room_create(
            name=f"{kind} bench", invite=[bot_id] + [c.client.user_id for c in people[1:] + [listener]],
            initial_state=[MEGOLM])
        room = created.room_id
        for c in people[1:] + [listener]:
            await c.client.join(room)
        for _ in range(300):  # the bot joins on invite
            await owner.sync(1000)
            if bot_id in owner.client.rooms[room].users:
                break
        for c in people + [listener]:
            await c.sync()
            if c.client.should_query_keys:
                await c.client.keys_query()
            # Olm sessions with every device in the room before the first send, or nio shares
            # the room key with nobody it has no session with ("Missing session for device").
            missing = c.client.get_missing_sessions(room)
            if missing:
                await c.client.keys_claim(missing)
        listener.listen(bot_id)
        # Warm up: sessions shared, the bot's keys known; every sender must get its answer.
        warmup = [(await c.send(room, f"!need groceries warmup {i}"))[0] for i, c in enumerate(people)]
        await wait_all(listener, warmup, 60)
        if not all(e in listener.replies for e in warmup):
            raise RuntimeError(f"{kind}: warm-up commands unanswered; keys did not reach the bot")

        # (a) sequential
        latencies = []
        sender = people[0]
        for i in range(args.sequential):
            event = asyncio.Event()
            event_id, started = await sender.send(room, f"!need groceries seq {i}")
            listener.waiters[event_id] = event
            if event_id not in listener.replies:
                await asyncio.wait_for(event.wait(), 60)
            latencies.append((listener.replies[event_id] - started) * 1000)

        # (b) burst: 8 senders at once
        per = args.burst // args.senders
        cpu_before = cpu_seconds(proc.pid)
        started = time.monotonic()

        async def burst(c: Client, n: int) -> list[str]:
            return [(await c.send(room, f"!offer ladder burst {n} {i}"))[0] for i in range(per)]

        sent = [e for batch in await asyncio.gather(*(burst(c, n) for n, c in enumerate(people)))
                for e in batch]
        await wait_all(listener, sent, args.burst_timeout)
        answered = [e for e in sent if e in listener.replies]
        last = max((listener.replies[e] for e in answered), default=time.monotonic())
        burst_seconds = last - started
        burst_cpu = cpu_seconds(proc.pid) - cpu_before

        # (c) paced at 30 commands/s
        paced = []
        cpu_before = cpu_seconds(proc.pid)
        paced_started = time.monotonic()
        total = int(args.rate * args.paced_seconds)
        for i in range(total):
            due = paced_started + i / args.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            c = people[i % len(people)]
            paced.append(asyncio.create_task(c.send(room, f"!need groceries paced {i}")))
        paced_ids = [(await t)[0] for t in paced]
        await wait_all(listener, paced_ids, 60)
        paced_wall = time.monotonic() - paced_started
        paced_cpu = cpu_seconds(proc.pid) - cpu_before
        paced_answered = sum(1 for e in paced_ids if e in listener.replies)
        paced_cpu_per_reply = paced_cpu / max(1, paced_answered)
        return {
            "latency_p50_ms": percentile(latencies, 0.5),
            "latency_p95_ms": percentile(latencies, 0.95),
            "latency_mean_ms": statistics.fmean(latencies),
            "burst_commands": len(sent),
            "burst_replies": len(answered),
            "burst_lost": len(sent) - len(answered),
            "burst_replies_per_s": len(answered) / burst_seconds if burst_seconds > 0 else 0.0,
            "burst_cpu_s_per_command": burst_cpu / max(1, len(answered)),
            "paced_rate": args.rate,
            "paced_commands": total,
            "paced_lost": sum(1 for e in paced_ids if e not in listener.replies),
            # CPU over the phase, from the first send to the last reply. When replies fall
            # behind the offered rate, this is the CPU at the rate actually achieved...
            "paced_cpu_percent_of_core": 100 * paced_cpu / paced_wall,
            "paced_replies_per_s": paced_answered / paced_wall,
            "paced_cpu_s_per_command": paced_cpu_per_reply,
            # ...so the CPU the offered rate costs is CPU per reply times that rate.
            "paced_cpu_percent_at_rate": 100 * paced_cpu_per_reply * args.rate,
        }
    finally:
        for c in people + [listener]:
            await c.close()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()


async def wait_all(listener: Client, event_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout * 20) + 1):
        if all(e in listener.replies for e in event_ids) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mab-roundtrip-"))
    synapse = Synapse(work / "synapse", synapse_python())
    await synapse.start()
    try:
        results = {kind: await measure(kind, synapse, work, args) for kind in ("echo", "bot")}
    finally:
        await synapse.stop()
        shutil.rmtree(work, ignore_errors=True)
    echo, bot = results["echo"], results["bot"]
    ratios = {
        "latency_p50": bot["latency_p50_ms"] / echo["latency_p50_ms"],
        "latency_p95": bot["latency_p95_ms"] / echo["latency_p95_ms"],
        "throughput": bot["burst_replies_per_s"] / echo["burst_replies_per_s"],
        "cpu_per_command": bot["burst_cpu_s_per_command"] / echo["burst_cpu_s_per_command"],
    }
    targets = {
        "latency_ratio_p50_le_1.10": ratios["latency_p50"] <= 1.10,
        "throughput_ratio_ge_0.95": ratios["throughput"] >= 0.95,
        "lost_eq_0": bot["burst_lost"] == 0 and bot["paced_lost"] == 0,
        "cpu_le_10pct_at_30_per_s": bot["paced_cpu_percent_at_rate"] <= 10.0,
    }
    return {"machine": machine(), "settings": vars(args), "echo": echo, "bot": bot,
            "ratios_bot_over_echo": ratios, "targets_met": targets}


def print_table(report: dict[str, Any]) -> None:
    echo, bot, ratios = report["echo"], report["bot"], report["ratios_bot_over_echo"]
    rows = [
        ("latency p50 (ms)", "latency_p50_ms", ratios["latency_p50"]),
        ("latency p95 (ms)", "latency_p95_ms", ratios["latency_p95"]),
        ("burst replies/s", "burst_replies_per_s", ratios["throughput"]),
        ("burst lost", "burst_lost", None),
        ("CPU s/command (burst)", "burst_cpu_s_per_command", ratios["cpu_per_command"]),
        ("paced replies/s achieved", "paced_replies_per_s", None),
        ("CPU % of a core, paced phase", "paced_cpu_percent_of_core", None),
        ("CPU s/command (paced)", "paced_cpu_s_per_command", None),
        (f"CPU % of a core at {bot['paced_rate']:g}/s", "paced_cpu_percent_at_rate", None),
        ("paced lost", "paced_lost", None),
    ]
    print(f"{'':32} {'echo':>10} {'bot':>10} {'bot/echo':>9}")
    for label, key, ratio in rows:
        r = f"{ratio:9.2f}" if ratio is not None else ""
        digits = 4 if key.endswith("_s_per_command") else 3  # a few ms: 3 decimals hide changes
        print(f"{label:32} {echo[key]:10.{digits}f} {bot[key]:10.{digits}f} {r}")
    for name, ok in report["targets_met"].items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(f"machine: {report['machine']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--burst-timeout", type=float, default=180)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print_table(report)
    write_results("roundtrip", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
