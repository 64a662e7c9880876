"""The phone tree: `!tree join/leave/backup`, `!alert`, `!alert status`, `!alert close`, and a
member's confirmation (`ok` in their DM, or 👍 on the alert).

The handlers only write rows; the scheduler makes the calls, escalates silence and reports to the
caller (bot/scheduler.py, rules in bot/phone_tree.py), each exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot import phone_tree, room_settings
from bot.commands import Arg, UsageError, command, direct_hook, is_coordinator, require_coordinator
from bot.context import Context
from bot.formatting import Code, Rendered, join, render, shorten
from bot.messages import Reaction
from bot.store.tree import Alert, Call

if TYPE_CHECKING:
    from bot.config import BotConfig
    from bot.storage import Transaction

def _validated_wait(text: str) -> str:
    try:
        return phone_tree.format_wait(phone_tree.parse_wait(text))
    except phone_tree.TreeError as exc:
        raise room_settings.SettingError(str(exc)) from None


ALERT_WAIT = room_settings.register(room_settings.Setting(
    key="alert_wait",
    help="How long a phone-tree member may stay silent before their backup, then the caller, "
         "is told (minutes, or seconds like 30s).",
    default=lambda config: phone_tree.format_wait(phone_tree.DEFAULT_WAIT),
    validate=_validated_wait,
    example="15",
))


async def _room_value(tx: Transaction, config: BotConfig, room_id: str, key: str) -> str:
    return room_settings.value(key, await tx.settings.room(room_id), config)


async def _pod_only(ctx: Context) -> bool:
    if ctx.is_direct:
        await ctx.reply("A phone tree belongs to a pod: send that in the pod room.")
        return False
    return True


@command("tree", help="Join or leave this pod's phone tree (optionally with the hours you may be "
         "called), or name a backup to be told when you do not answer.",
         args=(Arg("join [hours] | leave | backup @person", optional=True, many=True),),
         examples=("tree join 8-22", "tree join", "tree backup @sam:example.org", "tree leave"),
         group="Phone tree")
async def tree(ctx: Context, rest: str) -> None:
    if not await _pod_only(ctx):
        return
    word, _, arg = rest.strip().partition(" ")
    word, arg, p = word.lower(), arg.strip(), ctx.config.command_prefix
    if word == "join":
        try:
            hours = phone_tree.parse_hours(arg) if arg else None
        except phone_tree.TreeError as exc:
            raise UsageError(str(exc)) from None
        new = await ctx.tx.tree.join(ctx.room_id, ctx.sender, str(hours) if hours else None,
                                     ctx.now)
        zone = ZoneInfo(await _room_value(ctx.tx, ctx.config, ctx.room_id, "timezone"))
        when = (f"between {hours} ({zone.key}); urgent ones at any hour" if hours
                else "at any hour")
        await ctx.reply("{state} the phone tree: an alert reaches you by direct message {when}. "
                        "Confirm with {ok} or a {thumb}. Name someone to be told if you do not "
                        "answer: {backup}",
                        state="You are on" if new else "Updated: you are on", when=when,
                        ok=Code("ok"), thumb=phone_tree.CONFIRM,
                        backup=Code(f"{p}tree backup @person"))
    elif word == "leave":
        left = await ctx.tx.tree.leave(ctx.room_id, ctx.sender)
        await ctx.reply("You have left the phone tree." if left
                        else "You are not on this pod's phone tree.")
    elif word == "backup":
        await _backup(ctx, arg)
    elif not word:
        await _show(ctx)
    else:
        raise UsageError("Say join, leave or backup.")


async def _backup(ctx: Context, arg: str) -> None:
    if await ctx.tx.tree.member(ctx.room_id, ctx.sender) is None:
        await ctx.reply("Join the phone tree first: {join}",
                        join=Code(f"{ctx.config.command_prefix}tree join"))
        return
    if arg.lower() in ("none", "nobody", "off"):
        await ctx.tx.tree.set_backup(ctx.room_id, ctx.sender, None)
        await ctx.reply("You have no backup now: your silence goes straight to the caller.")
        return
    backup = arg.split()[0] if arg else ""
    if not backup.startswith("@") or backup == ctx.sender:
        raise UsageError("Name one other member, like @sam:example.org (or none).")
    if backup not in ctx.transport.members(ctx.room_id):
        await ctx.reply("{backup} is not a member of this room; your backup must be one.",
                        backup=backup)
        return
    await ctx.tx.tree.set_backup(ctx.room_id, ctx.sender, backup)
    await ctx.reply("If you do not confirm an alert in time, {backup} is asked to reach you "
                    "first, then the caller.", backup=backup)


async def _show(ctx: Context) -> None:
    members = await ctx.tx.tree.members(ctx.room_id)
    me = next((m for m in members if m.person == ctx.sender), None)
    line = render("{n} people are on this pod's phone tree.", n=len(members))
    if me is None:
        mine = render("You are not on it: {join}", join=Code(f"{ctx.config.command_prefix}tree join"))
    else:
        mine = render("You are on it, called {hours}; backup: {backup}.",
                      hours=f"between {me.hours}" if me.hours else "at any hour",
                      backup=me.backup or "none")
    await ctx.reply(join([line, mine]))


@command("alert", help="Coordinators: call everyone on the phone tree by direct message "
         "(urgent: at any hour); network: also forward it to the pods of this pod's networks, "
         "whose bots call their own trees; status shows who confirmed, close ends it.",
         args=(Arg("[urgent] [network] text | status | close", many=True),),
         examples=("alert Eviction at 14 Elm St at 8am, come if you can",
                   "alert urgent ICE reported on Main St",
                   "alert urgent network ICE reported on Main St", "alert status",
                   "alert close"),
         group="Phone tree")
async def alert(ctx: Context, rest: str) -> None:
    word = rest.split()[0].lower() if rest.split() else ""
    if word == "status":
        await _status(ctx)
        return
    if word == "close":
        await _close(ctx)
        return
    if not await _pod_only(ctx) or not await require_coordinator(ctx, "send a phone-tree alert"):
        return
    urgent, network, text = parse_alert(rest)
    if not text:
        raise UsageError("Say what the alert is.")
    if len(text) > phone_tree.MAX_ALERT:
        raise UsageError(f"Keep an alert under {phone_tree.MAX_ALERT} characters.")
    if network:
        # Imported here: forwarding builds on this module (it starts other pods' trees).
        from bot.commands.network import forward_alert
        await forward_alert(ctx, text, urgent)
        return
    started = await start_alert(ctx.tx, ctx.config, ctx.room_id, ctx.sender, text, urgent,
                                ctx.event_id, ctx.now)
    if started is None:
        await ctx.reply("Nobody else is on this pod's phone tree yet. Members join with {join}",
                        join=Code(f"{ctx.config.command_prefix}tree join"))
        return
    ctx.schedule_changed = True  # the scheduler makes the calls
    await ctx.reply(await started_text(ctx, *started))


def parse_alert(rest: str) -> tuple[bool, bool, str]:
    """(urgent, to the networks, text) of `!alert [urgent] [network] text`, the two words in
    either order."""
    words, flags = rest.split(), {"urgent": False, "network": False}
    while words and words[0].lower() in flags and not flags[words[0].lower()]:
        flags[words.pop(0).lower()] = True
    return flags["urgent"], flags["network"], " ".join(words)


async def started_text(ctx: Context, calls: int, held: int) -> Rendered:
    """What the caller is told once their pod's tree is started."""
    return render(
        "Calling {now} people on the phone tree by direct message now{held}. They confirm with "
        "{ok} or a {thumb}; silence after {wait} goes to their backup, then to you. I will tell "
        "you when everyone is reached. Who has confirmed: {status}",
        now=calls - held, ok=Code("ok"), thumb=phone_tree.CONFIRM,
        held=(f"; {held} outside their hours get it when those begin (send "
              f"{ctx.config.command_prefix}alert urgent … to call everyone now)" if held else ""),
        wait=phone_tree.fmt_span(await _wait(ctx.tx, ctx.config, ctx.room_id)),
        status=Code(f"{ctx.config.command_prefix}alert status"))


