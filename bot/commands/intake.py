"""Private requests by direct message, and introductions in new private rooms.

A person writes to the bot in a DM (anything, or `!need`), answers a few questions (see
`bot.intake_rules`), and the pod room gets only a redacted notice. When someone claims it (or the
matcher pairs it with an offer) the requester is asked in the DM; on yes the bot creates a new
encrypted room with just the two of them (and a coordinator if the pod wants that) and introduces
them there with the details. The conversation state lives in the database, so a restart resumes it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime

from bot import front_door, pod_network, room_settings
from bot import intake_rules as rules
from bot.actions import FOLLOWUPS, Followup
from bot.commands import Arg, UsageError, command, direct_hook, event_hook, flow, relay
from bot.commands.pods import SETTING_ZONES, pod_profile
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, Mention, Rendered, join, render
from bot.matching import find_matches
from bot.messages import Redaction
from bot.models import Category, ParsedPost, Post, PostKind, PostStatus
from bot.networks import same_network
from bot.parsing import ParseError, parse_category, parse_post, parse_post_ref
from bot.storage import Storage, Transaction
from bot.store.actions import Action
from bot.store.network import ACCEPTED, DECLINED, EscalationClaim
from bot.store.privacy import Introduction

FLOW_INTAKE = "intake"
FLOW_FORGET = "forget"
SETTING_INTRO_COORDINATOR = "intro_with_coordinator"
# Room notes (no personal data, so they survive !forgetme and retention): never offered as pods.
NOTE_PRIVATE_ROOM = "private-room"

INTRO_COORDINATOR = room_settings.register(room_settings.Setting(
    key=SETTING_INTRO_COORDINATOR,
    help="Invite one coordinator into each private introduction room (on/off).",
    default=lambda config: "on" if config.privacy.intro_with_coordinator else "off",
    validate=room_settings.validate_on_off,
    example="on",
))


def _text(text: str) -> Rendered:
    """Plain text of our own making that may contain what a person typed: escaped, never a template."""
    return join([render("{line}", line=line) for line in text.split("\n")])


async def say(ctx: Context, text: str) -> None:
    await ctx.reply(_text(text))


# ---- the DM entry point ---------------------------------------------------------------------


@direct_hook(rank=30)
async def on_direct(ctx: Context, parsed: tuple[str, str] | None) -> bool:
    """Every direct message passes here before commands; True if it was handled here."""
    tx = ctx.tx
    if await tx.privacy.introduction_post_id(ctx.room_id) is not None:
        return False  # a small introduction room, not a DM
    if await tx.delivery.get_dm_room(ctx.sender) is None:
        await tx.delivery.set_dm_room(ctx.sender, ctx.room_id)
    await tx.delivery.note_once(ctx.room_id, NOTE_PRIVATE_ROOM, ctx.now)
    word, rest = parsed if parsed else (None, "")
    if word == "need":  # in a DM a need is always private: (re)start the conversation
        await begin(ctx, rest)
        return True
    if word == "offer":
        await ctx.reply("Offers are posted in your pod room: send {example} there.",
                        example=Code(f"{ctx.config.command_prefix}offer {rest or 'ride to the clinic'}"))
        return True
    conversation = await tx.privacy.intake(ctx.sender)
    if conversation is not None:
        flow_name, state, updated_at = conversation.flow, conversation.state, conversation.updated_at
        if rules.timed_out(updated_at, ctx.now, ctx.config.privacy.intake_timeout_minutes):
            await tx.privacy.end_intake(ctx.sender)
            await say(ctx, timeout_message(ctx.config))
            if parsed is None or (word in ("cancel", "stop") and not rest):
                return True
        elif parsed is None or (word in ("cancel", "stop") and not rest):
            handler = ctx.registry.flows.get(flow_name)
            if handler is None:
                await tx.privacy.end_intake(ctx.sender)
                return False
            await handler(ctx, state, ctx.text if parsed is None else "stop")
            return True
        else:
            return False  # another command in the middle of a conversation: run it as usual
    if word in ("cancel", "stop") and not rest:
        await ctx.reply("There is nothing in progress to stop.")
        return True
    if parsed is not None:
        return False
    answer = _consent_answer(ctx.text)
    if answer is not None and await tx.privacy.asked_introductions(requester=ctx.sender):
        await answer_consent(ctx, *answer)
        return True
    # A first message that names a category ("groceries please") answers the first question.
    words = ctx.text.split()
    await begin(ctx, "", parse_category(words[0].strip(",.!?")) if 0 < len(words) <= 3 else None)
    return True


def _consent_answer(text: str) -> tuple[bool, int | None] | None:
    """("yes", None), ("no 14") -> (False, 14); None if the text is not a yes or no."""
    words = text.strip().split()
    if not words:
        return None
    number = parse_post_ref(words[-1]) if len(words) > 1 else None
    head = " ".join(words[:-1]) if number is not None else text
    if rules.is_yes(head):
        return True, number
    if rules.is_no(head):
        return False, number
    return None


def timeout_message(config: BotConfig) -> str:
    minutes = config.privacy.intake_timeout_minutes
    return rules.TIMEOUT_MESSAGE.format(minutes=f"{minutes:g}")


# ---- intake conversation --------------------------------------------------------------------


async def pods_for(ctx: Context) -> list[tuple[str, str]]:
    """Pod rooms the person shares with the bot: not DMs, not introduction rooms."""
    return [(room_id, name) for room_id, name in ctx.transport.rooms_with(ctx.sender)
            if room_id != ctx.room_id and await is_pod_room(ctx.tx, room_id)]


async def is_pod_room(tx: Transaction, room_id: str) -> bool:
    """Not a direct chat, an introduction room, or a room the bot noted as private."""
    return (await tx.delivery.dm_partner(room_id) is None
            and await tx.privacy.introduction_post_id(room_id) is None
            and not await tx.delivery.has_note(room_id, NOTE_PRIVATE_ROOM))


async def begin(ctx: Context, rest: str, category: Category | None = None) -> None:
    details = None
    if rest:
        try:
            parsed = parse_post(rest)
        except ParseError:
            parsed = None
        if parsed is not None:
            category, details = parsed.category, parsed.text
    pods = await pods_for(ctx)
    coverage = None
    if not pods:  # in no pod: the front door
        refusal = await front_door_refusal(ctx)
        if refusal is not None:
            await say(ctx, refusal)
            return
        coverage = await front_door_coverage(ctx)
    turn = rules.start(pods, category, details, await _pod_zones(ctx, pods), coverage)
    await ctx.tx.privacy.save_intake(ctx.sender, ctx.room_id, FLOW_INTAKE,
                                  turn.state.model_dump(mode="json"), ctx.now)
    await say(ctx, turn.prompt)


async def _pod_zones(ctx: Context, pods: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The pods that have zones, with their zones."""
    zones = {}
    for room_id, _ in pods:
        profile = await pod_profile(ctx, room_id)
        if profile.zones:
            zones[room_id] = list(profile.zones)
    return zones


