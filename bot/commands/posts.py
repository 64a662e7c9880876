"""Needs and offers: post, list, claim, finish, cancel, and announce matches."""

from __future__ import annotations

from bot import pods
from bot.commands import Arg, UsageError, command, intake, is_coordinator, records, relay
from bot.commands.pods import pod_profile
from bot.context import Context
from bot.formatting import Code, Mention, Rendered, join, render, shorten
from bot.matching import find_matches
from bot.models import Post, PostKind, PostStatus
from bot.networks import same_network
from bot.parsing import ParseError, parse_category, parse_post, parse_post_ref
from bot.post_text import post_line

_LIST_LIMIT = 25



async def _create(ctx: Context, kind: PostKind, rest: str) -> None:
    try:
        parsed = parse_post(rest)
    except ParseError as exc:
        raise UsageError(str(exc)) from None
    zone = pods.zone_for_post(parsed.text, (await pod_profile(ctx)).zones)
    pod = ctx.config.pod_rooms(ctx.room_id)[1:]
    post = await ctx.tx.posts.create(ctx.room_id, kind, ctx.sender, parsed, ctx.now,
                                     event_id=ctx.event_id, zone=zone, pod=pod)
    prefix = ctx.config.command_prefix
    template = ("Noted {kind} **#{number}** · {category}{urgency}: {text}\n\n"
                "Anyone who can {action} can reply {claim}.")
    values: dict[str, object] = dict(
        kind=kind.value, number=post.number, category=post.category.value,
        urgency=" · " + post.urgency.label if post.urgency else "", text=shorten(post.text, 200),
        action="help" if kind is PostKind.NEED else "use it", claim=Code(f"{prefix}claim {post.number}"),
    )
    limit = ctx.config.bot.max_matches
    announced = []
    candidates = await ctx.tx.posts.match_candidates(post, limit, pod)
    for match in find_matches(post, candidates, limit, pod):
        need, offer = (match.new, match.other) if kind is PostKind.NEED else (match.other, match.new)
        if need.private:
            # Never name the requester or show private details: ask them in their DM instead.
            if not await ctx.tx.privacy.asked_introductions(post_id=need.id):
                await intake.ask_consent(ctx, need, offer.author, offer=offer)
            continue
        announced.append(match.other)
    # Matches go in the same reply, one line each: one message per post keeps a busy pod room
    # readable and the bot well inside the homeserver's rate limits.
    if announced:
        template += "\n\nPossible match in {category} for {poster}:\n"
        values["poster"] = Mention(ctx.sender)
        for i, other in enumerate(announced):
            template += f"\n- {{who{i}}} {other.kind.value}s **#{{number{i}}}** ({{text{i}}}): {{claim{i}}}"
            values |= {f"who{i}": Mention(other.author), f"number{i}": other.number,
                       f"text{i}": shorten(other.text, 60), f"claim{i}": Code(f"{prefix}claim {other.number}")}
    await ctx.reply(template, **values)
    # A match in another room of the pod (maybe on another network): its poster is told there.
    for other in announced:
        if other.room_id != post.room_id:
            await ctx.send(other.room_id, _match_elsewhere(post, other, prefix))


def _match_elsewhere(post: Post, other: Post, prefix: str) -> Rendered:
    return render(
        "Possible match in {category} for {who}'s {other_kind} **#{other_number}**: {poster} "
        "{kind}s **#{number}** ({text}), posted in another room of the pod: {claim}",
        category=post.category.value, who=Mention(other.author), other_kind=other.kind.value,
        other_number=other.number, poster=Mention(post.author), kind=post.kind.value,
        number=post.number, text=shorten(post.text, 60), claim=Code(f"{prefix}claim {post.number}"),
    )


@command("need", help="Ask for something. Category and urgency are read from your words.",
         args=(Arg("what"), Arg("details", optional=True, many=True)),
         examples=("need groceries for a family of 4, urgent", "need ride to clinic tuesday"))
async def need(ctx: Context, rest: str) -> None:
    await _create(ctx, PostKind.NEED, rest)


@command("offer", help="Offer something to the pod.",
         args=(Arg("what"), Arg("details", optional=True, many=True)),
         examples=("offer ride to clinic tuesday", "offer spare drill and ladder"))
async def offer(ctx: Context, rest: str) -> None:
    await _create(ctx, PostKind.OFFER, rest)


