"""The network of pods: `!network` links a pod to network rooms; needs still unmatched after the
pod's delay go there (the scheduler sends them: bot/scheduler.py); other pods' needs are shown
here as `E14`, claimed with `!claim E14`, and the claim travels back to the need's own bot, which
asks its requester (bot/commands/intake.py) and, on yes, makes the introduction room.

What travels where, and who learns what, is in docs/network.md. In short: the network room
carries category, urgency, zone and pod names, and claim tokens; the requester's answer goes to
the claiming pod's bot alone, and the helper's id to the requester's bot alone, after the yes,
in the two bots' encrypted direct chat. A message from an account that is not a listed pod bot,
malformed, replayed, or from a pod over its hourly limit changes nothing and is logged (never
its content).

A coordinator's `!alert [urgent] network <text>` (bot/commands/tree.py) is forwarded from here:
an `alert` (text, urgency, pod name; never the caller) goes to each of the pod's networks, and
every other bot posts it in its pods there and calls their trees (`start_alert`), once per pod.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from bot import pod_network as net
from bot.actions import FOLLOWUPS, Followup, fmt_hours, request_join
from bot.commands import Arg, UsageError, command, event_hook, intake, require_coordinator
from bot.commands.pods import announcement, pod_profile, stored_profile
from bot.commands.tree import start_alert, started_text
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, join, render
from bot.messages import NetworkEvent
from bot.models import PostKind, PostStatus
from bot.shift_text import fmt_span
from bot.storage import Transaction
from bot.store.actions import Action
from bot.store.network import ACCEPTED, ASKED, CLOSED, DECLINED, OPEN, Link, RemoteNeed

log = logging.getLogger(__name__)

THEN_NETWORK_JOIN = "network-join"


def _fmt_hours(hours: float) -> str:
    return fmt_hours(timedelta(hours=hours))


# ---- !network ---------------------------------------------------------------------------------


@command("network", help="The networks this pod is linked to. Coordinators: `network join "
         "<room>` links the pod to a network room (maybe on another server), `network leave "
         "<room>` unlinks it.",
         args=(Arg("what", optional=True), Arg("room", optional=True)),
         examples=("network", "network join #city-network:other.example",
                   "network leave #city-network:other.example"), group="Pods")
async def network(ctx: Context, rest: str) -> None:
    if ctx.is_direct:
        await ctx.reply("A pod's networks are set in its room; send this in your pod's room.")
        return
    word, _, address = rest.strip().partition(" ")
    word, address = word.lower(), address.strip()
    if not word:
        await _list(ctx)
        return
    if word not in ("join", "leave"):
        raise UsageError(f"After {ctx.config.command_prefix}network comes nothing, join or leave.")
    if not (address.startswith(("#", "!")) and ":" in address and len(address) <= 255
            and " " not in address):
        raise UsageError("Give the network room's address, like #city-network:other.example "
                         "(or its room id).")
    await (_join if word == "join" else _leave)(ctx, address)


def _find(links: list[Link], address: str) -> Link | None:
    return next((link for link in links if address in (link.address, link.network_room)), None)


async def _list(ctx: Context) -> None:
    links = await ctx.tx.network.links(ctx.room_id)
    p = ctx.config.command_prefix
    if not links:
        await ctx.reply("This pod is in no network yet. A coordinator links it with {join}",
                        join=Code(f"{p}network join #city-network:other.example"))
        return
    stored = await ctx.tx.settings.room(ctx.room_id)
    delay, urgent = net.room_delays(stored, ctx.config)
    lines = [render("**This pod's networks**")]
    lines += [render("• {address}", address=link.address) for link in links]
    lines.append(render("Needs still unmatched after {delay} ({urgent} when urgent) go there, "
                        "with only their category, urgency, zone and the pod's name.",
                        delay=_fmt_hours(delay), urgent=_fmt_hours(urgent)))
    await ctx.reply(join(lines))


async def _join(ctx: Context, address: str) -> None:
    if not await require_coordinator(ctx, "link the pod to a network"):
        return
    if _find(await ctx.tx.network.links(ctx.room_id), address) is not None:
        await ctx.reply("This pod is already linked to {address}.", address=address)
        return
    if (await pod_profile(ctx)).name is None:
        await ctx.reply("Name the pod first, so other pods know who is asking: {example}",
                        example=Code(f"{ctx.config.command_prefix}pod name Elm Street"))
        return
    # Joining is a network call: a step, made once this command is committed.
    await request_join(ctx.tx, key=f"network:{ctx.room_id}:{address}", address=address,
                       then=THEN_NETWORK_JOIN, purpose=f"joining the network room {address}",
                       now=ctx.now, pod_room=ctx.room_id, data={"address": address})
    ctx.steps_requested = True
    await ctx.reply("Joining {address}. I will say here when the pod is linked.",
                    address=address)


async def _joined(tx: Transaction, action: Action, room_id: str, now: datetime,
                  config: BotConfig) -> list[Outgoing]:
    """The bot is in the (encrypted) network room: link the pod and announce it there."""
    pod_room, address = action.params["pod_room"], action.params["data"]["address"]
    link = await tx.network.link(pod_room, room_id, address, now)
    profile = await stored_profile(tx, config, pod_room)
    delay, urgent = net.room_delays(await tx.settings.room(pod_room), config)
    return [
        announcement(link, profile, "The {name} pod has joined the network ({zones})."),
        Outgoing(render(
            "This pod is now linked to {address}. Needs still unmatched after {delay} "
            "({urgent} when urgent) go there with only their category, urgency, zone and the "
            "pod's name; other pods' needs appear here as E-numbers.", address=address,
            delay=_fmt_hours(delay), urgent=_fmt_hours(urgent)), room_id=pod_room),
    ]


async def _join_failed(tx: Transaction, action: Action, reason: str, now: datetime,
                       config: BotConfig) -> list[Outgoing]:
    return [Outgoing(render(
        "I could not join the network room {address}: {reason}. Network rooms must be "
        "end-to-end encrypted, and invite the bot if they are not open to join.",
        address=action.params["data"]["address"], reason=reason),
        room_id=action.params["pod_room"])]


FOLLOWUPS[THEN_NETWORK_JOIN] = Followup(done=_joined, failed=_join_failed)


async def _leave(ctx: Context, address: str) -> None:
    if not await require_coordinator(ctx, "take the pod out of a network"):
        return
    link = _find(await ctx.tx.network.links(ctx.room_id), address)
    if link is None:
        await ctx.reply("This pod is not linked to {address}.", address=address)
        return
    name = (await pod_profile(ctx)).name or "A"
    ctx.outgoing.append(net.to_room(link.network_room, f"The {name} pod has left the network.",
                                    net.LEFT, link.token))
    closed = await _close_for_leaving(ctx, link)
    await ctx.tx.network.unlink(ctx.room_id, link.network_room)
    if not await ctx.tx.network.pods_in(link.network_room):
        await ctx.tx.network.forget_pods(link.network_room)  # no pod of ours there any more
    await ctx.reply("This pod has left {address}: {n} of its needs there were closed, and "
                    "other pods' needs from there are no longer shown here.",
                    address=link.address, n=closed)


async def _close_for_leaving(ctx: Context, link: Link) -> int:
    """Close the pod's needs in that network, withdraw its people's offers there, and stop
    showing that network's needs; how many of the pod's own needs were closed."""
    still_linked = len(await ctx.tx.network.links(ctx.room_id)) > 1
    own = await ctx.tx.network.open_escalations(ctx.room_id)
    closes = [net.to_room(link.network_room, "A need of a pod that left the network is closed.",
                          net.CLOSE, escalation.network_id) for escalation in own]
    ctx.outgoing += closes
    ctx.outgoing += await to_my_other_pods(ctx.tx, ctx.config, ctx.now, ctx.room_id, closes)
    if not still_linked:
        for escalation in own:
            await ctx.tx.network.close_escalation(escalation.id, ctx.now)
    for need in await ctx.tx.network.open_remote_needs(ctx.room_id, link.network_room):
        if await _reached_otherwise(ctx.tx, need, besides=link.network_room):
            continue
        await ctx.tx.network.close_remote_need(need.id, ctx.now)
        for claim in await ctx.tx.network.remote_claims_on(need.id):
            if await ctx.tx.network.set_remote_claim(claim.claim, CLOSED):
                await _to_room(ctx, need, "An offer of help is withdrawn: its pod left.",
                               net.WITHDRAW, claim=claim.claim)
                await ctx.dm(claim.helper, "Your offer to help with **{label}** was withdrawn: "
                             "this pod left that network.", label=net.label(need.id))
    return len(own)


# ---- !claim E14 (from bot/commands/posts.py) --------------------------------------------------


async def claim_remote(ctx: Context, number: int) -> None:
    """Someone here offers to help with another pod's need: the claim (no name) goes back."""
    need = await ctx.tx.network.remote_need(number)
    label = net.label(number)
    if need is None or need.pod_room != ctx.room_id:
        raise UsageError(f"There is no {label} in this room.")
    link = next((link for link in await ctx.tx.network.links(ctx.room_id)
                 if link.network_room == need.network_room), None)
    if need.status != OPEN or link is None:
        await ctx.reply("**{label}** is closed.", label=label)
        return
    claims = await ctx.tx.network.remote_claims_on(need.id)
    if any(c.status in (ASKED, ACCEPTED) for c in claims):
        await ctx.reply("Someone here has already offered to help with **{label}**; I am "
                        "waiting for an answer. Thank you!", label=label)
        return
    name = (await pod_profile(ctx)).name or "A"
    claim = await ctx.tx.network.add_remote_claim(need.id, ctx.sender, ctx.now)
    await _to_room(ctx, need, f"The {name} pod offers to help with a need of the "
                   f"{need.pod_name} pod.", net.CLAIM, claim=claim.claim, pod=link.token,
                   name=name)
    await ctx.reply("Thank you! I have told the {pod} pod, whose bot will ask the person "
                    "privately. If they agree, you will both be invited to a new private room.",
                    pod=need.pod_name)


