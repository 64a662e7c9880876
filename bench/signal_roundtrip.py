"""Command-to-reply time through the Signal transport: fake daemon on loopback TCP, real JSON-RPC
client, transport, app and SQLite file.

- one at a time: a group command is injected, and the clock stops when the daemon has the reply's
  `send`; p50/p95 over `--commands`.
- burst: `--burst` commands injected at once (a busy group after the bot was away); commands/s
  until the last reply was sent.

The fake daemon answers at once, so this is the bot's own cost per message on Signal (the real
daemon adds its encryption and the Signal servers' latency). Prints the figures and writes
bench/results/signal_roundtrip.json.

    python bench/signal_roundtrip.py [--commands 200] [--burst 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, write_results  # noqa: E402
from bot.config import BotConfig, SignalConfig  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.transport.signal import SignalTransport  # noqa: E402
from tests.signal_fake import FakeSignalDaemon, Person  # noqa: E402

BOT = "0b0b0b0b-0000-4000-8000-000000000001"
ALICE = "a11ce000-0000-4000-8000-00000000000a"
GROUP = "QmVuY2hHcm91cDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="
LIMIT_S = 120.0


async def until_sends(fake: FakeSignalDaemon, count: int) -> None:
    deadline = time.monotonic() + LIMIT_S
    while len(fake.sends) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(fake.sends)} of {count} replies after {LIMIT_S} s")
        await asyncio.sleep(0.0005)


async def run(commands: int, burst: int) -> dict[str, object]:
    fake = FakeSignalDaemon(account=BOT, bot_uuid=BOT,
                            people={ALICE: Person(ALICE, "+15550100101", "Alice")})
    fake.groups[GROUP] = {"name": "Bench pod", "members": [BOT, ALICE], "admins": [ALICE]}
    await fake.start()
    with tempfile.TemporaryDirectory() as tmp:
        config = BotConfig(signal=SignalConfig(daemon=fake.address, account=BOT))
        config.storage.database = Path(tmp) / "bench.db"
        runtime = await Runtime.open(config)  # the composition root `run` uses
        runtime.attach(SignalTransport(config, runtime.storage))
        await runtime.start()
        await asyncio.wait_for(runtime.app.ready.wait(), 30)
        try:
            latencies = []
            for n in range(commands):
                started = time.perf_counter()
                fake.inject(fake.envelope(ALICE, f"!need groceries {n}", group_id=GROUP))
                await until_sends(fake, n + 1)
                latencies.append((time.perf_counter() - started) * 1000)
            before = len(fake.sends)
            started = time.perf_counter()
            for n in range(burst):
                fake.inject(fake.envelope(ALICE, f"!offer soup {n}", group_id=GROUP))
            await until_sends(fake, before + burst)
            burst_s = time.perf_counter() - started
        finally:
            await runtime.close()
            await fake.stop()
    return {
        "one_at_a_time_ms": {"p50": round(statistics.median(latencies), 2),
                             "p95": round(percentile(latencies, 0.95), 2), "n": commands},
        "burst": {"commands": burst, "seconds": round(burst_s, 2),
                  "commands_per_s": round(burst / burst_s, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    figures = asyncio.run(run(args.commands, args.burst))
    one = figures["one_at_a_time_ms"]
    burst = figures["burst"]
    print(f"Signal, one command at a time: p50 {one['p50']} ms, p95 {one['p95']} ms "
          f"({one['n']} commands)")
    print(f"Signal, burst of {burst['commands']}: {burst['seconds']} s, "
          f"{burst['commands_per_s']} commands/s")
    write_results("signal_roundtrip", {"machine": machine(), **figures})


if __name__ == "__main__":
    main()
