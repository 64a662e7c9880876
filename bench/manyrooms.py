"""One bot, many rooms: mutual-aid-bot in 1,000 encrypted rooms on a local Synapse.

The bench starts its own Synapse (bot/devserver.py, rate limits off for every account through its
config), registers `--people` people, each with their own nio device (E2EE), and has them make
`--rooms` encrypted rooms with the bot invited: pods and network rooms of 5 to 15 people drawn from
them, and one direct chat with the bot per person (a tenth of the rooms at most). The bot, started
through its CLI as in bench/roundtrip.py, joins each on invite. Every room's creator then writes
`--history` messages in it, the last a command for pods and direct chats, which the bot answers.

Then it measures:

  * resident memory (VmRSS, and the peak VmHWM) of the bot, settled after a restart;
  * CPU per idle minute (% of a core) over `--idle-seconds` in which nobody writes;
  * restart to first answered command: the bot is stopped (SIGTERM), started again, and a command
    is sent at once; the time from starting the process to the reply (and to its first sync);
  * command latency in a busy room: `--busy-senders` people send commands at `--busy-rate` per
    second; the same load against a second bot that is in that one room only gives the one-room
    figure, and the ratio of the two medians. Both bots run throughout and `--rounds` rounds
    alternate between them (`--busy-seconds` per bot in all). Each bot's median is split into
    stages, from the records the people, the bots (their inbox and outbox) and Synapse (its events'
    origin_server_ts) keep: send → the event at the homeserver, → the bot handling it, → the
    reply at the homeserver, → the listener holding the reply.

`--only busy` skips the restart and idle measurements (a re-run that looks at the busy room only).

Set-up is concurrent (at most `--concurrency` requests of the people at once) and slow at full
size. With `--workdir DIR` the built homeserver, the people's devices and the bot's stores are kept
there and a re-run with the same parameters skips the set-up.

It prints the figures and writes bench/results/manyrooms.json. Needs the Synapse interpreter
(MAB_SYNAPSE_PYTHON or .venv-synapse).

    python bench/manyrooms.py [--rooms 1000] [--people 100] [--workdir DIR]
    python bench/manyrooms.py --rooms 50 --people 20 --idle-seconds 20 --busy-seconds 10  # quick
    python bench/manyrooms.py --workdir DIR --only busy --busy-seconds 40  # the busy room again
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from nio import AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, RoomCreateResponse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, write_results  # noqa: E402
from bench.roundtrip import MEGOLM, READY, Client, cpu_seconds, launch, wait_all, wait_ready  # noqa: E402
from bot.devserver import Synapse, synapse_python  # noqa: E402

T = TypeVar("T")
MANIFEST = "manifest.json"
BUILD_PARTS = {"synapse", "bot", "people", "one-room"}  # the folders a build makes in --workdir
# What a re-run must share with the cached build to reuse it.
BUILD_PARAMETERS = ("rooms", "people", "history", "seed")
SENDERS_PER_ROUND = 20  # each round claims at most this many one-time keys from any one device
CHATTER = ("who has the van this week?", "thanks for the soup!", "see you at the pantry saturday",
           "the stairs light is fixed", "anyone going past the pharmacy?")
TARGETS = {"rss_mb": 150.0, "idle_cpu_percent": 1.0, "restart_to_reply_s": 10.0,
           "busy_latency_ratio": 1.10}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs with at most `limit` at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


# ---- the bot as a process ---------------------------------------------------------------------


class BotProcess:
    """mutual-aid-bot run through its CLI from `work` (config, stores, database, out.log)."""

    def __init__(self, synapse: Synapse, localpart: str, work: Path) -> None:
        self.synapse, self.localpart, self.work = synapse, localpart, work
        self.user_id = synapse.user_id(localpart)
        self.password = ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the bot and wait for its first sync."""
        await self.launch()
        await wait_ready("bot", self.proc, self.work, timeout=600)

    async def launch(self) -> None:
        if not self.password:  # a fresh password each run; the saved session is reused anyway
            self.user_id, self.password = await self.synapse.register(self.localpart)
        self.proc = await launch("bot", self.synapse, self.work, self.user_id, self.password)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
            "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024}


async def settle(pid: int, quiet_percent: float = 3.0, window: float = 5.0,
                 limit: float = 600.0) -> float:
    """Wait until the bot's CPU over a window is below `quiet_percent` of a core (it has caught
    up with what it was sent); the seconds waited. Bounded by `limit`."""
    started = time.monotonic()
    for _ in range(int(limit / window) + 1):
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if 100 * (cpu_seconds(pid) - before) / window < quiet_percent:
            break
    return time.monotonic() - started