# ---- between two pods of this bot ---------------------------------------------------------------
#
# The bot does not read its own messages in a network room, so when the need of one of its pods is
# shown in another of its pods, what would travel between two bots is handled here at once, by the
# same handler, as if it came from another bot: the same checks, the same consent and the same
# introduction; the helper's id still reaches the requester's side only after the yes.


def me_as_origin(config: BotConfig) -> str:
    """How this bot names itself as the origin of what it passes between its own pods."""
    return config.matrix.user_id if config.matrix else ""


async def _to_me(ctx: Context, room_id: str, kind: str, id: str, **fields: object) -> None:
    message = net.parse(net.payload(kind, id, **fields))
    assert message is not None
    event = NetworkEvent(ctx.event_id, room_id, me_as_origin(ctx.config), "",
                         kind in net.DIRECT_TYPES, ctx.now)
    await _HANDLERS[kind](ctx, event, message)


async def _to_room(ctx: Context, need: RemoteNeed, body: str, kind: str,
                   **fields: object) -> None:
    """A message about a need shown here to the need's bot: into the network room, or, for a
    need of this bot's own (another of its pods), handled here."""
    if need.origin_bot == me_as_origin(ctx.config):
        await _to_me(ctx, need.network_room, kind, need.escalation, **fields)
    else:
        ctx.outgoing.append(net.to_room(need.network_room, body, kind, need.escalation, **fields))


