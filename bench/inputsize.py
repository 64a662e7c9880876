"""Work bounded by input: every registered command on worst-case 48 KiB messages.

For every command, the command word alone and each of its examples without its last word (so the
deeper parsers are reached: `!shift add …`, `!shift edit S1 …`, `!noshow @sam:example.org …`), is
followed by 48 KiB of text in several shapes (many short words, one long word, digits, newlines,
mentions, markdown characters, dates, non-ASCII digits). Direct-message text outside a command goes
through the private-request conversation. Each message is handled as the app handles it (the
handler in one storage transaction, replies rendered) in a pod room with a shift, posts and a
stand-in request, by a coordinator; the median of `--repeat` runs is reported. Prints the slowest
rows and writes bench/results/inputsize.json.

    python bench/inputsize.py [--repeat 3] [--show 25]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_results  # noqa: E402
from bot.app import App  # noqa: E402
from bot.commands import build_registry, dispatch  # noqa: E402
from bot.config import BotConfig  # noqa: E402
from bot.context import Context, Incoming, Outgoing  # noqa: E402
from bot.messages import RoomRequest  # noqa: E402
from bot.storage import Storage  # noqa: E402

ROOM = "!inputsize:localhost"
DM = "!inputsize-dm:localhost"
COORDINATOR = "@coordinator:localhost"
MEMBER = "@member:localhost"
SIZE = 48 * 1024
# Each message is also timed at a quarter of the size: linear work grows about 4x from there to
# SIZE, quadratic work 16x. Rows that grow more than GROWTH_LIMIT are flagged.
SMALL = SIZE // 4
GROWTH_LIMIT = 8.0
TARGET_MS = 50.0

SHAPES = {
    "short words": "ab ",
    "one long word": "a",
    "digits": "7",
    "numbers": "12 ",
    "newlines": "a\n",
    "mentions": "@a:b ",
    "markdown": "*_[]`#>!(|~",
    "dates": "2026-11-28 ",
    "non-ASCII digits": "²٣ ",
}


def message(prefix: str, unit: str, size: int) -> str:
    return (prefix + unit * (size // len(unit) + 1))[:size]


class SeededTransport:
    """Replies are kept by the handler's context; the transport only answers questions."""

    def __init__(self) -> None:
        self.rooms = {ROOM: [COORDINATOR, MEMBER], DM: [COORDINATOR]}

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        return "$delivered"

    def power_level(self, room_id: str, user_id: str) -> int:
        return 100 if user_id == COORDINATOR else 0

    def members(self, room_id: str) -> list[str]:
        return list(self.rooms.get(room_id, []))

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        return [(room, "Pod") for room, people in self.rooms.items() if user_id in people]

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        return existing or "!private:localhost"

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        return

    def identity_unconfirmed(self, user_id: str) -> bool:
        return False

    async def confirm_identity(self, user_id: str) -> bool:
        return False


class Bench:
    def __init__(self, storage: Storage, app: App) -> None:
        self.storage = storage
        self.app = app
        self.ids = count(1)
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    async def say(self, text: str, sender: str = COORDINATOR, room: str = ROOM,
                  direct: bool = False) -> None:
        item = Incoming(f"$seed{next(self.ids)}", room, sender, text, direct, self.now)
        await self.app.receive([item])
        await self.app.run_until_idle(timeout=60)

    async def handle(self, text: str, room: str, direct: bool) -> tuple[float, str]:
        """Seconds the handler held the loop for `text`, and its outcome ("error": it raised,
        and the person would get the generic apology)."""
        event_id = f"$bench{next(self.ids)}"
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self.storage.transaction() as tx:
                ctx = Context(sender=COORDINATOR, room_id=room, is_direct=direct, text=text,
                              event_id=event_id, now=self.now, tx=tx, config=self.app.config,
                              transport=self.app.transport, registry=self.app.registry)
                await dispatch(ctx)
            outcome = f"{len(ctx.outgoing)} sent"
        except Exception as exc:  # reported in the table, not raised: the next rows still run
            outcome = f"error: {type(exc).__name__}"
        return time.perf_counter() - started, outcome