# ---- the people and the rooms -----------------------------------------------------------------


@dataclass
class PlannedRoom:
    kind: str  # "pod", "network" or "dm"
    members: list[int]  # indices of people; the first makes the room and writes its history


def plan_rooms(rooms: int, people: int, seed: int) -> list[PlannedRoom]:
    """Pods of 5 to 15 people (the first, the busy room, has 15), network rooms of 5 to 15, and
    one direct chat per person, up to a tenth of the rooms."""
    rng = random.Random(seed)
    dms = min(people, rooms // 10)
    networks = rooms // 20
    plan = [PlannedRoom("pod", rng.sample(range(people), min(people, 15 if i == 0 else rng.randint(5, 15))))
            for i in range(rooms - dms - networks)]
    plan += [PlannedRoom("network", rng.sample(range(people), min(people, rng.randint(5, 15))))
             for _ in range(networks)]
    plan += [PlannedRoom("dm", [i]) for i in range(dms)]
    return plan


async def open_person(synapse: Synapse, localpart: str, store: Path, saved: dict[str, str] | None,
                      people: list[Client]) -> dict[str, str]:
    """A person's nio client, added to `people`: a new device on the first build, the same
    device on a re-run. Returns what a re-run needs to open it again."""
    store.mkdir(parents=True, exist_ok=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                               request_timeout=60, max_limit_exceeded=20)
    if saved is None:
        user_id, password = await synapse.register(localpart)
        client = AsyncClient(synapse.base_url, user_id, store_path=str(store), config=config)
        response = await client.login(password, device_name=localpart)
        if not isinstance(response, LoginResponse):
            raise RuntimeError(f"login of {localpart} failed: {response}")
        saved = {"user_id": user_id, "device_id": response.device_id,
                 "access_token": response.access_token}
    else:
        client = AsyncClient(synapse.base_url, saved["user_id"], device_id=saved["device_id"],
                             store_path=str(store), config=config)
        client.restore_login(saved["user_id"], saved["device_id"], saved["access_token"])
    people.append(Client(client))
    if client.should_upload_keys:
        await client.keys_upload()
    return saved


def person_number(person: Client) -> int:
    """17 for @person17:localhost: `people` is kept in this order, as the plan counts them."""
    return int(person.client.user_id.split(":")[0].removeprefix("@person"))


async def make_room(n: int, room: PlannedRoom, people: list[Client], bot_id: str) -> str:
    owner = people[room.members[0]].client
    response = await owner.room_create(
        name=f"{room.kind} {n}", is_direct=room.kind == "dm", initial_state=[MEGOLM],
        invite=[bot_id, *(people[i].client.user_id for i in room.members[1:])])
    if not isinstance(response, RoomCreateResponse):
        raise RuntimeError(f"creating room {n} failed: {response}")
    for i in room.members[1:]:
        joined = await people[i].client.join(response.room_id)
        if not isinstance(joined, JoinResponse):
            raise RuntimeError(f"joining room {n} failed: {joined}")
    if n % 100 == 0:
        log(f"  room {n} made")
    return response.room_id


async def wait_for_joins(synapse: Synapse, user_id: str, room_ids: list[str],
                         timeout: float) -> None:  # noqa: ASYNC109
    wanted = set(room_ids)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 2) + 1):
        missing = wanted - set(await synapse.joined_rooms(user_id))
        if not missing:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    raise RuntimeError(f"{user_id} has not joined {len(missing)} of {len(wanted)} rooms")


def history(room: PlannedRoom, n: int, count: int) -> list[str]:
    """`count` messages; the last is a command in a pod or a direct chat, as in daily use."""
    lines = [CHATTER[(n + i) % len(CHATTER)] for i in range(count)]
    if room.kind == "pod" and lines:
        lines[-1] = f"!offer ladder to lend, room {n}" if n % 2 else f"!need groceries, room {n}"
    elif room.kind == "dm" and lines:
        lines[-1] = "!help"
    return lines