async def _wait(tx: Transaction, config: BotConfig, room_id: str) -> timedelta:
    return phone_tree.parse_wait(await _room_value(tx, config, room_id, "alert_wait"))


async def start_alert(tx: Transaction, config: BotConfig, room_id: str, caller: str | None,
                      text: str, urgent: bool, event_id: str, now: datetime,
                      origin: str | None = None,
                      skip: str | None = None) -> tuple[int, int] | None:
    """Record an alert to everyone on the room's tree but the caller, with the room's wait and
    each member's hours; (calls, how many wait for their hours), or None when nobody is on it.
    The scheduler then makes the calls once the transaction is committed and it is woken (a
    handler sets `ctx.schedule_changed`). An alert another pod forwarded through a network
    (bot/commands/network.py) names that pod as its `origin`, and has as its caller (who hears
    of silence and gets the reports) a coordinator of the receiving pod, or nobody: that
    coordinator did not send it, so is called like anyone on the tree; only `skip` (who
    forwarded it, from another pod of this bot) is not."""
    zone = ZoneInfo(await _room_value(tx, config, room_id, "timezone"))
    not_called = caller if origin is None else skip
    members = [m for m in await tx.tree.members(room_id) if m.person != not_called]
    if not members:
        return None
    calls = [(m.person, phone_tree.call_time(
        phone_tree.parse_hours(m.hours) if m.hours else None, now, zone, urgent))
        for m in members]
    wait = await _wait(tx, config, room_id)
    await tx.tree.add_alert(room_id, caller, text, urgent, int(wait.total_seconds()), event_id,
                            now, calls, origin)
    return len(calls), sum(at > now for _, at in calls)