async def to_bot(ctx: Context, bot: str, kind: str, id: str, **fields: object) -> None:
    """A message for one other bot only (`answer`, `helper`); handled here when it is this one."""
    if bot == me_as_origin(ctx.config):
        await _to_me(ctx, "", kind, id, **fields)
    else:
        ctx.outgoing.append(net.to_bot(bot, kind, id, **fields))


async def to_my_other_pods(tx: Transaction, config: BotConfig, now: datetime, pod_room: str,
                           sent: list[Outgoing]) -> list[Outgoing]:
    """What this bot just sent into network rooms about `pod_room`'s need (`need`, `close`),
    shown or closed in its other pods linked to those rooms, as another bot's need would be."""
    me, out = me_as_origin(config), []
    for message in sent:
        if message.network is None or message.room_id is None:
            continue
        parsed = net.parse(message.network)
        assert parsed is not None
        targets = [link for link in await tx.network.pods_in(message.room_id)
                   if link.pod_room != pod_room]
        if parsed.type == net.NEED:
            await tx.network.add_route(me, parsed.id, message.room_id, now)
            out += await _show_need(tx, config, now, targets, me, parsed)
        elif parsed.type == net.CLOSE:
            out += await _close_needs(tx, now, me, parsed, network_room=message.room_id)
    return out