async def _list(ctx: Context, kind: PostKind, rest: str) -> None:
    category = None
    if rest:
        category = parse_category(rest.split()[0])
        if category is None:
            raise UsageError("I don't know that category. Try food, transport, childcare, housing, "
                             "medical, tools, skills, money or other.")
    posts = await ctx.tx.posts.list(ctx.room_id, kind=kind, category=category,
                                         limit=_LIST_LIMIT + 1)
    plural = kind.value + "s"
    if not posts:
        where = f" in {category.value}" if category else ""
        await ctx.reply("No open {plural}{where} here right now.", plural=plural, where=where)
        return
    lines = [render("**Open {plural}**", plural=plural)]
    lines += [post_line(p) for p in posts[:_LIST_LIMIT]]
    if len(posts) > _LIST_LIMIT:
        lines.append(render("…and more. Narrow it down: {example}",
                            example=Code(f"{ctx.config.command_prefix}{plural} food")))
    await ctx.reply(join(lines))


@command("needs", help="List open needs here, optionally in one category.",
         args=(Arg("category", optional=True),), examples=("needs", "needs food"))
async def needs(ctx: Context, rest: str) -> None:
    await _list(ctx, PostKind.NEED, rest)


@command("offers", help="List open offers here, optionally in one category.",
         args=(Arg("category", optional=True),), examples=("offers", "offers transport"))
async def offers(ctx: Context, rest: str) -> None:
    await _list(ctx, PostKind.OFFER, rest)


@command("mine", help="Your own open and claimed posts here (in a DM: your private requests).",
         examples=("mine",))
async def mine(ctx: Context, rest: str) -> None:
    found = await ctx.tx.posts.list(
        None if ctx.is_direct else ctx.room_id, author=ctx.sender,
        statuses=(PostStatus.OPEN, PostStatus.CLAIMED), limit=10 * _LIST_LIMIT,
    )
    # In a DM: the private requests made there. In a room others read: never an anonymous one.
    posts = [p for p in found if p.private or not ctx.is_direct]
    posts = [p for p in posts if ctx.is_direct or not p.anonymous][:_LIST_LIMIT]
    if not posts:
        await ctx.reply("You have no open posts here. Post one with {example}",
                        example=Code(f"{ctx.config.command_prefix}need groceries"))
        return
    await ctx.reply(join([render("**Your posts**"), *(post_line(p) for p in posts)]))


async def _find(ctx: Context, rest: str) -> Post:
    number = parse_post_ref(rest.split()[0]) if rest else None
    if number is None:
        raise UsageError("Give the post number, like #7.")
    post = await ctx.tx.posts.by_number(ctx.room_id, number,
                                        pod=ctx.config.pod_rooms(ctx.room_id)[1:])
    if post is None:
        # In a DM or an introduction room: the person's own (private) request by its number.
        intro_post = await ctx.tx.privacy.introduction_post_id(ctx.room_id)
        if intro_post is not None:
            candidate = await ctx.tx.posts.by_id(intro_post)
            post = candidate if candidate.number == number else None
        elif ctx.is_direct:
            post = await ctx.tx.posts.find_own(ctx.sender, number)
    if post is None:
        raise UsageError(f"There is no post #{number} in this room.")
    return post


def _may_close(ctx: Context, post: Post, status: PostStatus) -> bool:
    if status is PostStatus.DONE and post.claimed_by == ctx.sender:
        return True  # the helper who claimed it, as the claim reply tells them
    is_author = post.author == ctx.sender and not intake.acting_as_member(ctx, post)
    return is_author or (post.room_id == ctx.room_id and is_coordinator(ctx))


@command("claim", help="Say you will fulfil a need or take an offer.", args=(Arg("#id"),),
         examples=("claim 7",))
async def claim(ctx: Context, rest: str) -> None:
    await claim_post(ctx, await _find(ctx, rest))


async def claim_post(ctx: Context, post: Post) -> None:
    """`!claim` of a post found by its number, or by a ✋ on it (bot/commands/reactions.py)."""
    await intake.answer_privately_if_anonymous(ctx, post, _claim(ctx, post))