async def front_door_coverage(ctx: Context) -> front_door.Coverage:
    """What the bot's pods cover (their zones), and the configured pod for anywhere else with
    its networks (the zones other pods announced there): only pod rooms the bot is still in."""
    profiles = [await pod_profile(ctx, room)
                for room in sorted(await ctx.tx.settings.rooms_setting(SETTING_ZONES))
                if await _bot_pod_room(ctx, room)]
    default = ctx.config.front_door.default_pod
    if not default or not await _bot_pod_room(ctx, default):
        return front_door.coverage(profiles, None)
    return front_door.coverage(profiles, await pod_profile(ctx, default),
                               nearby=await ctx.tx.network.network_zones(default),
                               networked=bool(await ctx.tx.network.links(default)))


async def _bot_pod_room(ctx: Context, room_id: str) -> bool:
    """A pod room the bot is (still) in."""
    return bool(ctx.transport.members(room_id)) and await is_pod_room(ctx.tx, room_id)


async def front_door_refusal(ctx: Context) -> str | None:
    """Why a person in no pod may not make another request now, or None."""
    limits = front_door.Limits(ctx.config.front_door.max_open_requests,
                               ctx.config.front_door.max_requests_per_day)
    open_now, made = await ctx.tx.front_door.requests_by(ctx.sender, ctx.now - front_door.DAY)
    return front_door.limit_reply(open_now, made, limits, ctx.now)