async def write_history(plan: list[PlannedRoom], room_ids: list[str], people: list[Client],
                        args: argparse.Namespace, bot: BotProcess) -> None:
    """Each room's creator writes its history; in rounds of senders, between which everyone
    syncs and tops up their one-time keys (nio keeps 50; each new Olm session takes one)."""
    owned: dict[int, list[int]] = {}
    for n, room in enumerate(plan):
        owned.setdefault(room.members[0], []).append(n)
    senders = sorted(owned)

    async def write(person: int) -> None:
        for n in owned[person]:
            for text in history(plan[n], n, args.history):
                await people[person].send(room_ids[n], text)

    for first in range(0, len(senders), SENDERS_PER_ROUND):
        batch = senders[first:first + SENDERS_PER_ROUND]
        await bounded(args.concurrency, [lambda p=p: write(p) for p in batch])
        await bounded(args.concurrency, [lambda c=c: c.sync() for c in people])
        log(f"  history: {first + len(batch)} of {len(senders)} writers done")
    waited = await settle(bot.pid)
    log(f"  the bot caught up with the history in {waited:.0f} s")


async def build(synapse: Synapse, work: Path, args: argparse.Namespace, bot: BotProcess,
                people: list[Client]) -> dict[str, Any]:
    started = time.monotonic()
    await bot.start()
    log(f"registering {args.people} people, each with a device")
    sessions = await bounded(args.concurrency, [
        lambda i=i: open_person(synapse, f"person{i}", work / "people" / f"person{i}", None, people)
        for i in range(args.people)])
    people.sort(key=person_number)
    plan = plan_rooms(args.rooms, args.people, args.seed)
    log(f"making {len(plan)} rooms ({sum(r.kind == 'pod' for r in plan)} pods, "
        f"{sum(r.kind == 'network' for r in plan)} network rooms, "
        f"{sum(r.kind == 'dm' for r in plan)} direct chats)")
    room_ids = await bounded(args.concurrency, [
        lambda n=n, r=r: make_room(n, r, people, bot.user_id) for n, r in enumerate(plan)])
    await wait_for_joins(synapse, bot.user_id, room_ids, timeout=120 + len(room_ids))
    log("the bot joined every room; the people sync")
    await bounded(args.concurrency, [lambda c=c: c.sync() for c in people])
    log(f"writing {args.history} messages of history per room")
    await write_history(plan, room_ids, people, args, bot)
    manifest = {
        "built": {key: getattr(args, key) for key in BUILD_PARAMETERS},
        "setup_seconds": time.monotonic() - started,
        "bot": bot.localpart,
        "people": sessions,
        "rooms": [{"room_id": room_id, "kind": room.kind, "members": room.members}
                  for room_id, room in zip(room_ids, plan, strict=True)],
    }
    save_manifest(work, manifest)
    log(f"set-up took {manifest['setup_seconds']:.0f} s")
    return manifest


def save_manifest(work: Path, manifest: dict[str, Any]) -> None:
    # It holds the people's access tokens on this throwaway local server: readable by us only.
    path = work / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    path.chmod(0o600)