async def _claim(ctx: Context, post: Post) -> None:
    if post.status is not PostStatus.OPEN:
        await ctx.reply("**#{number}** is already {status}.", number=post.number,
                        status=post.status.value)
        return
    if post.author == ctx.sender and not intake.acting_as_member(ctx, post):
        await ctx.reply("**#{number}** is your own post. To close it, use {done} or {cancel}.",
                        number=post.number, done=Code(f"{ctx.config.command_prefix}done {post.number}"),
                        cancel=Code(f"{ctx.config.command_prefix}cancel {post.number}"))
        return
    if post.private:
        await intake.claim_private(ctx, post)
        return
    post = await ctx.tx.posts.set_status(post, PostStatus.CLAIMED, ctx.now, claimed_by=ctx.sender)
    verb = "will help with" if post.kind is PostKind.NEED else "would like"
    if not same_network(post.author, ctx.sender):
        # They cannot write to each other directly: the bot relays between their DMs.
        await ctx.reply("**#{number}** is claimed. {author} is on another network, so I will pass "
                        "messages between you: I have written to you both privately.",
                        number=post.number, author=Mention(post.author))
        await ctx.send(post.room_id, "**#{number}** is claimed: {claimer} {verb} it. I have "
                       "written to {author} privately.", number=post.number,
                       claimer=Mention(ctx.sender), verb=verb, author=Mention(post.author))
        await relay.start(ctx, post, helper=ctx.sender)
        return
    await ctx.reply(
        "**#{number}** is claimed. {author}: {claimer} {verb} your {kind} ({text}). "
        "Please arrange the details directly; mark it finished with {done}.",
        number=post.number, author=Mention(post.author), claimer=Mention(ctx.sender), verb=verb,
        kind=post.kind.value, text=shorten(post.text, 60),
        done=Code(f"{ctx.config.command_prefix}done {post.number}"),
    )


async def _close(ctx: Context, rest: str, status: PostStatus, hours: str | None = None) -> None:
    await close_post(ctx, await _find(ctx, rest), status, hours)


async def close_post(ctx: Context, post: Post, status: PostStatus, hours: str | None) -> None:
    """`!done` or `!cancel` of a post found by its number, or by a ✅ on it."""
    await intake.answer_privately_if_anonymous(ctx, post, _close_post(ctx, post, status, hours))


async def _close_post(ctx: Context, post: Post, status: PostStatus, hours: str | None) -> None:
    allowed = _may_close(ctx, post, status)
    if not allowed and intake.acting_as_member(ctx, post):
        await intake.tell_requester_privately(
            ctx, post, "done" if status is PostStatus.DONE else "cancel")
        return
    if not allowed:
        await ctx.reply("Only the person who posted **#{number}** or a coordinator (power level "
                        "{level} or more in this room) can do that.", number=post.number,
                        level=ctx.config.bot.coordinator_power_level)
        return
    if post.status not in (PostStatus.OPEN, PostStatus.CLAIMED):
        await ctx.reply("**#{number}** is already {status}.", number=post.number,
                        status=post.status.value)
        return
    credited = await records.record_done(ctx, post, hours) if status is PostStatus.DONE else None
    await ctx.tx.posts.set_status(post, status, ctx.now)
    message = "marked done. Thank you!" if status is PostStatus.DONE else "cancelled."
    if credited:
        message += " " + credited
    if post.author not in (ctx.sender, "") and post.claimed_by == ctx.sender and not post.anonymous:
        # The helper closed it: tell the poster, who may have been waiting to do so (never
        # by name in the room when they asked anonymously).
        await ctx.reply("**#{number}** {message} {author}: {helper} marked your {kind} finished.",
                        number=post.number, message=message, author=Mention(post.author),
                        helper=Mention(ctx.sender), kind=post.kind.value)
    else:
        await ctx.reply("**#{number}** {message}", number=post.number, message=message)
    if post.room_id != ctx.room_id or post.anonymous:  # the pod hears it, from nobody
        await ctx.send(post.room_id, "**#{number}** {message}", number=post.number,
                       message="is done. Thank you!" if status is PostStatus.DONE else "was withdrawn.")


@command("done", help="Mark a post fulfilled: your own, one you claimed, or (coordinators) any. "
         "With the pod's time bank on, add the hours the helper gave.",
         args=(Arg("#id"), Arg("hours", optional=True)), examples=("done 7", "done 7 2h"))
async def done(ctx: Context, rest: str) -> None:
    number, _, hours = rest.strip().partition(" ")
    await _close(ctx, number, PostStatus.DONE, hours.strip() or None)


@command("cancel", help="Withdraw your post (coordinators: any post).", args=(Arg("#id"),),
         examples=("cancel 7",))
async def cancel(ctx: Context, rest: str) -> None:
    await _close(ctx, rest, PostStatus.CANCELLED)
