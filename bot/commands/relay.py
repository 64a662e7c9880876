"""Introductions across networks: a relay through the bot.

Two people of one pod on different networks (one on Matrix, one on Signal) cannot open a room
together. When one claims the other's post (or a private request's author says yes to a helper on
another network), each is told in their direct chat with the bot, and from then on whatever they
write there (that is not a command) is passed to the other, marked "[relayed from …]", until either
sends `!end`. The relay is a database row, so it survives restarts; it needs no room.
"""

from __future__ import annotations

from bot import intake_rules as rules
from bot.commands import command, direct_hook
from bot.context import Context
from bot.formatting import Code, join, render
from bot.models import Post

RELAY_LIMIT = 4000  # characters passed on per message; longer ones are cut, with a note


async def start(ctx: Context, post: Post, helper: str) -> None:
    """Open a relay between the post's author and `helper`, and tell both in their DMs."""
    author = post.author
    await ctx.tx.privacy.start_relay(post.id, author, helper, ctx.now)
    end = Code(f"{ctx.config.command_prefix}end")
    for person, other in ((author, helper), (helper, author)):
        await ctx.dm(person, render(
            "You and {other} are connected about **#{number}** ({category}). You are on "
            "different networks, so write to me here and I will pass it on to them; their "
            "answers come here too, marked as relayed. Send {end} when you are done.",
            other=other, number=post.number, category=post.category.value, end=end))


@direct_hook(rank=20)  # before the private-request conversation, which takes any text
async def relay_direct(ctx: Context, parsed: tuple[str, str] | None) -> bool:
    """A direct message that is not a command, from someone in a relay: pass it on."""
    if parsed is not None:
        return False
    tx = ctx.tx
    relay = await tx.privacy.active_relay(ctx.sender)
    if relay is None or await tx.privacy.intake(ctx.sender) is not None:
        return False  # a private request being written goes on as usual
    if (await tx.privacy.asked_introductions(requester=ctx.sender)
            and (rules.is_yes(ctx.text) or rules.is_no(ctx.text))):
        return False  # the answer to a waiting question about a private request
    text = ctx.text.strip()
    if len(text) > RELAY_LIMIT:
        text = text[:RELAY_LIMIT] + " […cut: too long to pass on]"
    first, *more = text.split("\n")
    await ctx.dm(relay.partner_of(ctx.sender), join([
        render("[relayed from {who}] {line}", who=ctx.sender, line=first),
        *(render("{line}", line=line) for line in more)]))
    return True


@command("end", help="End a relayed conversation with someone on another network (in a DM).",
         examples=("end",), group="Privacy")
async def end(ctx: Context, rest: str) -> None:
    if not ctx.is_direct:
        await ctx.reply("Send {end} to me in our direct chat, where the relayed messages arrive.",
                        end=Code(f"{ctx.config.command_prefix}end"))
        return
    relay = await ctx.tx.privacy.active_relay(ctx.sender)
    if relay is None:
        await ctx.reply("You have no relayed conversation to end.")
        return
    await ctx.tx.privacy.end_relay(relay.id, ctx.now)
    post = await ctx.tx.posts.by_id(relay.post_id)
    await ctx.reply("Ended: I will no longer pass messages about **#{number}**.",
                    number=post.number)
    await ctx.dm(relay.partner_of(ctx.sender), render(
        "{who} ended the relayed conversation about **#{number}**. Messages you send me now are "
        "not passed on.", who=ctx.sender, number=post.number))