def load_manifest(work: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    path = work / MANIFEST
    if not path.exists():
        children = {child.name for child in work.iterdir()}
        if children - BUILD_PARTS:
            raise SystemExit(f"{work} holds other files than a build of this bench's: "
                             "give --workdir an empty or new directory")
        if children:
            # An unfinished build (interrupted): its half-made rooms are no use; start again.
            log(f"{work} holds an unfinished build; removing it")
            for name in children:
                shutil.rmtree(work / name)
        return None
    manifest = json.loads(path.read_text())
    wanted = {key: getattr(args, key) for key in BUILD_PARAMETERS}
    if manifest["built"] != wanted:
        raise SystemExit(f"{work} was built with {manifest['built']}, not {wanted}: "
                         "use another --workdir, or the same parameters")
    return manifest


# ---- the measurements -------------------------------------------------------------------------


def sample_cpu(pid: int) -> tuple[float, float]:
    return cpu_seconds(pid), time.monotonic()


async def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    cpu, wall = sample_cpu(pid)
    await asyncio.sleep(seconds)
    cpu_after, wall_after = sample_cpu(pid)
    return {"idle_seconds": wall_after - wall,
            "idle_cpu_percent": 100 * (cpu_after - cpu) / (wall_after - wall)}


async def restart(bot: BotProcess, sender: Client, listener: Client,
                  room_id: str) -> dict[str, float]:
    """Stop the bot, start it again and send a command at once: seconds to its first sync and
    to the reply, from starting the process."""
    stopping = time.monotonic()
    await bot.stop()
    stopped = time.monotonic()
    await bot.launch()
    started = time.monotonic()
    event_id, _ = await sender.send(room_id, "!need groceries after a restart")
    first_sync = None
    for _ in range(1200):  # 0.1 s steps: two minutes at most
        if first_sync is None and READY["bot"] in (bot.work / "out.log").read_text(errors="replace"):
            first_sync = time.monotonic() - started
        if event_id in listener.replies:
            break
        await asyncio.sleep(0.1)
    if event_id not in listener.replies:
        raise RuntimeError("the command sent after the restart was not answered in 2 minutes")
    return {"stop_seconds": stopped - stopping,
            "restart_to_first_sync_s": first_sync if first_sync is not None else float("nan"),
            "restart_to_reply_s": listener.replies[event_id] - started}


async def warm_up(room_id: str, senders: list[Client], listener: Client, label: str) -> None:
    """One answered command from each sender: room keys shared both ways before timing."""
    warmup = [(await c.send(room_id, f"!need groceries warm-up {label} {i}"))[0]
              for i, c in enumerate(senders)]
    await wait_all(listener, warmup, 120)
    if not all(e in listener.replies for e in warmup):
        raise RuntimeError(f"{label}: warm-up commands unanswered")


async def busy_room(room_id: str, senders: list[Client], listener: Client, rate: float,
                    seconds: float, label: str) -> list[tuple[str, float]]:
    """Several people send commands, paced: each command's event id and when its send began
    (time.monotonic())."""
    total = int(rate * seconds)
    started = time.monotonic()
    sends = []
    for i in range(total):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        c = senders[i % len(senders)]
        text = f"!offer ladder {label} {i}" if i % 2 else f"!need groceries {label} {i}"
        sends.append(asyncio.create_task(c.send(room_id, text)))
    sent = [await task for task in sends]
    await wait_all(listener, [e for e, _ in sent], 120)
    return sent


def latencies_ms(sent: list[tuple[str, float]], listener: Client) -> list[float]:
    """From each send to its reply at the listener, for the commands answered."""
    return [(listener.replies[e] - t) * 1000 for e, t in sent if e in listener.replies]


def stages(sent: list[tuple[str, float]], listener: Client, bot_db: Path, homeserver_db: Path,
           wall_offset: float) -> dict[str, float]:
    """Each stage's median (ms) over the answered commands: send → the command at the homeserver
    (its origin_server_ts) → the bot handling it (its inbox's handled_at) → the reply at the
    homeserver → the listener holding it; and the bot's send of the reply returning (the
    outbox's sent_at). `wall_offset` turns time.monotonic() into time.time()."""
    def ms(text: str) -> float:
        return datetime.fromisoformat(text).timestamp() * 1000

    split: dict[str, list[float]] = {}
    with (sqlite3.connect(f"file:{bot_db}?mode=ro", uri=True) as bot,
          sqlite3.connect(f"file:{homeserver_db}?mode=ro", uri=True) as server):
        for event_id, started in sent:
            if event_id not in listener.replies:
                continue
            row = bot.execute("SELECT i.handled_at, o.sent_at, o.event_id FROM inbox i JOIN outbox o "
                              "ON o.reply_to = i.event_id WHERE i.event_id = ?", (event_id,)).fetchone()
            if row is None or row[1] is None:
                continue
            handled, sent_at, reply = row
            origin = dict(server.execute(
                "SELECT event_id, origin_server_ts FROM events WHERE event_id IN (?, ?)",
                (event_id, reply)).fetchall())
            steps = {"send_to_homeserver": origin[event_id] - (started + wall_offset) * 1000,
                     "homeserver_to_bot_handling": ms(handled) - origin[event_id],
                     "handling_to_reply_at_homeserver": origin[reply] - ms(handled),
                     "reply_at_homeserver_to_listener":
                         (listener.replies[event_id] + wall_offset) * 1000 - origin[reply],
                     "reply_at_homeserver_to_bot_send_returned": ms(sent_at) - origin[reply]}
            for name, value in steps.items():
                split.setdefault(name, []).append(value)
    return {f"{name}_p50_ms": percentile(values, 0.5) for name, values in split.items()}


def latency_figures(sent: int, latencies: list[float]) -> dict[str, float]:
    return {"commands": sent, "lost": sent - len(latencies),
            "latency_p50_ms": percentile(latencies, 0.5),
            "latency_p95_ms": percentile(latencies, 0.95),
            "latency_mean_ms": statistics.fmean(latencies) if latencies else float("nan")}


async def one_room_bot(synapse: Synapse, work: Path, manifest: dict[str, Any],
                       people: list[Client], busy: dict[str, Any],
                       listener: Client) -> tuple[BotProcess, str]:
    """A second bot in one room only, with the busy room's people (made once per work dir)."""
    bot = BotProcess(synapse, "one-room-bench", work / "one-room")
    await bot.start()
    room_id = manifest.get("one_room")
    if room_id is None:
        members = busy["members"]
        plan = PlannedRoom("pod", members)
        room_id = await make_room(0, plan, people, bot.user_id)
        await wait_for_joins(synapse, bot.user_id, [room_id], timeout=60)
        manifest["one_room"] = room_id
        save_manifest(work, manifest)
    # The listener's own loop keeps it in sync; two syncs at once on one client would race.
    await bounded(8, [lambda i=i: people[i].sync() for i in busy["members"]
                      if people[i] is not listener])
    return bot, room_id


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="mab-manyrooms-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(work, args)
    synapse = Synapse(work / "synapse", synapse_python())
    await synapse.start()
    people: list[Client] = []  # filled as they log in, so that a failed set-up closes them too
    bot = BotProcess(synapse, "manyrooms-bench", work / "bot")
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args),
                              "load_average_at_start": os.getloadavg()}
    wall_offset = time.time() - time.monotonic()
    try:
        if manifest is None:
            manifest = await build(synapse, work, args, bot, people)
        else:
            log(f"reusing the build in {work} (set-up took {manifest['setup_seconds']:.0f} s then)")
            await bounded(args.concurrency, [
                lambda i=i, s=s: open_person(synapse, f"person{i}", work / "people" / f"person{i}",
                                             s, people)
                for i, s in enumerate(manifest["people"])])
            people.sort(key=person_number)
            await bot.start()
        report["setup_seconds"] = manifest["setup_seconds"]
        busy = manifest["rooms"][0]
        senders = [people[i] for i in busy["members"][:args.busy_senders]]
        listener = people[busy["members"][-1]]
        log("the people in the busy room sync")
        await bounded(args.concurrency, [lambda i=i: people[i].sync() for i in busy["members"]])
        listener.listen(bot.user_id, synapse.user_id("one-room-bench"))

        if args.only != "busy":
            log("restart: stop the bot, start it, send a command at once")
            report["restart"] = await restart(bot, senders[0], listener, busy["room_id"])
            log(f"  {report['restart']}")
            log(f"settling, then {args.idle_seconds:.0f} s idle")
        report["settle_seconds"] = await settle(bot.pid)
        report["many_rooms_memory"] = memory_mb(bot.pid)
        if args.only != "busy":
            report["idle"] = await idle_cpu(bot.pid, args.idle_seconds)
            log(f"  {report['many_rooms_memory']} {report['idle']}")
        log("starting a second bot, in the busy room's people's one room only")
        single, single_room = await one_room_bot(synapse, work, manifest, people, busy, listener)
        try:
            await settle(single.pid)
            report["one_room_memory"] = memory_mb(single.pid)
            await warm_up(busy["room_id"], senders, listener, "many")
            await warm_up(single_room, senders, listener, "one")
            report["load_average_before_busy"] = os.getloadavg()
            # Both bots run throughout, and the rounds alternate: a change in the machine's load
            # (other work on these two shared cores) falls on both alike. An idle bot in a room
            # nobody writes in costs nothing but its long-poll.
            rooms = {"many_rooms_busy": busy["room_id"], "one_room_busy": single_room}
            sent: dict[str, list[tuple[str, float]]] = {key: [] for key in rooms}
            for round_number in range(args.rounds):
                for key, room_id in rooms.items():
                    log(f"busy room, round {round_number + 1} of {args.rounds}: {key}, "
                        f"{args.busy_senders} people, {args.busy_rate:g} commands/s, "
                        f"{args.busy_seconds / args.rounds:.0f} s")
                    sent[key] += await busy_room(room_id, senders, listener, args.busy_rate,
                                                 args.busy_seconds / args.rounds, key)
            databases = {"many_rooms_busy": bot.work, "one_room_busy": single.work}
            for key in rooms:
                report[key] = latency_figures(len(sent[key]), latencies_ms(sent[key], listener))
                report[key]["stages"] = stages(sent[key], listener,
                                               databases[key] / "mutual-aid-bot.db",
                                               synapse.workdir / "homeserver.db", wall_offset)
                log(f"  {key}: {report[key]}")
            report["many_rooms_memory_after_busy"] = memory_mb(bot.pid)
        finally:
            await single.stop()
    finally:
        for c in people:
            await c.close()
        await bot.stop()
        await synapse.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    report["load_average_at_end"] = os.getloadavg()
    ratio = report["many_rooms_busy"]["latency_p50_ms"] / report["one_room_busy"]["latency_p50_ms"]
    report["busy_latency_ratio_p50"] = ratio
    report["targets_met"] = {
        "rss_le_150_mb": report["many_rooms_memory"]["rss_mb"] <= TARGETS["rss_mb"],
        "busy_latency_ratio_le_1.10": ratio <= TARGETS["busy_latency_ratio"],
        "lost_eq_0": report["many_rooms_busy"]["lost"] == 0 and report["one_room_busy"]["lost"] == 0,
    }
    if args.only != "busy":
        report["targets_met"] |= {
            "idle_cpu_le_1pct": report["idle"]["idle_cpu_percent"] <= TARGETS["idle_cpu_percent"],
            "restart_to_reply_le_10_s":
                report["restart"]["restart_to_reply_s"] <= TARGETS["restart_to_reply_s"],
        }
    return report