@flow(FLOW_INTAKE)
async def intake_flow(ctx: Context, state: dict, text: str) -> None:
    current = rules.IntakeState.model_validate(state)
    turn = rules.advance(current, text)
    if turn.outcome is rules.Outcome.ASK:
        await ctx.tx.privacy.save_intake(ctx.sender, ctx.room_id, FLOW_INTAKE,
                                      turn.state.model_dump(mode="json"), ctx.now)
        await say(ctx, turn.prompt)
        return
    await ctx.tx.privacy.end_intake(ctx.sender)
    if turn.outcome is rules.Outcome.CONFIRMED:
        await post_private(ctx, turn.state)
    else:
        await say(ctx, turn.prompt)


def pod_notice(post: Post, prefix: str) -> Rendered:
    """What the pod room sees of a private request: no name or details unless chosen."""
    who = "Someone" if post.anonymous else Mention(post.author)
    details = "\n\nDetails: {details}" if post.details_shown and post.text else ""
    zone = ", {zone}" if post.zone else ""
    return render(
        "**#{number}** {who} needs: {category} ({urgency}" + zone + ")." + details
        + " Reply {claim} to help.",
        number=post.number, who=who, category=post.category.value, urgency=post.urgency.label,
        zone=post.zone, details=post.text, claim=Code(f"{prefix}claim {post.number}"),
    )


def _uncovered_notice(networked: bool, prefix: str) -> Rendered:
    """The word to the fallback pod under a request from an area no pod of this bot covers."""
    if networked:
        return render("It is from an area none of my pods covers, so it goes to this pod's "
                      "networks at once (only its category, urgency and zone).")
    return render("It is from an area none of my pods covers. This pod is in no network, so "
                  "it waits here: once a coordinator links one with {join}, such requests go to "
                  "the pods nearby at once.", join=Code(f"{prefix}network join <room>"))


async def post_private(ctx: Context, state: rules.IntakeState) -> None:
    assert state.category is not None and state.urgency is not None and state.room_id
    if state.front_door is not None:
        refusal = await front_door_refusal(ctx)
        if refusal is not None:
            await say(ctx, refusal + " Nothing was posted.")
            return
        if not await _bot_pod_room(ctx, state.room_id):
            await say(ctx, "That pod is no longer taking requests through me, so I could not "
                      "pass it on. Nothing was posted; message me again to start over.")
            return
    elif state.room_id not in {room for room, _ in ctx.transport.rooms_with(ctx.sender)}:
        await say(ctx, "You and I no longer share that pod room, so I could not post it. "
                  "Nothing was posted.")
        return
    parsed = ParsedPost(category=state.category, urgency=state.urgency,
                        what=state.category.value, text=state.details or "")
    pod = ctx.config.pod_rooms(state.room_id)[1:]
    # From an area none of the bot's pods covers: the network hears of it at once, by the
    # scheduler's usual escalation (its hourly limit and once-only record), woken by the post.
    # A pod in no network keeps it like any need (linked later, it waits the usual delay).
    uncovered = state.front_door is not None and not front_door.route(
        state.zone, state.front_door).covered
    networked = uncovered and bool(await ctx.tx.network.links(state.room_id))
    post = await ctx.tx.posts.create(
        state.room_id, PostKind.NEED, ctx.sender, parsed, ctx.now,
        private=True, anonymous=state.anonymous, details_shown=state.details_shown, pod=pod,
        zone=state.zone, escalate_at=ctx.now if networked else None,
    )
    notice = pod_notice(post, ctx.config.command_prefix)
    if uncovered:
        notice = join([notice, _uncovered_notice(networked, ctx.config.command_prefix)])
    await ctx.send(post.room_id, notice)
    cancel = Code(f"{ctx.config.command_prefix}cancel {post.number}")
    if networked:
        await ctx.reply(
            "Passed on as **#{number}** to the pods nearby: they see only the kind of help, how "
            "urgent it is and your area. When someone offers to help I will ask you here first; "
            "nobody learns who you are before you say yes. To withdraw it, send {cancel} here.",
            number=post.number, cancel=cancel)
    else:
        await ctx.reply(
            "Posted as **#{number}**. When someone offers to help I will ask you here first; "
            "nothing about you is shared before you say yes. To withdraw it, send {cancel} here.",
            number=post.number, cancel=cancel)
    for match in find_matches(post, await ctx.tx.posts.match_candidates(post, 1, pod), 1, pod):
        await ask_consent(ctx, post, match.other.author, offer=match.other)


