"""`!forgetme`, `!privacy`, and the retention sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from bot import intake_rules as rules
from bot import retention
from bot.commands import command, flow
from bot.commands.intake import FLOW_FORGET, say
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, render
from bot.models import PostStatus
from bot.storage import Storage

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

def confirm_text(config: BotConfig) -> str:
    """The question before !forgetme: what goes, and exactly what stays."""
    return (
        "This erases everything I store about you, in every pod: your requests and offers lose "
        "your name and details (open ones are withdrawn), requests you were helping with are "
        "reopened, you are taken off shifts, and our conversations are forgotten. I will also "
        "delete my own messages of the last "
        f"{config.privacy.retention_days:g} days that were sent to you, mentioned you, named you "
        "or answered you, where the server lets me. What stays: my older messages (I no longer "
        "know which named you), what you wrote yourself in rooms until you delete it, and copies "
        "in other people's devices.\n\n"
        "Reply yes to erase it all, or anything else to keep everything."
    )

_TABLE_WORDS = {
    "posts": "posts", "inbox": "received-command records", "outbox": "sent-message records",
    "dm_rooms": "direct-chat record", "intake": "unfinished conversation",
    "introductions": "introductions", "shift_signups": "shift sign-ups",
    "standin_requests": "stand-in requests", "noshows": "no-show marks",
    "sent_reminders": "reminder records", "relays": "relayed conversations",
    "items": "tool-library items", "loans": "loans", "timebank": "time-bank credits",
}



@command("forgetme", help="Erase everything the bot stores about you (send it in a DM).",
         examples=("forgetme",), group="Privacy")
async def forgetme(ctx: Context, rest: str) -> None:
    if not ctx.is_direct:
        await ctx.reply("Please send {command} to me in a direct message; I will ask you to "
                        "confirm there.", command=Code(f"{ctx.config.command_prefix}forgetme"))
        return
    await ctx.tx.privacy.save_intake(ctx.sender, ctx.room_id, FLOW_FORGET, {}, ctx.now)
    await say(ctx, confirm_text(ctx.config))


@command("confirm", help="Confirm it is still you after your Signal safety number changed "
         "(in a DM).", examples=("confirm",), group="Privacy")
async def confirm(ctx: Context, rest: str) -> None:
    if not ctx.is_direct:
        await ctx.reply("Send {command} to me in our direct chat.",
                        command=Code(f"{ctx.config.command_prefix}confirm"))
        return
    if not ctx.transport.identity_unconfirmed(ctx.sender):
        await ctx.reply("There is nothing to confirm: your safety number has not changed since "
                        "you last confirmed it.")
        return
    # The transport records it in a transaction of its own: after this command's commit.
    ctx.after_commit.append(lambda: ctx.transport.confirm_identity(ctx.sender))
    await ctx.reply("Thank you, confirmed. Private messages (your requests' details, "
                    "introductions) can reach you again.")


@flow(FLOW_FORGET)
async def forget_flow(ctx: Context, state: dict, text: str) -> None:
    if not rules.is_yes(text):
        await ctx.tx.privacy.end_intake(ctx.sender)
        await say(ctx, "OK, nothing was erased.")
        return
    await forget(ctx)


async def forget(ctx: Context) -> None:
    tx, person = ctx.tx, ctx.sender
    withdrawn = await tx.posts.list(author=person, statuses=(PostStatus.OPEN, PostStatus.CLAIMED),
                                    limit=10_000)
    reopened = await tx.posts.claimed_by(person)
    to_redact = await tx.privacy.bot_messages_about(person)
    # Items and loans first: the generic pass in forget_person would only blank the names.
    counts = await tx.library.forget(person, ctx.now)
    for table, n in (await tx.privacy.forget_person(person, ctx.now)).items():
        counts[table] = counts.get(table, 0) + n
    # Anonymous requests go without a word in the room: announced in the same breath as the
    # person's public posts, they would be linked to them.
    for post in withdrawn:
        if not post.anonymous:
            await ctx.send(post.room_id, "**#{number}** was withdrawn.", number=post.number)
    for post in reopened:
        await ctx.send(post.room_id, "**#{number}** is open again.", number=post.number)
    for sent in dict.fromkeys(to_redact):
        ctx.outgoing.append(Outgoing(render(""), room_id=sent.room_id, redacts=sent.event_id))
    parts = [f"{n} {_TABLE_WORDS.get(table, table + ' rows')}" for table, n in sorted(counts.items())]
    erased = ", ".join(parts) if parts else "nothing (I had no records about you)"
    await say(ctx, f"Done. I erased: {erased}. I withdrew {len(withdrawn)} open post(s), reopened "
              f"{len(reopened)} request(s) you were helping with, and am deleting "
              f"{len(to_redact)} of my messages that named you. Goodbye, and thank you.")


async def sweep(storage: Storage, config: BotConfig, now: datetime) -> int:
    """Retention: apply every rule of `bot.retention` (in bounded chunks); rows changed.

    Call from a periodic job (hourly is plenty).
    """
    return await retention.sweep(storage, config, now)


async def housekeeping(app: App, stop: asyncio.Event, interval: float | None = None) -> None:
    """Until `stop` is set: drop idle DM conversations (telling the person) and run retention.
    Call it once the app is ready.

    Runs beside the scheduler; both steps are single transactions and safe to repeat. It ends
    between steps, never by cancellation inside one: a retention sweep runs on the database's
    thread, and a cancelled one could leave that thread's transaction open.
    """
    from bot.commands.intake import expire_idle

    timeout_s = app.config.privacy.intake_timeout_minutes * 60
    interval = interval or max(1.0, min(60.0, timeout_s / 4))
    last_sweep: datetime | None = None
    while not stop.is_set():
        now = app.clock()
        try:
            dropped = await expire_idle(app.storage, app.config, now)
            if dropped:
                log.info("dropped %d idle private conversation(s)", dropped)
                app.wake_outbox()
            if last_sweep is None or now - last_sweep >= retention.SWEEP_INTERVAL:
                erased = await sweep(app.storage, app.config, now)
                last_sweep = now
                if erased:
                    log.info("retention: erased or deleted %d row(s) past their time", erased)
        except Exception:
            log.exception("privacy housekeeping failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