def print_table(report: dict[str, Any]) -> None:
    settings, many, one = report["settings"], report["many_rooms_busy"], report["one_room_busy"]
    rows = [
        ("resident memory, settled (MB)", f"{report['many_rooms_memory']['rss_mb']:.1f}"),
        ("peak resident memory (MB)", f"{report['many_rooms_memory_after_busy']['peak_rss_mb']:.1f}"),
        ("one-room bot, settled (MB)", f"{report['one_room_memory']['rss_mb']:.1f}"),
    ]
    if "restart" in report:
        rows += [
            ("CPU per idle minute (% of a core)", f"{report['idle']['idle_cpu_percent']:.3f}"),
            ("restart to first sync (s)", f"{report['restart']['restart_to_first_sync_s']:.2f}"),
            ("restart to first reply (s)", f"{report['restart']['restart_to_reply_s']:.2f}"),
        ]
    rows += [
        ("busy room p50 / p95 (ms)", f"{many['latency_p50_ms']:.0f} / {many['latency_p95_ms']:.0f}"),
        ("one room p50 / p95 (ms)", f"{one['latency_p50_ms']:.0f} / {one['latency_p95_ms']:.0f}"),
        ("busy / one room (p50)", f"{report['busy_latency_ratio_p50']:.2f}"),
        ("commands lost (busy, one room)", f"{many['lost']}, {one['lost']}"),
    ]
    rows += [(f"  {name.removesuffix('_p50_ms').replace('_', ' ')} p50 (ms)",
              f"{value:.0f} / {one['stages'][name]:.0f}") for name, value in many["stages"].items()]
    print(f"{settings['rooms']} rooms, {settings['people']} people, set-up {report['setup_seconds']:.0f} s")
    for label, value in rows:
        print(f"{label:36} {value:>12}")
    for name, ok in report["targets_met"].items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(f"load average: start {report['load_average_at_start']}, end {report['load_average_at_end']}")
    print(f"machine: {report['machine']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--history", type=int, default=3, help="messages per room at set-up")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--workdir", help="keep the built homeserver here; a re-run reuses it")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at set-up")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--busy-senders", type=int, default=6)
    parser.add_argument("--busy-rate", type=float, default=2.0, help="commands/s in the busy room")
    parser.add_argument("--busy-seconds", type=float, default=60.0,
                        help="per bot, split over the rounds")
    parser.add_argument("--rounds", type=int, default=4,
                        help="busy-room rounds per bot, alternating between the two bots")
    parser.add_argument("--only", choices=("all", "busy"), default="all",
                        help="busy: skip the restart and the idle minute")
    args = parser.parse_args()
    if args.people < args.busy_senders + 1 or args.people < 5:
        parser.error("--people must be at least 5 and more than --busy-senders")
    # nio warns of every device it has no Olm session with *before* claiming one: a line per
    # device and room at set-up, about what nio then does as it should.
    logging.getLogger("nio.crypto.log").setLevel(logging.ERROR)
    report = asyncio.run(run(args))
    print_table(report)
    write_results("manyrooms", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
