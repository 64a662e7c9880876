"""Records a pod can act on: the ledger at `!done`, `!report`, `!export csv`, the time bank.

A report reads every post of a period, which grows with the pod, so it is not made inside the
command's transaction on the event loop. The command stores a request (in its transaction, so it
is made exactly once, also across a restart); the `ReportRunner` then counts the rows in a bulk
transaction (SQLite on aiosqlite's thread), draws the chart in a separate process, and queues the
answer in a short transaction that also deletes the request.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TYPE_CHECKING

from bot import pods, reports, room_settings
from bot.commands import Arg, UsageError, command, intake, is_coordinator
from bot.context import Attachment, Context, Outgoing
from bot.formatting import Code, join, render
from bot.models import Post, PostKind
from bot.reports import ReportRows

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

SETTING_TIMEBANK = "timebank"
SETTING_REPORT_MINIMUM = "report_minimum"
MAX_HOURS = 24.0
_HOURS = re.compile(r"^(\d{1,2}(?:[.,]\d{1,2})?)\s*(h|hr|hrs|hour|hours)?$", re.IGNORECASE)

TIMEBANK = room_settings.register(room_settings.Setting(
    key=SETTING_TIMEBANK,
    help="Time bank: `!done <#id> 2h` credits the helper's hours; `!balance` shows your own (on/off).",
    default=lambda config: "off",
    validate=room_settings.validate_on_off,
    example="on",
))


def _validate_minimum(text: str) -> str:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise room_settings.SettingError("Use a whole number from 1 to 20.")
    return str(int(text))


REPORT_MINIMUM = room_settings.register(room_settings.Setting(
    key=SETTING_REPORT_MINIMUM,
    help="Reports and exports show counts below this only as \"fewer than N\" (1 to 20).",
    default=lambda config: "3",
    validate=_validate_minimum,
    example="5",
))


def parse_hours(text: str) -> float:
    """'2h', '1.5', '90 min' is not accepted: hours, at most a day, in quarter hours or finer."""
    match = _HOURS.match(text.strip())
    if match is None:
        raise UsageError("Give the hours like 2h or 1.5h.")
    hours = float(match.group(1).replace(",", "."))
    if not 0 < hours <= MAX_HOURS:
        raise UsageError(f"Hours must be more than 0 and at most {MAX_HOURS:g}.")
    return hours


def helper_of(post: Post) -> str | None:
    """Who gave the help: whoever claimed a need, or whoever made an offer."""
    return post.claimed_by if post.kind is PostKind.NEED else post.author or None


async def record_done(ctx: Context, post: Post, hours_text: str | None) -> str | None:
    """Write the ledger row for a fulfilled post and credit time-bank hours.

    Returns a sentence for the reply about the hours (None when there is nothing to say).
    """
    stored = await ctx.tx.settings.room(post.room_id)
    timebank = room_settings.is_on(room_settings.value(SETTING_TIMEBANK, stored, ctx.config))
    hours = parse_hours(hours_text) if hours_text else None
    if hours is not None and not timebank:
        raise UsageError("This pod's time bank is off, so hours are not counted. A coordinator "
                         f"can turn it on with {ctx.config.command_prefix}settings timebank on.")
    helper = helper_of(post)
    if hours is not None and not helper:
        raise UsageError("Nobody claimed it, so there is nobody to credit the hours to.")
    ledger_id = await ctx.tx.records.record_exchange(post, ctx.now, hours)
    if hours is None or ledger_id is None or helper is None:
        return None
    await ctx.tx.records.credit(post.room_id, helper, hours, ledger_id, ctx.now)
    await ctx.dm(helper, "{hours} hours for **#{number}** were added to your time bank. "
                 "Thank you! Send {balance} to see your own total.", hours=f"{hours:g}",
                 number=post.number, balance=Code(f"{ctx.config.command_prefix}balance"))
    return f"{hours:g} hours credited to the helper."


# ---- !report and !export ------------------------------------------------------------------------


@command("report", help="What this pod's records show: needs, offers and fulfilled by "
         "category and zone, time to match, oldest unmet needs, shifts, stand-ins, as a chart "
         "and a table.", args=(Arg("week|month|quarter|year", optional=True),),
         examples=("report", "report week", "report quarter"), group="Records")
async def report(ctx: Context, rest: str) -> None:
    if ctx.is_direct:
        await ctx.reply("Send {cmd} in the pod room; coordinators can get the numbers here as a "
                        "file with {export}.", cmd=Code(f"{ctx.config.command_prefix}report"),
                        export=Code(f"{ctx.config.command_prefix}export csv"))
        return
    period = _period(rest)
    # In a network room each bot answers for its own pods there, one report a pod: the pods'
    # masked numbers, never rows about people.
    linked = [link.pod_room for link in await ctx.tx.network.pods_in(ctx.room_id)]
    for pod_room in linked or [ctx.room_id]:
        await ctx.tx.records.request_report("report", pod_room, period, ctx.room_id,
                                             ctx.event_id, ctx.now)
    _kick(ctx)


def _period(word: str) -> str:
    try:
        return reports.parse_period(word.split()[0] if word.split() else "")
    except reports.PeriodError as exc:
        raise UsageError(str(exc)) from None


def _kick(ctx: Context) -> None:
    if ctx.runtime is not None:
        runner_for(ctx.runtime).kick()  # type: ignore[arg-type]


@command("export", help="Coordinators, in a DM with me: this pod's report numbers as a CSV file.",
         args=(Arg("csv"), Arg("period", optional=True), Arg("pod", optional=True)),
         examples=("export csv", "export csv quarter", "export csv month 2"), group="Records")
async def export(ctx: Context, rest: str) -> None:
    p = ctx.config.command_prefix
    words = rest.split()
    if not words or words[0].lower() != "csv":
        raise UsageError("The one format is csv.")
    if not ctx.is_direct:
        await ctx.reply("Exports are sent only in a direct message: send {cmd} to me there.",
                        cmd=Code(f"{p}export csv"))
        return
    words = words[1:]
    period = reports.DEFAULT_PERIOD
    if words and words[0].lower() in reports.PERIODS:
        period, words = words[0].lower(), words[1:]
    pods = [(room, name) for room, name in await intake.pods_for(ctx)
            if is_coordinator(ctx, room_id=room)]
    if not pods:
        await ctx.reply("Only a pod's coordinators can export its numbers, and you are not a "
                        "coordinator (power level {level} or more) in any pod room I share with "
                        "you.", level=ctx.config.bot.coordinator_power_level)
        return
    chosen = _choose(pods, " ".join(words)) if words else (pods[0] if len(pods) == 1 else None)
    if chosen is None:
        lines = [render("Which pod? You coordinate several; add its number:")]
        lines += [render("- **{n}** {name}: {cmd}", n=i, name=name,
                         cmd=Code(f"{p}export csv {period} {i}"))
                  for i, (_, name) in enumerate(pods, 1)]
        await ctx.reply(join(lines))
        return
    await ctx.tx.records.request_report("csv", chosen[0], period, ctx.room_id, ctx.event_id,
                                         ctx.now)
    _kick(ctx)


def _choose(pods: list[tuple[str, str]], answer: str) -> tuple[str, str] | None:
    answer = answer.strip().lower()
    if answer.isdigit() and 1 <= int(answer) <= len(pods):
        return pods[int(answer) - 1]
    return next((pod for pod in pods if answer in (pod[0].lower(), pod[1].lower())), None)


# ---- !balance -----------------------------------------------------------------------------------


@command("balance", help="Your own time-bank hours (answered privately).", examples=("balance",),
         group="Records")
async def balance(ctx: Context, rest: str) -> None:
    hours = await ctx.tx.records.balance(ctx.sender)
    names = dict(ctx.transport.rooms_with(ctx.sender))
    if hours:
        lines = [render("**Your time bank**: {total} hours given.",
                        total=f"{sum(hours.values()):g}")]
        lines += [render("- {pod}: {hours} hours", pod=names.get(room, room), hours=f"{h:g}")
                  for room, h in hours.items()]
        answer = join(lines)
    else:
        answer = render("No hours in your time bank yet. When a pod's time bank is on, "
                        "{example} credits the helper.",
                        example=Code(f"{ctx.config.command_prefix}done 14 2h"))
    if ctx.is_direct:
        await ctx.reply(answer)
        return
    # Only the person sees their own hours: never in the pod room.
    await ctx.dm(ctx.sender, answer)
    await ctx.reply("I sent you your balance in a direct message.")


# ---- making reports, off the loop ---------------------------------------------------------------


_POOL: ProcessPoolExecutor | None = None


def _render_pool() -> ProcessPoolExecutor:
    """One process that draws charts, started on first use and kept.

    Not a thread: matplotlib holds the GIL through long stretches of C (text layout, rasterising,
    PNG encoding), which stalled the event loop by 30-80 ms per chart when drawn in a thread
    (bench/report.py). "spawn", because forking a process that runs threads is unsafe.
    """
    global _POOL
    if _POOL is None:
        # Niced: drawing is background work and must not take a core from the event loop.
        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=reports.start_drawing_process, initargs=(10,))
    return _POOL


async def draw_chart(report: reports.Report, minimum: int) -> bytes:
    global _POOL
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _render_pool(), reports.render_chart, report, minimum)
    except BrokenProcessPool:
        _POOL = None  # the drawing process died: a new one is started for the next chart
        raise


async def build_answer(kind: str, rows: ReportRows, period: str, pod_room: str, now: datetime,
                       minimum: int, timebank: bool, reply_room: str, reply_to: str,
                       pod_name: str | None = None) -> Outgoing:
    """The answer to a request. Counting is small (the rows are already grouped); the chart is
    drawn in another process. `pod_name` heads a report answered outside its pod (a network
    room, where several pods answer)."""
    report = reports.aggregate(rows, period, now)
    lines = reports.text_lines(report, minimum, timebank)
    if pod_name is not None:
        lines.insert(0, f"{pod_name} pod")
    caption = join([render("{line}", line=line) for line in lines])
    if kind == "csv":
        data = reports.csv_bytes(report, pod_room, minimum)
        name = f"pod-report-{period}-{now:%Y-%m-%d}.csv"
        return Outgoing(caption, room_id=reply_room, reply_to=reply_to,
                        attachment=Attachment(name, "text/csv", data))
    png = await draw_chart(report, minimum)
    width, height = reports.CHART_SIZE_PX
    return Outgoing(caption, room_id=reply_room, reply_to=reply_to,
                    attachment=Attachment(f"pod-report-{period}.png", "image/png", png,
                                          width, height))


class ReportRunner:
    """Makes the reports that commands asked for, one at a time, in request order."""

    MAX_PER_RUN = 50  # requests handled before yielding the task (a new kick goes on)

    def __init__(self, app: App, deliver: bool = False) -> None:
        self.app = app
        self._deliver = deliver
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def start(self) -> Future[None]:
        """At the bot's start: make reports a restart left waiting, and start the drawing process
        now (its start stalls the loop for some tens of ms) rather than at the first report."""
        self.kick()
        return _render_pool().submit(reports.prepare_drawing)

    def kick(self) -> None:
        """Make any waiting reports; safe to call often (also at start, for ones a restart left)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reports")

    async def idle(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        for _ in range(self.MAX_PER_RUN):
            self._again = False
            try:
                if not await self.make_next():
                    if not self._again:
                        return
            except Exception:
                log.exception("making a report failed; it is dropped with an apology")
                await self._apologise()

    async def make_next(self) -> bool:
        """Make the oldest waiting report; False if none was waiting."""
        app = self.app
        now = app.clock()
        async with app.storage.transaction(bulk=True) as tx:
            request = await tx.records.next_report_request()
            if request is None:
                return False
            stored = await tx.settings.room(request.pod_room)
            rows = await tx.records.report_rows(
                request.pod_room, reports.period_start(request.period, now), now)
        minimum = int(room_settings.value(SETTING_REPORT_MINIMUM, stored, app.config))
        timebank = room_settings.is_on(room_settings.value(SETTING_TIMEBANK, stored, app.config))
        pod_name = ((pods.profile(request.pod_room, stored, app.config).name or "An unnamed")
                    if request.reply_room != request.pod_room and request.kind == "report" else None)
        out = await build_answer(
            request.kind, rows, request.period, request.pod_room, now, minimum,
            timebank, request.reply_room, request.reply_to, pod_name)
        async with app.storage.transaction() as tx:
            if await tx.records.finish_report_request(request.id):
                await tx.delivery.enqueue([out], now)
        await self._sent()
        return True

    async def _apologise(self) -> None:
        from bot.app import SORRY

        now = self.app.clock()
        async with self.app.storage.transaction() as tx:
            request = await tx.records.next_report_request()
            if request is not None and await tx.records.finish_report_request(request.id):
                await tx.delivery.enqueue([Outgoing(render(SORRY), room_id=request.reply_room,
                                                    reply_to=request.reply_to)], now)
        await self._sent()

    async def _sent(self) -> None:
        self.app.wake_outbox()
        if self._deliver:
            await self.app.deliver_pending()


_RUNNERS: weakref.WeakKeyDictionary[App, ReportRunner] = weakref.WeakKeyDictionary()


def runner_for(app: App, deliver: bool = False) -> ReportRunner:
    """The app's one report runner (made on first use)."""
    runner = _RUNNERS.get(app)
    if runner is None:
        runner = _RUNNERS[app] = ReportRunner(app, deliver)
    return runner