# ---- the requester in the pod room -----------------------------------------------------------


def acting_as_member(ctx: Context, post: Post) -> bool:
    """Whether the requester of an anonymous request is speaking about it in its pod room.

    There they have only the rights any member has: acting on their word as its author would
    show the room whose request it is.
    """
    return post.anonymous and post.author == ctx.sender and ctx.room_id == post.room_id


async def answer_privately_if_anonymous(ctx: Context, post: Post, handling: Awaitable[None],
                                        ) -> None:
    """Run a command about `post`; if it is an anonymous request and the command came from its
    pod room, the answers go to the sender's DM, whoever they are, so the room never sees a
    reply that could tell the requester from anyone else (status notices still go to the room,
    from nobody)."""
    start = len(ctx.outgoing)
    await handling
    if not (post.anonymous and ctx.room_id == post.room_id and not ctx.is_direct):
        return
    for i in range(start, len(ctx.outgoing)):
        out = ctx.outgoing[i]
        if out.room_id == ctx.room_id and out.reply_to == ctx.event_id:
            ctx.outgoing[i] = Outgoing(out.message, user_id=ctx.sender, attachment=out.attachment)


async def tell_requester_privately(ctx: Context, post: Post, word: str) -> None:
    """The DM to a requester who used `!word N` on their anonymous request in the pod room."""
    prefix = ctx.config.command_prefix
    await ctx.dm(ctx.sender, "You sent {sent} in the pod room. **#{number}** is your anonymous "
                 "request, so I did not act on it there: anyone watching could have told that it "
                 "is yours. To {action}, send {command} here.",
                 sent=Code(f"{prefix}{word} {post.number}"), number=post.number,
                 action="close it" if word == "claim" else "do it",
                 command=Code(f"{prefix}{'cancel' if word == 'claim' else word} {post.number}"))


# ---- consent and introductions --------------------------------------------------------------


async def ask_consent(ctx: Context, post: Post, helper: str, offer: Post | None = None,
                      helper_from: str | None = None) -> int:
    """Ask the requester whether to be introduced to `helper`; the introduction's id.

    `helper_from` (a pod's name): the helper is in another pod, whose bot keeps who they are
    until the requester says yes, so the introduction has no helper yet (`helper` is "")."""
    intro_id = await ctx.tx.privacy.add_introduction(post.id, post.author, helper, ctx.now)
    how = (f"offers {offer.category.value} (#{offer.number}: {offer.text}), which may help with"
           if offer else "offered to help with")
    who = f"Someone from the {helper_from} pod" if helper_from else helper
    await ctx.dm(post.author, _text(
        f"{who} {how} your {'private ' if post.private else ''}request #{post.number} "
        f"({post.category.value}). "
        f"Reply yes to be introduced in a new private room, where they will see your details, "
        f"or no to decline. (If you have several requests waiting, add the number: yes "
        f"{post.number}.)"
    ))
    return intro_id


