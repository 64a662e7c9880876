"""Split alerts and `!pod split` (rules in `bot.split_rules`).

When someone joins or leaves a pod room (a `Membership` event) its joined size is compared with
the room's `split_size`; the first time it reaches it the coordinators get a DM, and a room note
remembers that (so a restart does not repeat it) until the pod is below the size again.

`!pod split` walks a coordinator through a split in their DM (a `@flow` conversation, stored like
a private request's). On yes, the new pod room is a room step: nothing moves in that command.
When the room exists, one transaction records it, moves the chosen open posts and active shifts
(with their open stand-in requests) into it under new numbers, moves the chosen people's places on
the phone tree to its tree, gives it the old pod's settings with its own name and zones, and
queues the notices; so a crash at any point moves everything once or nothing. Alerts already sent
are not moved: they finish in the old pod, calling whom they called, and escalating a silent
member to the backup they had when the alert was sent (each call keeps it: bot/store/tree.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot import pods, room_settings
from bot import split_rules as rules
from bot.actions import FOLLOWUPS, Followup
from bot.commands import event_hook, flow, is_coordinator, require_coordinator
from bot.commands.intake import _text, is_pod_room, say
from bot.commands.pods import SETTING_POD_NAME, SETTING_ZONES, pod_members, pod_profile
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, Rendered, join, render
from bot.messages import Membership
from bot.models import Post, PostStatus
from bot.post_text import post_line
from bot.shift_models import Shift, StandinRequest
from bot.storage import Transaction
from bot.store.actions import Action

FLOW_SPLIT = "split"
THEN_SPLIT = "split"
SETTING_SPLIT_SIZE = "split_size"
# A room note (no personal data): the coordinators were told the pod reached its split size.
NOTE_SPLIT_ALERTED = "split-alerted"
# The highest level a coordinator is given in the new room: the old room's creator (unlimited
# power from room version 12) becomes an ordinary admin there.
MAX_GRANTED_LEVEL = 100


def _validate_split_size(text: str) -> str:
    try:
        return str(rules.parse_split_size(text))
    except ValueError as exc:
        raise room_settings.SettingError(str(exc)) from None


room_settings.register(room_settings.Setting(
    key=SETTING_SPLIT_SIZE,
    help="When this many people have joined the pod, its coordinators are asked to split it.",
    default=lambda config: str(rules.DEFAULT_SPLIT_SIZE),
    validate=_validate_split_size,
    example="30",
))


def _room_people(ctx: Context, room_id: str) -> list[str]:
    """Who has joined this one room, the bot left out: the people a split can invite (a new
    room is on one network, so a pod's rooms on other networks are not offered)."""
    own = ctx.config.matrix.user_id if ctx.config.matrix else None
    return [person for person in ctx.transport.members(room_id) if person != own]


def _coordinators(ctx: Context, room_id: str) -> list[str]:
    return [person for person in _room_people(ctx, room_id)
            if is_coordinator(ctx, person, room_id)]


# ---- the alert ------------------------------------------------------------------------------


@event_hook(Membership)
async def on_membership(ctx: Context, event: Membership) -> None:
    if ctx.is_direct or not await is_pod_room(ctx.tx, ctx.room_id):
        return
    stored = await ctx.tx.settings.room(ctx.room_id)
    split_size = int(room_settings.value(SETTING_SPLIT_SIZE, stored, ctx.config))
    size = len(pod_members(ctx))
    alerted = await ctx.tx.delivery.has_note(ctx.room_id, NOTE_SPLIT_ALERTED)
    decision = rules.size_alert(size, split_size, alerted)
    if decision is rules.Alert.REARM:
        await ctx.tx.delivery.drop_note(ctx.room_id, NOTE_SPLIT_ALERTED)
        return
    if decision is not rules.Alert.SEND:
        return
    await ctx.tx.delivery.note_once(ctx.room_id, NOTE_SPLIT_ALERTED, ctx.now)
    profile = await pod_profile(ctx)
    p = ctx.config.command_prefix
    for coordinator in _coordinators(ctx, ctx.room_id):
        await ctx.dm(coordinator,
                     "**{pod}** now has {size} people (its split size is {split_size}). Pods "
                     "work best small: "
                     "consider splitting it. Send {split} in the pod room and I will walk you "
                     "through it (nobody is removed; the people you choose are invited to a new "
                     "room). To be asked at another size: {setting}.",
                     pod=profile.name or "Your pod", size=size, split_size=split_size,
                     split=Code(f"{p}pod split"),
                     setting=Code(f"{p}settings {SETTING_SPLIT_SIZE} 30"))


# ---- the walk-through -----------------------------------------------------------------------


async def _view(ctx: Context, pod_room: str) -> rules.PodView:
    profile = await pod_profile(ctx, pod_room)
    open_posts = await ctx.tx.posts.list(pod_room, statuses=(PostStatus.OPEN,),
                                         limit=rules.MAX_MOVED)
    return rules.PodView(label=profile.label, members=_room_people(ctx, pod_room),
                         coordinators=_coordinators(ctx, pod_room), posts=open_posts,
                         shifts=await ctx.tx.shifts.list(pod_room),
                         tree=[m.person for m in await ctx.tx.tree.members(pod_room)],
                         standins=await ctx.tx.shifts.open_standins(pod_room))


async def start(ctx: Context, value: str) -> None:
    """`!pod split`, in the pod room: the conversation goes on in the coordinator's DM."""
    if not await require_coordinator(ctx, "split the pod"):
        return
    turn = rules.start(ctx.room_id, await _view(ctx, ctx.room_id))
    # Where the conversation is: the coordinator's direct chat once it exists.
    where = await ctx.tx.delivery.get_dm_room(ctx.sender) or ctx.room_id
    await ctx.tx.privacy.save_intake(ctx.sender, where, FLOW_SPLIT,
                                     turn.state.model_dump(mode="json"), ctx.now)
    await ctx.dm(ctx.sender, _text(turn.prompt))
    await ctx.reply("I have sent you a direct message to walk you through the split.")


@flow(FLOW_SPLIT)
async def split_flow(ctx: Context, state: dict, text: str) -> None:
    current = rules.SplitState.model_validate(state)
    if not is_coordinator(ctx, ctx.sender, current.pod_room):
        await ctx.tx.privacy.end_intake(ctx.sender)
        await say(ctx, "Only a coordinator of the pod can split it, and you no longer are one "
                       "there. Nothing was split.")
        return
    view = await _view(ctx, current.pod_room)
    turn = rules.advance(current, text, view)
    if turn.outcome is rules.Outcome.ASK:
        await ctx.tx.privacy.save_intake(ctx.sender, ctx.room_id, FLOW_SPLIT,
                                         turn.state.model_dump(mode="json"), ctx.now)
    else:
        await ctx.tx.privacy.end_intake(ctx.sender)
    if turn.outcome is rules.Outcome.CONFIRMED:
        await _request_split(ctx, turn.state, view)
    await say(ctx, turn.prompt)


async def _request_split(ctx: Context, state: rules.SplitState, view: rules.PodView) -> None:
    """The room step; what moves is chosen now and moved when the room exists."""
    pod_room = state.pod_room
    posts = rules.moving_posts(view.posts, state.people, state.zones)
    shifts = rules.moving_shifts(view.shifts, state.people, state.zones)
    await ctx.request_room(
        key=f"split:{pod_room}:{ctx.event_id}", name=state.name or "", then=THEN_SPLIT,
        invitees=rules.invitees(state, view), purpose=f"the new pod {state.name}",
        pod_room=pod_room,
        power_levels={person: min(ctx.transport.power_level(pod_room, person),
                                  MAX_GRANTED_LEVEL) for person in view.coordinators},
        data={"by": ctx.sender, "name": state.name, "zones": list(state.zones),
              "people": list(state.people),
              "old_label": view.label, "posts": [post.id for post in posts],
              "shifts": [shift.id for shift in shifts]},
    )


# ---- when the room exists -------------------------------------------------------------------


async def _split_done(tx: Transaction, action: Action, room_id: str, now: datetime,
                      config: BotConfig) -> list[Outgoing]:
    data, old_room = action.params["data"], action.params["pod_room"]
    await _copy_settings(tx, old_room, room_id, data)
    # What was chosen and is still there and open: a post claimed (or a shift cancelled) since
    # the confirmation stays, and one already moved is not moved twice.
    chosen_posts, chosen_shifts = set(data["posts"]), set(data["shifts"])
    still_open = await tx.posts.list(old_room, statuses=(PostStatus.OPEN,),
                                     limit=rules.MAX_MOVED)
    moved_posts: list[tuple[int, Post]] = []
    for post in sorted(still_open, key=lambda post: post.number):
        if post.id in chosen_posts:
            moved_posts.append((post.number, await tx.posts.move(post, room_id, now)))
    moved_shifts: list[tuple[int, Shift]] = []
    for shift in await tx.shifts.list(old_room):
        if shift.id in chosen_shifts:
            moved_shifts.append((shift.number, await tx.shifts.move(shift, room_id, now)))
    # A stand-in request goes with its shift (its `!cover` is then answered in the new room).
    moved_standins: list[tuple[int, StandinRequest]] = []
    for request in rules.moving_standins(await tx.shifts.open_standins(old_room),
                                         [shift.id for _, shift in moved_shifts]):
        moved_standins.append((request.number,
                               await tx.shifts.move_standin(request, room_id, now)))
    moved = _Moved(moved_posts, moved_shifts, moved_standins,
                   {shift.id: shift for _, shift in moved_shifts})
    # Before an upgrade a waiting split did not record its people: then the tree stays.
    on_tree, cleared = await _move_tree(tx, old_room, room_id, data.get("people", []),
                                        action.params["invitees"])
    p = config.command_prefix
    new_room_notice = join([
        render("Welcome to **{name}**, a new pod split from **{old}**. Its coordinators are "
               "those of {old}. Send {help} to see what I can do.",
               name=data["name"], old=data["old_label"], help=Code(f"{p}help")),
        *_moved_lines(moved, "Moved here from {old}, with new numbers:", data["old_label"]),
        *_tree_line(on_tree, "{n} moved to this pod's phone tree, with their hours: {alert} "
                    "here calls them.", p, data["name"]),
    ])
    invited = len(action.params["invitees"])
    old_room_notice = join([
        render("**{name}** split off from this pod: {n} people were invited to its new room. "
               "Nobody was removed from this one.", name=data["name"], n=invited),
        *_moved_lines(moved, "Moved to {old}, with new numbers there:", data["name"]),
        *_tree_line(on_tree, "{n} moved to the phone tree of **{name}**: {alert} here no "
                    "longer calls them (they can {join} here again too).", p, data["name"]),
    ])
    out = [Outgoing(new_room_notice, room_id=room_id), Outgoing(old_room_notice, room_id=old_room)]
    out += _tell_authors(moved_posts, data["name"])
    out += [Outgoing(render(
        "**Phone tree:** your place on it moved to the new pod **{name}**, with your hours. "
        "Your backup, {backup}, was not invited there, so I cleared it: please name someone "
        "from {name} with {usage} in its room.", name=data["name"], backup=backup,
        usage=Code(f"{p}tree backup @person")), user_id=person) for person, backup in cleared]
    return out


async def _move_tree(tx: Transaction, old_room: str, new_room: str, people: list[str],
                     invitees: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """The chosen people's places on the phone tree go to the new pod's: (how many, and
    (member, backup) for each backup cleared because it was not invited to the new room)."""
    before = {m.person: m.backup for m in await tx.tree.members(old_room)}
    moves = rules.tree_moves(before.items(), people, invitees)
    moved = await tx.tree.move(old_room, new_room, [person for person, _ in moves])
    cleared = []
    for person, keeps in moves:
        backup = before[person]
        if not keeps and backup is not None:
            await tx.tree.set_backup(new_room, person, None)
            cleared.append((person, backup))
    return len(moved), cleared


def _tree_line(n: int, text: str, p: str, name: str) -> list[Rendered]:
    if not n:
        return []
    return [render(text, n="1 phone-tree member" if n == 1 else f"{n} phone-tree members",
                   alert=Code(f"{p}alert"), join=Code(f"{p}tree join"), name=name)]


async def _copy_settings(tx: Transaction, old_room: str, new_room: str, data: dict) -> None:
    """The new pod keeps the old one's settings (its time zone above all: shift times are read
    in it), with its own name and zones."""
    for key, value in (await tx.settings.room(old_room)).items():
        await tx.settings.set(new_room, key, value)
    await tx.settings.set(new_room, SETTING_POD_NAME, data["name"])
    await tx.settings.set(new_room, SETTING_ZONES, pods.zones_text(tuple(data["zones"]))
                          if data["zones"] else None)


@dataclass(frozen=True)
class _Moved:
    posts: list[tuple[int, Post]]  # (old number, the post moved)
    shifts: list[tuple[int, Shift]]
    standins: list[tuple[int, StandinRequest]]
    shift_by_id: dict[int, Shift]


def _moved_lines(moved: _Moved, heading: str, pod: str) -> list[Rendered]:
    if not moved.posts and not moved.shifts:
        return [render("No needs, offers or shifts moved.")]
    lines = [render(heading, old=pod)]
    lines += [join([post_line(post), render(" (was #{old})", old=old)], separator="")
              for old, post in moved.posts]
    lines += [render("**{label}** {title} (was S{old})", label=shift.label, title=shift.title,
                     old=old) for old, shift in moved.shifts]
    # By number only: who asked is in the request's own message, not repeated here.
    lines += [render("Stand-in request **R{new}** for {shift} (was R{old})", new=request.number,
                     shift=moved.shift_by_id[request.shift_id].label, old=old)
              for old, request in moved.standins]
    return lines


def _tell_authors(posts: list[tuple[int, Post]], name: str) -> list[Outgoing]:
    """Each poster, privately: an anonymous requester too, who alone knows the request is theirs."""
    return [Outgoing(render("Your {kind} #{old} moved to the new pod **{name}**, where it is "
                            "#{new}: use that number from now on.", kind=post.kind.value,
                            old=old, name=name, new=post.number), user_id=post.author)
            for old, post in posts if post.author]


async def _split_failed(tx: Transaction, action: Action, reason: str, now: datetime,
                        config: BotConfig) -> list[Outgoing]:
    data = action.params["data"]
    return [Outgoing(render("I could not make the room for **{name}** ({reason}), so nothing "
                            "moved and nobody was invited. You can start again with {split}.",
                            name=data["name"], reason=reason,
                            split=Code(f"{config.command_prefix}pod split")),
                     user_id=data["by"])]


FOLLOWUPS[THEN_SPLIT] = Followup(done=_split_done, failed=_split_failed)
