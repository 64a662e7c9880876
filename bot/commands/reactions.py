"""Reactions as answers: ✋ on a need or offer is `!claim`, ✅ on it is `!done`, 👍 on an alert
confirms it. The commands' own code runs, with their rules, permissions and replies; a reaction on
anything else is ignored.

A post is found by the event its command was, or by the bot's answer to that command (the outbox
keeps the event ids of what it sent). The redacted notice of a private request is neither, so a
reaction on it does nothing: nobody can act on an anonymous request, or be seen to, by reacting.
"""

from __future__ import annotations

from bot import phone_tree
from bot.commands import event_hook, posts, tree
from bot.context import Context
from bot.messages import Reaction
from bot.models import Post, PostStatus

CLAIM, DONE = "✋", "✅"
# Skin tones and the emoji presentation selector leave the meaning of a reaction unchanged.
_MODIFIERS = dict.fromkeys([0xFE0F, *range(0x1F3FB, 0x1F400)])


def meaning(key: str) -> str:
    """A reaction's key without skin tone or presentation selector."""
    return key.translate(_MODIFIERS).strip()


async def _reacted_post(ctx: Context, event_id: str) -> Post | None:
    post = await ctx.tx.posts.by_event(ctx.room_id, event_id)
    if post is None:
        command = await ctx.tx.delivery.replied_to(ctx.room_id, event_id)
        post = await ctx.tx.posts.by_event(ctx.room_id, command) if command else None
    return post


@event_hook(Reaction)
async def on_reaction(ctx: Context, reaction: Reaction) -> None:
    word = meaning(reaction.key)
    if word == phone_tree.CONFIRM:
        await tree.confirm_by_reaction(ctx, reaction)
        return
    if word not in (CLAIM, DONE) or reaction.is_direct:
        return
    post = await _reacted_post(ctx, reaction.relates_to)
    if post is None:
        return
    # The answers quote the message reacted to, as they would quote the command.
    ctx.event_id = reaction.relates_to
    if word == CLAIM:
        await posts.claim_post(ctx, post)
    else:
        await posts.close_post(ctx, post, PostStatus.DONE, None)