async def claim_private(ctx: Context, post: Post) -> None:
    """`!claim` on a private request: ask the requester before anything is shared.

    The requester claiming their own anonymous request in the pod room is only told, by DM,
    how to close it: the room sees nothing, as for anyone's claim on it.
    """
    if post.author == ctx.sender:
        await tell_requester_privately(ctx, post, "claim")
        return
    if await ctx.tx.privacy.asked_introductions(post_id=post.id):
        await ctx.reply("Someone has already offered to help with **#{number}**; I am waiting "
                        "for an answer. Thank you!", number=post.number)
        return
    await ask_consent(ctx, post, ctx.sender)
    await ctx.reply(
        "Thank you! I have asked the person behind **#{number}** privately. If they agree, I will "
        "invite you both to a new private room with the details.", number=post.number,
    )


async def answer_consent(ctx: Context, yes: bool, number: int | None) -> None:
    asked = await ctx.tx.privacy.asked_introductions(requester=ctx.sender)
    posts = [(intro, await ctx.tx.posts.by_id(intro.post_id)) for intro in asked]
    if number is not None:
        posts = [(i, p) for i, p in posts if p.number == number]
    if not posts:
        await say(ctx, "There is no offer waiting for your answer"
                  + (f" on #{number}." if number is not None else "."))
        return
    intro, post = posts[0]
    remote = await ctx.tx.network.claim_for_introduction(intro.id)
    if remote is not None:
        await _answer_other_pod(ctx, intro, post, remote, yes)
        return
    if not yes:
        await ctx.tx.privacy.set_introduction(intro.id, "declined", ctx.now)
        await ctx.dm(intro.helper, _text(
            f"Thank you for offering to help with #{post.number}. The person preferred not to go "
            f"ahead this time."))
        await say(ctx, f"OK, I declined that offer for #{post.number}; nothing about you was "
                  f"shared. Your request stays open.")
        return
    if post.status is not PostStatus.OPEN:
        await ctx.tx.privacy.set_introduction(intro.id, "declined", ctx.now)
        await say(ctx, f"#{post.number} is already {post.status.value}, so I did not introduce you.")
        return
    if not same_network(post.author, intro.helper):
        await ctx.tx.privacy.set_introduction(intro.id, "accepted", ctx.now)
        await ctx.tx.posts.set_status(post, PostStatus.CLAIMED, ctx.now, claimed_by=intro.helper)
        await ctx.send(post.room_id, "**#{number}** is being handled.", number=post.number)
        await relay.start(ctx, post, helper=intro.helper)
        return
    await ctx.tx.privacy.set_introduction(intro.id, "accepted", ctx.now)
    await ctx.tx.posts.set_status(post, PostStatus.CLAIMED, ctx.now, claimed_by=intro.helper)
    await introduce(ctx, intro.id, post, intro.helper)
    for other in posts[1:]:
        if other[1].id == post.id:
            await ctx.tx.privacy.set_introduction(other[0].id, "declined", ctx.now)
    await say(ctx, f"Thank you! I am making a new private room for you both for #{post.number} "
              f"and will tell you here when the invite is on its way.")


async def introduce(ctx: Context, intro_id: int, post: Post, helper: str) -> None:
    """Ask for the introduction room of an accepted introduction: the requester and the helper
    (and a coordinator if the pod wants one). The room is made after this command is committed
    (never inside its transaction); the introduction goes on in `_introduction_room_made`."""
    invitees = [post.author, helper]
    coordinator = await _intro_coordinator(ctx, post, invitees)
    if coordinator is not None:
        invitees.append(coordinator)
    await ctx.request_room(
        key=f"intro:{intro_id}", name=f"Mutual aid #{post.number}", invitees=invitees,
        then=THEN_INTRODUCTION, purpose=f"the private room for #{post.number}",
        pod_room=post.room_id, data={"intro_id": intro_id, "coordinator": coordinator})


