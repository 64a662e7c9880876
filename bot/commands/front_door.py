"""The front door's commands: coordinators block a sender's direct messages with the bot.

Anyone may ask for help by DM (`bot.front_door`, the intake in `intake.py`). When someone abuses
that, a coordinator sends `!block @them:server` (in a pod room or in their own DM with the bot),
or `!block #14` in the pod room to block whoever sent request #14 without learning who it is.
The blocked person is not told: their direct messages are ignored without an answer, except
`!forgetme`, which they keep (the block itself survives it: docs/privacy.md). `!unblock` lifts a
block; `!blocks` lists them in a coordinator's DM.
"""

from __future__ import annotations

import logging

from bot.commands import Arg, UsageError, command, direct_hook, is_coordinator
from bot.commands.intake import FLOW_FORGET, pods_for
from bot.commands.pods import pod_profile
from bot.context import Context
from bot.formatting import Code, Mention, Rendered, join, render
from bot.models import PostKind
from bot.parsing import parse_post_ref
from bot.store.front_door import Block

log = logging.getLogger(__name__)

MAX_LISTED = 50


@direct_hook(rank=0)
async def ignore_blocked(ctx: Context, parsed: tuple[str, str] | None) -> bool:
    """A blocked sender's direct message is handled here by doing nothing; only erasing their
    data (`!forgetme` and its confirmation) still reaches the bot."""
    if not await ctx.tx.front_door.is_blocked(ctx.sender):
        return False
    if parsed is not None and parsed[0] == "forgetme":
        return False
    conversation = await ctx.tx.privacy.intake(ctx.sender)
    if conversation is not None and conversation.flow == FLOW_FORGET:
        return False
    log.debug("ignored a direct message from a blocked sender")
    return True


async def _coordinator_here(ctx: Context, action: str) -> bool:
    """In a pod room: a coordinator of it. In a DM: a coordinator of a pod room they share with
    the bot (nobody is a coordinator of a direct chat)."""
    if not ctx.is_direct and is_coordinator(ctx):
        return True
    if ctx.is_direct and any(is_coordinator(ctx, room_id=room) for room, _ in await pods_for(ctx)):
        return True
    await ctx.reply("A coordinator is needed to {action}: a member with power level {level} or "
                    "more in a pod room I am in.", action=action,
                    level=ctx.config.bot.coordinator_power_level)
    return False


async def _target(ctx: Context, rest: str) -> tuple[str, tuple[str, int] | None]:
    """The person `rest` names: a user id, or (in a pod room) the sender of a request there."""
    word = rest.split()[0]
    if word.startswith("@") and ":" in word:
        return word, None
    number = parse_post_ref(word)
    if number is None:
        raise UsageError("Name the sender by their id (@name:server), or by the number of "
                         "their request in this pod room (#14).")
    if ctx.is_direct:
        raise UsageError("A request number means a request of the pod room it is sent in: send "
                         "it there, or give the sender's id here.")
    post = await ctx.tx.posts.by_number(ctx.room_id, number,
                                        pod=ctx.config.pod_rooms(ctx.room_id)[1:])
    if post is None or post.kind is not PostKind.NEED or post.author is None:
        raise UsageError(f"There is no request #{number} with a sender I still know here.")
    return post.author, (post.room_id, post.number)


@command("block", help="Coordinators: ignore a sender's direct messages to the bot (they are "
         "not told). In a pod room, `block #14` blocks whoever sent request #14 without showing "
         "who it is.",
         args=(Arg("@person or #id"),), examples=("block #14", "block @spam:example.org"),
         group="Front door")
async def block(ctx: Context, rest: str) -> None:
    """Their open requests stay (a coordinator can `!cancel` them): withdrawing them all at once
    would show the pod which anonymous requests came from one person."""
    if not await _coordinator_here(ctx, "block a sender"):
        return
    person, request = await _target(ctx, rest)
    if person == ctx.sender and request is None:
        raise UsageError("That is you: you cannot block yourself.")
    who = f"the sender of #{request[1]}" if request else person
    if not await ctx.tx.front_door.block(person, ctx.sender, ctx.now, request):
        await ctx.reply("{who} is already blocked.", who=who)
        return
    await ctx.tx.privacy.end_intake(person)  # an unfinished request of theirs goes no further
    await ctx.reply(
        "Blocked {who}: I will ignore their direct messages without answering (they are not "
        "told). Their open requests stay until a coordinator cancels them. Lift the block with "
        "{unblock}; it lapses after {days} days.", who=who,
        unblock=Code(f"{ctx.config.command_prefix}unblock {rest.split()[0]}"),
        days=f"{ctx.config.front_door.block_days:g}")


@command("unblock", help="Coordinators: lift a block (by the id, or `unblock #14` in the pod "
         "room where it was made).", args=(Arg("@person or #id"),),
         examples=("unblock #14",), group="Front door")
async def unblock(ctx: Context, rest: str) -> None:
    if not await _coordinator_here(ctx, "lift a block"):
        return
    word = rest.split()[0]
    number = None if word.startswith("@") else parse_post_ref(word)
    person = word if number is None else None
    if number is not None and not ctx.is_direct:
        found = await ctx.tx.front_door.blocked_from(ctx.room_id, number)
        if found is None:
            await ctx.reply("No block was made from #{number} here.", number=number)
            return
        person = found.person
    if person is None or not (person.startswith("@") and ":" in person):
        raise UsageError("Name the sender by their id (@name:server), or by the request number "
                         "the block was made from, in that pod room (#14).")
    if not await ctx.tx.front_door.unblock(person):
        await ctx.reply("{who} is not blocked.", who=word)
        return
    await ctx.reply("Unblocked {who}: I answer their direct messages again.", who=word)


async def _block_line(ctx: Context, entry: Block) -> Rendered:
    """A block made from a request is listed by it: the coordinator never learns the id."""
    since = entry.created_at.strftime("%-d %b %Y")
    by = Mention(entry.blocked_by) if entry.blocked_by else "a coordinator since forgotten"
    if entry.room_id is not None and entry.number is not None:
        pod = await pod_profile(ctx, entry.room_id)
        return render("the sender of #{number} in {pod}, since {since}, by {by}",
                      number=entry.number, pod=pod.label, since=since, by=by)
    return render("{person}, since {since}, by {by}", person=entry.person, since=since, by=by)


@command("blocks", help="Coordinators, in a DM: the senders whose direct messages are ignored.",
         group="Front door")
async def blocks(ctx: Context, rest: str) -> None:
    if not ctx.is_direct:
        await ctx.reply("I list blocks only in our direct chat, so the pod does not see who was "
                        "blocked: send {command} to me there.",
                        command=Code(f"{ctx.config.command_prefix}blocks"))
        return
    if not await _coordinator_here(ctx, "list blocks"):
        return
    found = await ctx.tx.front_door.blocks(MAX_LISTED)
    if not found:
        await ctx.reply("Nobody is blocked.")
        return
    lines = [render("**Blocked** (newest first; at most {n} shown):", n=MAX_LISTED)]
    lines += [await _block_line(ctx, entry) for entry in found]
    await ctx.reply(join(lines))