async def _alert_for(ctx: Context) -> Alert | None:
    """The alert a caller or coordinator asks about: the room's newest (from a DM: theirs)."""
    if ctx.is_direct:
        return await ctx.tx.tree.latest_alert(caller=ctx.sender)
    return await ctx.tx.tree.latest_alert(room_id=ctx.room_id)


async def _may_see(ctx: Context, found: Alert | None, action: str) -> bool:
    """The caller and the pod's coordinators may; anyone else is told politely who can."""
    if found is None:
        await ctx.reply("You have not sent a phone-tree alert." if ctx.is_direct
                        else "There has been no phone-tree alert here yet.")
        return False
    if found.caller == ctx.sender or is_coordinator(ctx, room_id=found.room_id):
        return True
    await require_coordinator(ctx, action)
    return False


async def _status(ctx: Context) -> None:
    found = await _alert_for(ctx)
    if not await _may_see(ctx, found, "see a phone-tree alert's status"):
        return
    assert found is not None
    lines = status_lines(found, await ctx.tx.tree.calls(found.id))
    if ctx.is_direct:
        await ctx.reply(join(lines))
        return
    # Who answered and who did not is for the caller and coordinators, not the whole room.
    await ctx.dm(ctx.sender, join(lines))
    await ctx.reply("I have sent you the status privately.")