async def _answer_other_pod(ctx: Context, intro: Introduction, post: Post,
                            claim: EscalationClaim, yes: bool) -> None:
    """The requester answered an offer from another pod: only that pod's bot hears it, in
    their direct chat; on yes it sends the helper's id back (bot/commands/network.py), and
    nothing about the requester ever leaves this bot."""
    from bot.commands import network  # it imports this module

    going_ahead = yes and post.status is PostStatus.OPEN
    await ctx.tx.privacy.set_introduction(intro.id, "accepted" if going_ahead else "declined",
                                          ctx.now)
    await ctx.tx.network.set_claim(claim.claim, ACCEPTED if going_ahead else DECLINED)
    if going_ahead:
        await ctx.tx.posts.set_status(post, PostStatus.CLAIMED, ctx.now)
    # To the claiming pod's bot; when that is this bot (another of its pods), handled at once.
    await network.to_bot(ctx, claim.bot, pod_network.ANSWER, claim.escalation,
                         claim=claim.claim, yes=going_ahead)
    if going_ahead:
        await say(ctx, f"Thank you! I am asking the helper's pod for them, then I will make a "
                  f"new private room for you both for #{post.number} and tell you here.")
    elif yes:
        await say(ctx, f"#{post.number} is already {post.status.value}, so I did not introduce you.")
    else:
        await say(ctx, f"OK, I declined that offer for #{post.number}; nothing about you was "
                  f"shared. Your request stays open.")


THEN_INTRODUCTION = "introduction"


async def _introduction_wanted(tx: Transaction, action: Action) -> bool:
    """Still wanted unless the introduction was erased (`!forgetme`) or ended meanwhile."""
    intro = await tx.privacy.introduction(action.params["data"]["intro_id"])
    return intro is not None and intro.status == "accepted" and intro.room_id is None


async def _introduction_room_made(tx: Transaction, action: Action, room_id: str, now: datetime,
                                  config: BotConfig) -> list[Outgoing]:
    """The room exists: record it and introduce the two there (in the step's transaction)."""
    intro = await tx.privacy.introduction(action.params["data"]["intro_id"])
    post = await tx.posts.by_id(intro.post_id) if intro is not None else None
    await tx.delivery.note_once(room_id, NOTE_PRIVATE_ROOM, now)
    if intro is None or post is None or post.author is None:
        return []  # erased meanwhile: nobody to introduce
    await tx.privacy.set_introduction(intro.id, "accepted", now, room_id=room_id)
    coordinator = action.params["data"].get("coordinator")
    extra = " {coordinator} from the pod's coordinators is here too." if coordinator else ""
    details = render(
        "Hello {requester} and {helper}! This private room is just for request **#{number}** "
        "({category}, {urgency})." + extra + "\n\nDetails: {details}\n\nPlease arrange things "
        "here. When it is done, {requester} can send {done} here.",
        requester=Mention(post.author), helper=Mention(intro.helper), number=post.number,
        category=post.category.value, urgency=post.urgency.label, details=post.text,
        coordinator=Mention(coordinator) if coordinator else "",
        done=Code(f"{config.command_prefix}done {post.number}"),
    )
    return [
        Outgoing(details, room_id=room_id),
        Outgoing(render("**#{number}** is being handled.", number=post.number),
                 room_id=post.room_id),
        Outgoing(_text(f"I have invited you both to a new private room for #{post.number}. "
                       f"Accept the invite to meet them there."), user_id=post.author),
    ]


