"""`!status`: what is stuck, how far behind the bot is, which version, how long it has run."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from bot.commands import command, require_coordinator
from bot.context import Context
from bot.formatting import Mention, Rendered, join, render
from bot.store.actions import Action

_SHOWN = 10  # dead letters, failed steps


def bot_version() -> str:
    try:
        return version("mutual-aid-bot")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"))
             if n] or [f"{seconds} s"]
    return " ".join(parts[:2])


@command("status", help="For coordinators: messages the bot could not deliver here, how far "
         "behind it is, its version and uptime.", group="Settings")
async def status(ctx: Context, rest: str) -> None:
    if ctx.is_direct:
        await ctx.reply("Send !status in the pod room you coordinate.")
        return
    if not await require_coordinator(ctx, "see the bot's status"):
        return
    runtime = ctx.runtime
    lines = [render("**Bot status**"), render("Version: {version}", version=bot_version())]
    if runtime is not None:
        age = runtime.sync_age()
        lines.append(render("Up for {uptime}; last caught up with the server {ago}.",
                            uptime=fmt_duration(time.time() - runtime.started_at),
                            ago="never yet" if age < 0 else f"{fmt_duration(age)} ago"))
    waiting = await ctx.tx.delivery.count_waiting()
    lines.append(render("Messages waiting to be sent (all rooms): {n}", n=waiting))
    members = set(ctx.transport.members(ctx.room_id))
    dead = [letter for letter in await ctx.tx.delivery.dead_letters(limit=500)
            if letter.room_id == ctx.room_id
            or (letter.room_id is None and letter.destination.removeprefix("person:") in members)]
    failed = [step for step in await ctx.tx.actions.failed(limit=500)
              if step.params.get("pod_room") == ctx.room_id
              or (step.params.get("pod_room") is None
                  and set(step.params.get("invitees", ())) & members)]
    if not dead and not failed:
        lines.append(render("Nothing is stuck: every message for this room and its members "
                            "was delivered."))
    if failed:
        _listed(lines, render("**{n} room(s) could not be made** (given up):", n=len(failed)),
                [_failed_step_line(step) for step in failed])
    if dead:
        _listed(lines, render("**{n} message(s) could not be delivered** (never retried):",
                              n=len(dead)), [_dead_line(letter) for letter in dead])
    await ctx.reply(join(lines))


def _listed(lines: list[Rendered], heading: Rendered, items: list[Rendered]) -> None:
    lines.append(heading)
    lines.extend(items[:_SHOWN])
    if len(items) > _SHOWN:
        lines.append(render("… and {n} older.", n=len(items) - _SHOWN))


def _failed_step_line(step: Action) -> Rendered:
    when = step.updated_at.strftime("%Y-%m-%d %H:%M UTC")
    if step.params.get("is_direct"):
        return render("• {when}: a direct chat with {person}: {reason}", when=when,
                      person=Mention(step.params["invitees"][0]), reason=step.error or "")
    return render("• {when}: {purpose}: {reason}", when=when, purpose=step.params["purpose"],
                  reason=step.error or "")


def _dead_line(letter) -> Rendered:
    when = letter.dead_at.strftime("%Y-%m-%d %H:%M UTC")
    if letter.room_id is None:
        return render("• {when}: a direct message to {person}: {reason}", when=when,
                      person=Mention(letter.destination.removeprefix("person:")),
                      reason=letter.reason)
    return render("• {when}: a message in this room: {reason}", when=when, reason=letter.reason)