# ---- network messages ---------------------------------------------------------------------------


@event_hook(NetworkEvent)
async def on_network_event(ctx: Context, event: NetworkEvent) -> None:
    me = ctx.config.matrix.user_id if ctx.config.matrix else None
    if not net.is_pod_bot(event.sender, ctx.config.network.bots, me):
        log.warning("ignored network message %s in %s: %s is not a known pod bot",
                    event.event_id, event.room_id, event.sender)
        return
    try:
        message = net.parse(event.payload)
    except net.Malformed as exc:
        log.warning("ignored malformed network message %s from %s: %s", event.event_id,
                    event.sender, exc)
        return
    if message is None:
        log.info("ignored network message %s from %s: a type this version does not know",
                 event.event_id, event.sender)
        return
    direct = message.type in net.DIRECT_TYPES
    if direct != event.is_direct or (
            not direct and not await ctx.tx.network.pods_in(event.room_id)):
        log.warning("ignored network message %s from %s: a %s does not belong in %s",
                    event.event_id, event.sender, message.type, event.room_id)
        return
    await _HANDLERS[message.type](ctx, event, message)


def _ignored(event: NetworkEvent, why: str) -> None:
    log.warning("ignored network message %s from %s: %s", event.event_id, event.sender, why)


# The most pods of one other bot that this bot answers in a room in an hour (a bot that keeps
# announcing new pods is listed, not answered).
ANSWERS_PER_HOUR = 10