async def _introduction_failed(tx: Transaction, action: Action, reason: str, now: datetime,
                               config: BotConfig) -> list[Outgoing]:
    """The room could not be made: the request is open again, and both are told."""
    intro = await tx.privacy.introduction(action.params["data"]["intro_id"])
    post = await tx.posts.by_id(intro.post_id) if intro is not None else None
    if intro is None or post is None:
        return []
    await tx.privacy.set_introduction(intro.id, "failed", now)
    if post.status is PostStatus.CLAIMED and post.claimed_by == intro.helper:
        await tx.posts.unclaim(post, now)
    told = [Outgoing(_text(
        f"Sorry: I could not make the private room for #{post.number} ({reason}), so you "
        f"have not been introduced. The request is open again; the pod's coordinators can see "
        f"this in !status."), user_id=person) for person in (post.author, intro.helper) if person]
    return told


FOLLOWUPS[THEN_INTRODUCTION] = Followup(
    done=_introduction_room_made, failed=_introduction_failed, wanted=_introduction_wanted)


async def _intro_coordinator(ctx: Context, post: Post, invitees: list[str]) -> str | None:
    stored = await ctx.tx.settings.room(post.room_id)
    if not room_settings.is_on(room_settings.value(SETTING_INTRO_COORDINATOR, stored, ctx.config)):
        return None
    me = ctx.config.matrix.user_id if ctx.config.matrix else None
    threshold = ctx.config.bot.coordinator_power_level
    for member in ctx.transport.members(post.room_id):
        if member in invitees or member == me:
            continue
        if ctx.transport.power_level(post.room_id, member) >= threshold:
            return member
    return None


# ---- a person deleting their own !need / !offer withdraws it ---------------------------------


@event_hook(Redaction)
async def on_redaction(ctx: Context, redaction: Redaction) -> None:
    redacted_event_id = redaction.redacts
    post = await ctx.tx.posts.by_event(ctx.room_id, redacted_event_id)
    if post is None or post.author != ctx.sender:
        return
    for sent in await ctx.tx.delivery.bot_replies_to(redacted_event_id):
        ctx.outgoing.append(Outgoing(render(""), room_id=sent.room_id, redacts=sent.event_id))
    if post.status in (PostStatus.OPEN, PostStatus.CLAIMED):
        await ctx.tx.posts.set_status(post, PostStatus.CANCELLED, ctx.now)
        await ctx.send(ctx.room_id, "**#{number}** was withdrawn: its message was deleted.",
                       number=post.number)


@command("accept", help="Say yes to an offer of help on your private request (in a DM).",
         args=(Arg("#id", optional=True),), examples=("accept 14",), group="Privacy")
async def accept(ctx: Context, rest: str) -> None:
    await _answer_command(ctx, rest, True)


@command("decline", help="Say no to an offer of help on your private request (in a DM).",
         args=(Arg("#id", optional=True),), examples=("decline 14",), group="Privacy")
async def decline(ctx: Context, rest: str) -> None:
    await _answer_command(ctx, rest, False)


async def _answer_command(ctx: Context, rest: str, yes: bool) -> None:
    number = parse_post_ref(rest.split()[0]) if rest else None
    if rest and number is None:
        raise UsageError("Give the request number, like #14.")
    if not ctx.is_direct:
        await ctx.reply("Please answer me in our direct message, so the pod does not see it.")
        return
    await answer_consent(ctx, yes, number)


# ---- idle conversations (for a periodic job) ------------------------------------------------


async def expire_idle(storage: Storage, config: BotConfig, now: datetime) -> int:
    """Drop conversations idle longer than the timeout and tell each person; returns how many.

    Safe to call from any periodic job: one transaction, messages go through the outbox.
    """
    cutoff = rules.idle_cutoff(now, config.privacy.intake_timeout_minutes)
    async with storage.transaction() as tx:
        idle = await tx.privacy.idle_intakes(cutoff)
        out = []
        for conversation in idle:
            await tx.privacy.end_intake(conversation.user_id)
            # To the person's direct chat: a conversation a coordinator began from a pod room
            # (`!pod split`) is answered there too.
            out.append(Outgoing(_text(timeout_message(config)), user_id=conversation.user_id))
        await tx.delivery.enqueue(out, now)
    return len(idle)
