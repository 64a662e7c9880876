"""`!forgetme`, `!privacy`, and the retention sweep."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from bot import intake_rules as rules
from bot import retention
from bot.commands import command, flow
from bot.commands.intake import FLOW_FORGET, _text, say
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, render
from bot.models import PostStatus
from bot.storage import Storage, Transaction
from bot.store.privacy import ErasureRequest
from bot.turns import let_others_run

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
        "know which named you), what you wrote yourself in rooms until you delete it, copies "
        "in other people's devices, and a coordinator's block on your direct messages to me, if "
        "there is one, until it lapses.\n\n"
        "Reply yes to erase it all, or anything else to keep everything."
    )


_TABLE_WORDS = {
    "posts": "posts", "inbox": "received-command records", "outbox": "sent-message records",
    "dm_rooms": "direct-chat record", "intake": "unfinished conversation",
    "introductions": "introductions", "shift_signups": "shift sign-ups",
    "standin_requests": "stand-in requests", "noshows": "no-show marks",
    "sent_reminders": "reminder records", "relays": "relayed conversations",
    "items": "tool-library items", "loans": "loans", "timebank": "time-bank credits",
    "blocks": "blocks you made (your name on them)",
    "room_state": "room-state records (the homeserver keeps its own)",
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
    """Record the request; `carry_out_erasures` erases and answers, off the event loop.

    Erasure scans every table, so it must not run in this command's short transaction on the
    loop (bot/storage.py). The request is committed with the command: after a restart it is
    still carried out. The person's commands sent after the yes are not acted on.
    """
    await ctx.tx.privacy.end_intake(ctx.sender)
    await ctx.tx.privacy.request_erasure(ctx.sender, ctx.room_id, ctx.event_id, ctx.now)
    # Wakes the housekeeping task (and the scheduler: sign-ups and posts are about to go).
    ctx.schedule_changed = True


_ERASURES_PER_ROUND = 20  # requests carried out before housekeeping does its other work
_SLICE_SECONDS = 0.002  # the longest an erasure renders its notices before yielding
_ENQUEUE_SLICE = 100  # messages queued per statement batch (each one a trip to the thread)
_WALK_ROWS = 2000  # rowids per step of the walk: one short bulk transaction each


async def carry_out_erasures(storage: Storage, clock: Callable[[], datetime]) -> int:
    """Carry out waiting !forgetme requests (`_carry_out`); how many."""
    done = 0
    while done < _ERASURES_PER_ROUND:
        async with storage.transaction() as tx:  # one index lookup
            request = await tx.privacy.next_erasure()
        if request is None:
            break
        await _carry_out(storage, request, clock)
        done += 1
    return done


async def _carry_out(storage: Storage, request: ErasureRequest,
                     clock: Callable[[], datetime]) -> None:
    """One erasure, in steps of one short bulk transaction each, so that commands, deliveries
    and the scheduler have the storage between them (as one transaction it held the storage
    lock for seconds at 100,000 posts):

    1. the columns made for people (`forget_person`, the library), with the room notices and
       redactions that follow from them;
    2. the walk of every text column of every other table, `_WALK_ROWS` rowids a step;
    3. the summary, queued in the transaction that ends the request.

    The request stays recorded until the last step, and every step is safe to repeat, so an
    erasure cut short (a crash, a restart) is carried out again from the start and finishes:
    what was erased already is simply not found again. Only the summary's figures then count
    what the second run found.
    """
    person = request.person
    async with storage.transaction(bulk=True) as tx:
        now = clock()
        counts, withdrawn, reopened, redacting, out = await _erase_known_columns(tx, request, now)
        for start in range(0, len(out), _ENQUEUE_SLICE):
            await tx.delivery.enqueue(out[start:start + _ENQUEUE_SLICE], now)
    async with storage.transaction() as tx:  # the schema: a few small reads
        tables = await tx.privacy.tables_to_walk()
    for table, columns in sorted(tables.items()):
        async with storage.transaction() as tx:  # two index lookups
            low, high = await tx.privacy.rowid_span(table)
        for start in range(low, high + 1, _WALK_ROWS):
            async with storage.transaction(bulk=True) as tx:
                changed = await tx.privacy.forget_in_rows(person, table, columns, start,
                                                          start + _WALK_ROWS)
            if changed:
                counts[table] = counts.get(table, 0) + changed
            await let_others_run()  # let waiting commands take the lock between steps
    parts = [f"{n} {_TABLE_WORDS.get(table, table + ' rows')}" for table, n in sorted(counts.items())]
    erased = ", ".join(parts) if parts else "nothing (I had no records about you)"
    summary = (f"Done. I erased: {erased}. I withdrew {withdrawn} open post(s), reopened "
               f"{reopened} request(s) you were helping with, and am deleting "
               f"{redacting} of my messages that named you. Goodbye, and thank you.")
    async with storage.transaction(bulk=True) as tx:
        await tx.privacy.end_erasure(person)
        await tx.delivery.enqueue(
            [Outgoing(_text(summary), room_id=request.room_id, reply_to=request.reply_to)],
            clock())


async def _yield_after_slice(mark: float) -> float:
    """A message per post and per redaction adds up for a heavy user: every `_SLICE_SECONDS`,
    let other tasks run; returns the new mark."""
    if time.perf_counter() - mark <= _SLICE_SECONDS:
        return mark
    await let_others_run()
    return time.perf_counter()


async def _erase_known_columns(tx: Transaction, request: ErasureRequest, now: datetime,
                               ) -> tuple[dict[str, int], int, int, int, list[Outgoing]]:
    """Step 1 of `_carry_out`: (rows changed per table, posts withdrawn, requests reopened,
    messages to redact, the notices and redactions to queue)."""
    person = request.person
    withdrawn = await tx.posts.list(author=person, statuses=(PostStatus.OPEN, PostStatus.CLAIMED),
                                    limit=10_000)
    reopened = await tx.posts.claimed_by(person)
    to_redact = await tx.privacy.bot_messages_about(person)
    # Items and loans first: the walk would only blank the names.
    counts = await tx.library.forget(person, now)
    for table, n in (await tx.tree.forget(person)).items():
        counts[table] = counts.get(table, 0) + n
    for table, n in (await tx.privacy.forget_person(person, now)).items():
        counts[table] = counts.get(table, 0) + n
    # The walk takes the person out of the stored room state, which is then no longer whole.
    await tx.rooms.mark_incomplete()
    out = []
    mark = time.perf_counter()
    # Anonymous requests go without a word in the room: announced in the same breath as the
    # person's public posts, they would be linked to them.
    notes = [(post, "was withdrawn") for post in withdrawn if not post.anonymous]
    notes += [(post, "is open again") for post in reopened]
    for post, note in notes:
        if note == "is open again":
            # Open again as of now: the scheduler looks at posts changed since its last run, so
            # an expiry warning that came due while the post was claimed still goes out.
            await tx.posts.set_status(post, PostStatus.OPEN, now)
        out.append(Outgoing(render("**#{number}** {note}.", number=post.number, note=note),
                            room_id=post.room_id))
        mark = await _yield_after_slice(mark)
    for sent in dict.fromkeys(to_redact):
        out.append(Outgoing(render(""), room_id=sent.room_id, redacts=sent.event_id))
        mark = await _yield_after_slice(mark)
    return counts, len(withdrawn), len(reopened), len(to_redact), out


async def sweep(storage: Storage, config: BotConfig, now: datetime) -> int:
    """Retention: apply every rule of `bot.retention` (in bounded chunks); rows changed.

    Call from a periodic job (hourly is plenty).
    """
    return await retention.sweep(storage, config, now)


async def housekeeping(app: App, stop: asyncio.Event, interval: float | None = None) -> None:
    """Until `stop` is set: carry out !forgetme requests (woken as soon as one is committed), drop
    idle DM conversations (telling the person) and run retention. Call it once the app is ready.

    Every step is its own transaction and safe to repeat; requests left by a restart are
    carried out on the first round. It ends between steps, never by cancellation inside one: an
    erasure or a retention sweep runs on the database's thread, and a cancelled one could leave
    that thread's transaction open.
    """
    from bot.commands.intake import expire_idle

    timeout_s = app.config.privacy.intake_timeout_minutes * 60
    interval = interval or max(1.0, min(60.0, timeout_s / 4))
    last_sweep: datetime | None = None
    wake = asyncio.Event()
    app.schedule_listeners.append(wake.set)
    try:
        while not stop.is_set():
            wake.clear()
            now = app.clock()
            try:
                if await carry_out_erasures(app.storage, app.clock):
                    app.wake_outbox()
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
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
    finally:
        app.schedule_listeners.remove(wake.set)