def prefixes() -> list[tuple[str, bool]]:
    """(message prefix, in a direct chat) for every command and the deeper forms of its examples."""
    registry = build_registry()
    found: dict[tuple[str, bool], None] = {}
    for cmd in registry.commands.values():
        for direct in (False, True):
            found[("!" + cmd.name + " ", direct)] = None
            for example in cmd.examples:
                words = example.split()
                if len(words) > 1:
                    found[("!" + " ".join(words[:-1]) + " ", direct)] = None
    found[("", True)] = None  # a private request's conversation: each answer is free text
    return list(found)


async def run(repeat: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = await Storage.open(Path(tmp) / "bench.db")
        app = App(storage, BotConfig(), SeededTransport(), clock=lambda: bench.now)
        bench = Bench(storage, app)
        for text, sender in [("!shift add Food run every saturday 10-13 need 3", COORDINATOR),
                             ("!need groceries for 2", MEMBER), ("!offer soup for 4", COORDINATOR),
                             ("!signup S1", COORDINATOR), ("!standin S1", COORDINATOR)]:
            await bench.say(text, sender)
        rows = []
        try:
            for prefix, direct in prefixes():
                for shape, unit in SHAPES.items():
                    timed = {}
                    for size in (SMALL, SIZE):
                        times = []
                        for _ in range(repeat):
                            if not prefix:  # open the conversation, then answer with the filler
                                await bench.handle("hello", DM, True)
                            seconds, outcome = await bench.handle(
                                message(prefix, unit, size), DM if direct else ROOM, direct)
                            times.append(seconds * 1000)
                        timed[size] = statistics.median(times)
                    rows.append({"command": prefix.strip() or "(private request answer)",
                                 "where": "dm" if direct else "room", "shape": shape,
                                 "ms": round(timed[SIZE], 2), "ms_quarter_size": round(timed[SMALL], 2),
                                 "growth": round(timed[SIZE] / max(timed[SMALL], 0.05), 1),
                                 "outcome": outcome})
        finally:
            await app.stop()
            await storage.close()
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", type=int, default=25, help="how many of the slowest rows to print")
    args = parser.parse_args()
    rows = asyncio.run(run(args.repeat))
    rows.sort(key=lambda r: r["ms"], reverse=True)
    print(f"{len(rows)} command/shape pairs, {SIZE:,}-character messages (and {SMALL:,} for the "
          f"growth), median of {args.repeat}")
    print(f"{'command':<44} {'where':<5} {'shape':<17} {'ms':>8} {'1/4 size':>9} {'growth':>7}"
          "  outcome")
    for row in rows[:args.show]:
        print(f"{row['command'][:44]:<44} {row['where']:<5} {row['shape']:<17} "
              f"{row['ms']:>8.2f} {row['ms_quarter_size']:>9.2f} {row['growth']:>6.1f}x"
              f"  {row['outcome']}")
    # Growth only means something above timer noise.
    superlinear = [r for r in rows if r["growth"] > GROWTH_LIMIT and r["ms"] >= 2]
    for row in superlinear:
        print(f"SUPERLINEAR ({row['growth']}x for 4x the input): {row['command']} "
              f"({row['where']}, {row['shape']})")
    errors = [r for r in rows if r["outcome"].startswith("error")]
    for row in errors:
        print(f"ERROR (the person would get the apology): {row['command']} ({row['where']}, "
              f"{row['shape']}): {row['outcome']}")
    slowest = rows[0]
    met = "yes" if slowest["ms"] <= TARGET_MS else "NO"
    print(f"slowest: {slowest['command']} ({slowest['where']}, {slowest['shape']}) "
          f"{slowest['ms']:.2f} ms; target <= {TARGET_MS:.0f} ms: {met}")
    write_results("inputsize", {"machine": machine(), "size_chars": SIZE, "repeat": args.repeat,
                                "target_ms": TARGET_MS, "slowest": slowest, "errors": len(errors),
                                "superlinear": len(superlinear),
                                "rows": rows})


if __name__ == "__main__":
    main()