async def _on_pod(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Another pod joined or changed its name or zones: its zones are offered at the front door
    (bot/front_door.py). A pod new to this bot, announced by its bot of its own accord (not
    itself an answer), is answered once with this bot's pods in that room, so that a pod that
    joined later learns of those that were there before. Answers are never answered: no loop."""
    assert message.name is not None
    room, bot = event.room_id, event.sender
    state = await ctx.tx.network.pod_state(room, bot, message.id)
    if state == CLOSED:
        _ignored(event, "a pod that announced it left (replayed)")
        return
    await ctx.tx.network.note_pod(room, bot, message.id, message.name, message.zones, ctx.now)
    log.info("a pod announced itself in %s (from %s)", room, bot)
    if state is not None or message.reply:
        return
    if await ctx.tx.network.answered_since(room, bot, ctx.now - net.HOUR) >= ANSWERS_PER_HOUR:
        _ignored(event, "not answered: that bot announced too many new pods this hour")
        return
    if not await ctx.tx.network.pod_answered(room, bot, message.id, ctx.now):
        return
    for link in await ctx.tx.network.pods_in(room):
        ctx.outgoing.append(announcement(link, await pod_profile(ctx, link.pod_room),
                                         "The {name} pod is in this network too ({zones}).",
                                         reply=True))


async def _on_left(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Another pod left the network: its zones are no longer offered."""
    if not await ctx.tx.network.pod_left(event.room_id, event.sender, message.id, ctx.now):
        _ignored(event, "a pod that is not listed here left (replayed)")
        return
    log.info("a pod left %s (from %s)", event.room_id, event.sender)


async def _on_need(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Another pod's need: shown in every pod here linked to that network, once, however many
    networks bring it (each one that does is recorded: it closes here when the last one does)."""
    assert message.pod and message.name and message.category and message.urgency is not None
    recent = await ctx.tx.network.received_since(event.sender, message.pod, ctx.now - net.HOUR)
    if (not await ctx.tx.network.remote_needs_of(event.sender, message.id)
            and not net.room_left(recent, ctx.now, ctx.config.network.escalations_per_hour)):
        _ignored(event, "its pod is over the hourly limit of escalations")
        return
    if not await ctx.tx.network.add_route(event.sender, message.id, event.room_id, ctx.now):
        _ignored(event, "a need already received (replayed)")
        return
    ctx.outgoing += await _show_need(ctx.tx, ctx.config, ctx.now,
                                     await ctx.tx.network.pods_in(event.room_id), event.sender,
                                     message)


async def _show_need(tx: Transaction, config: BotConfig, now: datetime, targets: list[Link],
                     origin_bot: str, message: net.NetworkMessage) -> list[Outgoing]:
    """A need (of another bot's pod, or of another pod of this bot's) shown in each of `targets`
    once, with the pod's open offers of its category."""
    assert message.pod and message.name and message.category and message.urgency is not None
    p, out = config.command_prefix, []
    for link in targets:
        need = await tx.network.add_remote_need(
            pod_room=link.pod_room, network_room=link.network_room, origin_bot=origin_bot,
            origin_pod=message.pod, escalation=message.id, pod_name=message.name,
            category=message.category, urgency=message.urgency, zone=message.zone, now=now)
        if need is None:
            continue
        offers = await tx.posts.list(link.pod_room, kind=PostKind.OFFER,
                                     category=message.category, limit=3)
        template = "{need}: reply {claim}"
        if offers:
            template += "\n\nIt may match this pod's open {category} offers: {offers}."
        out.append(Outgoing(render(template, need=net.need_text(
            need.pod_name, need.category, need.urgency, need.zone),
            claim=Code(f"{p}claim {net.label(need.id)}"), category=need.category.value,
            offers=", ".join(f"#{offer.number}" for offer in offers)), room_id=link.pod_room))
    return out


async def _on_claim(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Someone in another pod offers to help with this pod's need: ask the requester."""
    assert message.claim and message.name
    escalation = await ctx.tx.network.escalation_sent_as(message.id)
    if escalation is None:
        return  # another pod's need (or an earlier round of one of ours): its own bot answers
    if not await ctx.tx.network.add_claim(message.claim, escalation.id, event.sender, ctx.now):
        _ignored(event, "a claim already received (replayed)")
        return
    post = await ctx.tx.posts.by_id(escalation.post_id)
    if (escalation.status != OPEN or post.status is not PostStatus.OPEN or not post.author
            or await ctx.tx.privacy.asked_introductions(post_id=post.id)):
        await ctx.tx.network.set_claim(message.claim, DECLINED)
        await to_bot(ctx, event.sender, net.ANSWER, escalation.id, claim=message.claim,
                     yes=False)
        return
    intro_id = await intake.ask_consent(ctx, post, "", helper_from=message.name)
    await ctx.tx.network.set_claim(message.claim, ASKED, intro_id=intro_id)


async def _on_answer(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """The requester in the other pod answered our helper's claim (told by their bot only)."""
    assert message.claim
    claim = await ctx.tx.network.remote_claim(message.claim)
    need = await ctx.tx.network.remote_need(claim.remote_need) if claim else None
    if claim is None or need is None or need.origin_bot != event.sender:
        _ignored(event, "an answer to no claim of ours from that bot")
        return
    if not await ctx.tx.network.set_remote_claim(claim.claim, ACCEPTED if message.yes
                                                 else DECLINED):
        _ignored(event, "a claim answered already (replayed)")
        return
    label = net.label(need.id)
    if not message.yes:
        await ctx.dm(claim.helper, "Thank you for offering to help with **{label}** ({pod} pod). "
                     "The person preferred not to go ahead this time.", label=label,
                     pod=need.pod_name)
        return
    await ctx.dm(claim.helper, "The person behind **{label}** ({pod} pod) said yes. {bot} will "
                 "invite you both to a new private room; accept the invite to meet them there.",
                 label=label, pod=need.pod_name, bot=event.sender or "I")
    await ctx.send(need.pod_room, "**{label}** is being handled. Thank you!", label=label)
    # Only now, and only to the bot that will invite them, the helper's id.
    await to_bot(ctx, event.sender, net.HELPER, need.escalation, claim=claim.claim,
                 person=claim.helper)


async def _on_helper(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """After the requester's yes, the helper's id: introduce the two in a new room."""
    assert message.claim and message.person
    claim = await ctx.tx.network.claim(message.claim)
    intro = (await ctx.tx.privacy.introduction(claim.intro_id)
             if claim and claim.intro_id is not None else None)
    if claim is None or claim.bot != event.sender or claim.status != ACCEPTED or intro is None:
        _ignored(event, "a helper for no accepted claim from that bot")
        return
    if intro.helper:
        _ignored(event, "a helper already received (replayed)")
        return
    post = await ctx.tx.posts.by_id(intro.post_id)
    await ctx.tx.privacy.set_introduction_helper(intro.id, message.person, ctx.now)
    await ctx.tx.posts.set_status(post, PostStatus.CLAIMED, ctx.now, claimed_by=message.person)
    await intake.introduce(ctx, intro.id, post, message.person)


async def _on_close(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Another pod's need was met or withdrawn, or its pod left that network: closed here too,
    where no other network still brings it."""
    ctx.outgoing += await _close_needs(ctx.tx, ctx.now, event.sender, message, event.room_id)


async def _reached_otherwise(tx: Transaction, need: RemoteNeed, besides: str | None) -> bool:
    """Whether another network room linked to the need's pod (not `besides`) still carries the
    need (its pod left one network but is in another with this one): then it stays open, and
    claims on it go through that room."""
    room = await tx.network.open_route(need, besides=besides)
    if room is not None and room != need.network_room:
        await tx.network.reroute_remote_need(need.id, room)
    return room is not None


async def _close_needs(tx: Transaction, now: datetime, origin_bot: str,
                       message: net.NetworkMessage, network_room: str) -> list[Outgoing]:
    """The need's bot closed it in `network_room`: close it wherever it is shown here and no
    other network linked to the pod still brings it; tell the pod and whoever offered. An offer
    the requester accepted (`message.claim`) is left to its answer, which may arrive after this."""
    await tx.network.close_route(origin_bot, message.id, network_room, now)
    out = []
    for need in await tx.network.remote_needs_of(origin_bot, message.id):
        if (need.status != OPEN or await _reached_otherwise(tx, need, besides=None)
                or not await tx.network.close_remote_need(need.id, now)):
            continue
        label, going_on = net.label(need.id), message.claim
        claims = await tx.network.remote_claims_on(need.id)
        for claim in claims:
            if claim.claim != going_on and await tx.network.set_remote_claim(claim.claim, CLOSED):
                out.append(Outgoing(render(
                    "**{label}** ({pod} pod) was met or withdrawn before the person answered. "
                    "Thank you for offering!", label=label, pod=need.pod_name),
                    user_id=claim.helper))
        if not any(claim.status == ACCEPTED or claim.claim == going_on for claim in claims):
            out.append(Outgoing(render("**{label}** ({pod} pod) is closed: it was met or "
                                       "withdrawn.", label=label, pod=need.pod_name),
                                room_id=need.pod_room))
    return out


async def _on_withdraw(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """A pod that left withdrew its person's offer on one of this pod's needs."""
    assert message.claim
    claim = await ctx.tx.network.claim(message.claim)
    if claim is None or claim.bot != event.sender or claim.status != ASKED:
        return
    await ctx.tx.network.set_claim(claim.claim, DECLINED)
    intro = (await ctx.tx.privacy.introduction(claim.intro_id)
             if claim.intro_id is not None else None)
    if intro is None or intro.status != "asked":
        return
    await ctx.tx.privacy.set_introduction(intro.id, "declined", ctx.now)
    post = await ctx.tx.posts.by_id(intro.post_id)
    await ctx.dm(intro.requester, "The offer of help for your request **#{number}** was "
                 "withdrawn: the helper's pod left the network. Your request stays open.",
                 number=post.number)


# ---- phone-tree alerts forwarded to the network's pods --------------------------------------


def _me(ctx: Context) -> str | None:
    return ctx.config.matrix.user_id if ctx.config.matrix else None


async def forward_alert(ctx: Context, text: str, urgent: bool) -> None:
    """`!alert [urgent] network <text>` from a coordinator (bot/commands/tree.py checked who and
    what): the alert goes to every network the pod is linked to, as its text, urgency and the
    pod's name (never the caller), to this bot's other pods there, and to the pod's own tree."""
    links = await ctx.tx.network.links(ctx.room_id)
    name = (await pod_profile(ctx)).name or "A"
    if not await _may_forward(ctx, links, name, text, urgent):
        return
    token = await ctx.tx.network.add_forward(ctx.room_id, urgent, ctx.now)
    for link in links:
        ctx.outgoing.append(net.to_room(
            link.network_room, net.alert_text(name, text, urgent), net.ALERT, token,
            pod=link.token, name=name, urgent=urgent, text=text))
    mine = await _to_my_other_pods(ctx, links, name, text, urgent, token)
    started = await start_alert(ctx.tx, ctx.config, ctx.room_id, ctx.sender, text, urgent,
                                ctx.event_id, ctx.now)
    sent = render("Forwarded to the pods of {networks}{mine}: each pod's bot posts it there and "
                  "calls that pod's phone tree (without your name).",
                  networks=", ".join(link.address for link in links),
                  mine=f" (and {mine} more {'pod' if mine == 1 else 'pods'} of mine)"
                  if mine else "")
    if started is None:
        here = render("Nobody else is on this pod's phone tree, so nobody here was called.")
    else:
        ctx.schedule_changed = True
        here = await started_text(ctx, *started)
    await ctx.reply(join([sent, here]))


async def _may_forward(ctx: Context, links: list[Link], name: str, text: str,
                       urgent: bool) -> bool:
    """A pod in no network, over its hourly limit, or with a text too big for the format is
    told so, and nothing is sent (not even to its own tree: the coordinator chose the network)."""
    p = ctx.config.command_prefix
    if not links:
        await ctx.reply("This pod is in no network, so there is no pod to forward the alert to; "
                        "nothing was sent. Link it first with {join}, or send {alert} to call "
                        "this pod's own tree.",
                        join=Code(f"{p}network join #city-network:other.example"),
                        alert=Code(f"{p}alert <text>"))
        return False
    per_hour = ctx.config.network.alerts_per_hour
    recent = await ctx.tx.network.forwarded_since(ctx.room_id, ctx.now - net.HOUR)
    if not net.room_left(recent, ctx.now, per_hour):
        again = net.next_room(recent, ctx.now, per_hour) or ctx.now
        await ctx.reply("This pod has forwarded {n} alerts to its networks in the last hour, the "
                        "most it may; nothing was sent. It may forward again in {wait}; {alert} "
                        "still calls this pod's own tree.", n=per_hour,
                        wait=fmt_span(again - ctx.now), alert=Code(f"{p}alert <text>"))
        return False
    longest = "0" * 64  # the longest token the format allows, for the alert's and the pod's
    if not net.fits(net.ALERT, longest, pod=longest, name=name, urgent=urgent, text=text):
        await ctx.reply("That alert is too long to forward (emoji and other symbols count as "
                        "several letters); nothing was sent. Shorten it and send it again.")
        return False
    return True


async def _to_my_other_pods(ctx: Context, links: list[Link], name: str, text: str,
                            urgent: bool, token: str) -> int:
    """The bot ignores its own messages in the network rooms, so its other pods there hear the
    alert here, each once however many of the networks it shares; how many did."""
    mine = 0
    for link in links:
        for other in await ctx.tx.network.pods_in(link.network_room):
            if other.pod_room != ctx.room_id:
                mine += await _receive_alert(ctx, other, link.token, name, text, urgent, token,
                                             origin_bot=_me(ctx) or "", event_id=ctx.event_id,
                                             skip=ctx.sender)
    return mine


def _pod_caller(ctx: Context, pod_room: str) -> str | None:
    """Who stands in for the caller of an alert another pod forwarded here: the pod's
    coordinator with the highest power level (the first by id among equals), so silence and the
    reports reach someone who can act in this pod; None when the pod has no coordinator."""
    me, level = _me(ctx), ctx.config.bot.coordinator_power_level
    ranked = sorted((-ctx.transport.power_level(pod_room, person), person)
                    for person in ctx.transport.members(pod_room) if person != me)
    return next((person for power, person in ranked if -power >= level), None)


async def _receive_alert(ctx: Context, link: Link, origin_pod: str, name: str, text: str,
                         urgent: bool, token: str, *, origin_bot: str, event_id: str,
                         skip: str | None = None) -> bool:
    """Another pod's alert, in one pod here: posted in its room and its tree called, once
    (`skip`: who forwarded it, when that pod is this bot's too, is not called about it)."""
    if not await ctx.tx.network.add_remote_alert(
            origin_bot=origin_bot, token=token, pod_room=link.pod_room,
            network_room=link.network_room, origin_pod=origin_pod, pod_name=name, now=ctx.now):
        return False
    caller = _pod_caller(ctx, link.pod_room)
    started = await start_alert(ctx.tx, ctx.config, link.pod_room, caller, text, urgent,
                                event_id, ctx.now, origin=name, skip=skip)
    shown = render("🚨 {alert}", alert=net.alert_text(name, text, urgent))
    if started is None:
        what = render("Nobody is on this pod's phone tree, so nobody was called. Join it with "
                      "{join}", join=Code(f"{ctx.config.command_prefix}tree join"))
    else:
        ctx.schedule_changed = True
        calls, held = started
        what = render("Calling this pod's phone tree: {n}{held}. {who}",
                      n=f"{calls} {'person' if calls == 1 else 'people'}",
                      held=f" ({held} when their hours begin)" if held else "",
                      who=f"{caller} hears of anyone who stays silent." if caller else
                      "This pod has no coordinator to hear of anyone who stays silent.")
    await ctx.send(link.pod_room, join([shown, what]))
    return True


async def _on_alert(ctx: Context, event: NetworkEvent, message: net.NetworkMessage) -> None:
    """Another pod's alert: posted, and the tree called, in every pod here linked to that
    network, once (by the alert's token), within the other pod's hourly limit."""
    assert message.pod and message.name and message.text and message.urgent is not None
    had = await ctx.tx.network.alert_pods(event.sender, message.id)
    targets = [link for link in await ctx.tx.network.pods_in(event.room_id)
               if link.pod_room not in had]
    if not targets:
        _ignored(event, "an alert already received (replayed)")
        return
    recent = await ctx.tx.network.alerts_received_since(event.sender, message.pod, message.id,
                                                        ctx.now - net.HOUR)
    if not had and not net.room_left(recent, ctx.now, ctx.config.network.alerts_per_hour):
        _ignored(event, "its pod is over the hourly limit of alerts")
        return
    for link in targets:
        await _receive_alert(ctx, link, message.pod, message.name, message.text, message.urgent,
                             message.id, origin_bot=event.sender, event_id=event.event_id)


_HANDLERS: dict[str, Callable[[Context, NetworkEvent, net.NetworkMessage], Awaitable[None]]] = {
    net.POD: _on_pod, net.NEED: _on_need, net.CLAIM: _on_claim, net.ANSWER: _on_answer,
    net.HELPER: _on_helper, net.CLOSE: _on_close, net.WITHDRAW: _on_withdraw,
    net.ALERT: _on_alert, net.LEFT: _on_left,
}