def status_lines(found: Alert, calls: list[Call]) -> list[Rendered]:
    confirmed = [c for c in calls if c.confirmed_at is not None]
    open_calls = [c for c in calls if c.confirmed_at is None]
    held = [c for c in open_calls if c.outbox_id is None]
    unreachable = [c for c in open_calls if c.dead_at is not None]
    on_way = [c for c in open_calls if c.outbox_id is not None and c.sent_at is None
              and c.dead_at is None]
    escalated = [c for c in open_calls if c.escalated > 0 and c not in unreachable]
    silent = [c for c in open_calls if c.sent_at is not None and c.escalated == 0]
    reached = [c.sent_at for c in calls if c.sent_at is not None]
    state = "closed" if found.closed_at else "open"
    lines = [render("**Phone tree alert** ({state}) from {caller}: {text}", state=state,
                    caller=phone_tree.sent_by(found.caller, found.origin) if found.origin
                    else found.caller or "someone", text=shorten(found.text, 80)),
             render("{confirmed} of {total} confirmed.", confirmed=len(confirmed),
                    total=len(calls))]
    if reached:
        lines.append(render("Reached so far: {n}, the last {took} after the alert.", n=len(reached),
                            took=phone_tree.fmt_took(max(reached) - found.created_at)))
    for label, group in (("Confirmed", confirmed), ("Silent", silent),
                         ("Escalated (silent; backup or you told)", escalated),
                         ("Could not be reached", unreachable), ("On the way", on_way),
                         ("Outside their hours (called when they begin)", held)):
        if group:
            lines.append(render("{label}: {people}", label=label,
                                people=", ".join(c.person for c in group)))
    return lines


async def _close(ctx: Context) -> None:
    found = await _alert_for(ctx)
    if not await _may_see(ctx, found, "close a phone-tree alert"):
        return
    assert found is not None
    await ctx.tx.tree.close(found.id, ctx.now)
    ctx.schedule_changed = True
    await ctx.reply("The phone-tree alert is closed: nobody more is called or escalated.")


# ---- confirmations ---------------------------------------------------------------------------


async def confirm(ctx: Context, call: Call, found: Alert) -> None:
    """A member confirmed: thanked; the caller told if they had heard of the silence, and when
    everyone has confirmed (with how long the tree took)."""
    if not await ctx.tx.tree.confirm(call.id, ctx.now):
        return
    await ctx.dm(call.person, "Thank you: your confirmation is recorded.")
    calls = await ctx.tx.tree.calls(found.id)
    if found.caller is None:
        return
    chain = phone_tree.escalation_chain(call.person, call.backup, found.caller)
    if found.caller in chain and call.escalated > chain.index(found.caller):
        await ctx.dm(found.caller, "**Phone tree:** {person} has now confirmed.", person=call.person)
    if any(c.confirmed_at is None for c in calls):
        return
    await ctx.tx.tree.close(found.id, ctx.now)
    reached = [c.sent_at for c in calls if c.sent_at is not None]
    confirmed = max(c.confirmed_at for c in calls if c.confirmed_at) - found.created_at
    await ctx.dm(found.caller, phone_tree.all_confirmed_message(
        len(calls), max(reached) - found.created_at if reached else None, confirmed,
        found.origin))


@direct_hook(rank=5)  # before a loan's yes or no, the relay and the private-request conversation
async def on_confirmation(ctx: Context, parsed: tuple[str, str] | None) -> bool:
    if parsed is not None or not phone_tree.is_confirmation(ctx.text):
        return False
    waiting = await ctx.tx.tree.waiting_call(ctx.sender, ctx.now - phone_tree.OPEN_FOR)
    if waiting is None:
        return False
    await confirm(ctx, *waiting)
    return True


async def confirm_by_reaction(ctx: Context, reaction: Reaction) -> None:
    """👍 on the alert's DM, or on the alert (or the bot's answer to it) in the pod room."""
    if reaction.is_direct:
        found = await ctx.tx.tree.call_by_message(reaction.relates_to)
        if found is None or found[0].person != ctx.sender:
            return
        await confirm(ctx, *found)
        return
    in_room = await ctx.tx.tree.alert_by_event(ctx.room_id, reaction.relates_to)
    if in_room is None or in_room.closed_at is not None:
        return
    call = await ctx.tx.tree.call_of(in_room.id, ctx.sender)
    if call is not None and ctx.now - in_room.created_at < phone_tree.OPEN_FOR:
        await confirm(ctx, call, in_room)

