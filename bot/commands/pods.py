"""`!pod`: what the pod is (name, size, zones, networks, open needs and shifts), and naming it.

`!pod name <name>`, `!pod zones <a, b>` and `!pod split` (bot/commands/split.py) are for
coordinators.
"""

from __future__ import annotations

from collections.abc import Callable

from bot import pod_network as net
from bot import pods, room_settings
from bot.commands import Arg, UsageError, command, require_coordinator
from bot.config import BotConfig
from bot.context import Context, Outgoing
from bot.formatting import Code, join, render
from bot.models import PostKind
from bot.storage import Transaction
from bot.store.network import Link

SETTING_POD_NAME = "pod_name"
SETTING_ZONES = "zones"


def _setting_value(check: Callable[[str], object], text: str) -> str:
    try:
        value = check(text)
    except pods.PodRuleError as exc:
        raise room_settings.SettingError(str(exc)) from None
    return pods.zones_text(value) if isinstance(value, tuple) else str(value)


room_settings.register(room_settings.Setting(
    key=SETTING_POD_NAME,
    help="The pod's name, shown to other pods in its networks (or none: the config's name).",
    default=lambda config: pods.NONE,
    validate=lambda text: pods.NONE if text.strip().lower() == pods.NONE
    else _setting_value(pods.clean_name, text),
    example="Elm Street",
))
room_settings.register(room_settings.Setting(
    key=SETTING_ZONES,
    help="The pod's zones: coarse areas, never addresses, comma-separated (or none).",
    default=lambda config: pods.NONE,
    validate=lambda text: _setting_value(pods.parse_zones, text),
    example="north, riverside",
))


async def pod_profile(ctx: Context, room_id: str | None = None) -> pods.PodProfile:
    return await stored_profile(ctx.tx, ctx.config, room_id or ctx.room_id)


async def stored_profile(tx: Transaction, config: BotConfig, room_id: str) -> pods.PodProfile:
    return pods.profile(room_id, await tx.settings.room(room_id), config)


def announcement(link: Link, profile: pods.PodProfile, said: str, *,
                 reply: bool = False) -> Outgoing:
    """The pod's `pod` message in one network room it is linked to: `said` (with {name} and
    {zones}) for people reading along; `reply` for an answer to a pod new to this bot."""
    name = profile.name or "A"
    return net.to_room(link.network_room, said.format(
        name=name, zones=", ".join(profile.zones) or "no zones"), net.POD, link.token,
        name=name, zones=list(profile.zones), reply=True if reply else None)


async def reannounce(ctx: Context) -> None:
    """The pod's name or zones changed: tell each network it is linked to (a pod without a
    name any more keeps the last one there)."""
    profile = await pod_profile(ctx)
    if profile.name is None:
        return
    for link in await ctx.tx.network.links(ctx.room_id):
        ctx.outgoing.append(announcement(link, profile, "The {name} pod's details changed "
                                         "({zones})."))


def pod_members(ctx: Context, room_id: str | None = None) -> list[str]:
    """The people in the pod's rooms on every network, the bot itself left out."""
    own = {ctx.config.matrix.user_id} if ctx.config.matrix else set()
    people: set[str] = set()
    for room in ctx.config.pod_rooms(room_id or ctx.room_id):
        people.update(person for person in ctx.transport.members(room) if person not in own)
    return sorted(people)


@command("pod", help="What this pod is: its name, size, zones, networks, open needs and shifts. "
         "Coordinators: `pod name <name>`, `pod zones <a, b>`, `pod split`.",
         args=(Arg("what", optional=True), Arg("value", optional=True, many=True)),
         examples=("pod", "pod name Elm Street", "pod zones north, riverside", "pod zones none", "pod split"),
         group="Pods")
async def pod(ctx: Context, rest: str) -> None:
    if ctx.is_direct:
        await ctx.reply("A pod is a group room; send this in your pod's room.")
        return
    word, _, value = rest.strip().partition(" ")
    word = word.lower()
    if not word:
        await _summary(ctx)
        return
    handler = _SUBCOMMANDS.get(word)
    if handler is None:
        raise UsageError(f"After {ctx.config.command_prefix}pod comes nothing, or one of: "
                         f"{', '.join(sorted(_SUBCOMMANDS))}.")
    await handler(ctx, value.strip())


async def _set(ctx: Context, key: str, value: str, action: str) -> str | None:
    if not await require_coordinator(ctx, action):
        return None
    try:
        stored = room_settings.validate(key, value)
    except room_settings.SettingError as exc:
        raise UsageError(str(exc)) from None
    await ctx.tx.settings.set(ctx.room_id, key, None if stored == pods.NONE else stored)
    await reannounce(ctx)
    return stored


async def _name(ctx: Context, value: str) -> None:
    if not value:
        raise UsageError("Give the pod a name, like Elm Street.")
    name = await _set(ctx, SETTING_POD_NAME, value, "name the pod")
    if name is not None:
        await ctx.reply("This pod is now called **{name}**.", name=name)


async def _zones(ctx: Context, value: str) -> None:
    if not value:
        profile = await pod_profile(ctx)
        await ctx.reply("This pod's zones: **{zones}**. Coordinators change them with {example}",
                        zones=pods.zones_text(profile.zones),
                        example=Code(f"{ctx.config.command_prefix}pod zones north, riverside"))
        return
    zones = await _set(ctx, SETTING_ZONES, value, "change the pod's zones")
    if zones is None:
        return
    if zones == pods.NONE:
        await ctx.reply("This pod has no zones now; its posts are counted for the pod as a whole.")
        return
    await ctx.reply("This pod's zones are now **{zones}**. A post that names one is counted in it, "
                    "and private requests are asked which one.", zones=zones)


async def _split(ctx: Context, value: str) -> None:
    from bot.commands.split import start  # imported here: the split builds on this module

    await start(ctx, value)


_SUBCOMMANDS = {"name": _name, "zones": _zones, "split": _split}


async def _summary(ctx: Context) -> None:
    profile = await pod_profile(ctx)
    rooms = ctx.config.pod_rooms(ctx.room_id)
    counts = await ctx.tx.posts.open_counts(rooms)
    shifts = [shift for room in rooms for shift in await ctx.tx.shifts.list(room)]
    p = ctx.config.command_prefix
    size = len(pod_members(ctx))
    lines = [
        render("**{name}**", name=profile.name or "This pod (no name yet)"),
        render("Size: {n} {people}", n=size, people="person" if size == 1 else "people"),
        render("Zones: {zones}", zones=pods.zones_text(profile.zones)),
        render("Networks: {networks} ({see})", see=Code(f"{p}network"), networks=", ".join(
            link.address for link in await ctx.tx.network.links(ctx.room_id)) or "none"),
    ]
    lines += [
        render("Open: {needs} needs, {offers} offers ({see})", needs=counts.get(PostKind.NEED, 0),
               offers=counts.get(PostKind.OFFER, 0), see=Code(f"{p}needs")),
        render("Shifts: {n} ({see})", n=len(shifts), see=Code(f"{p}shifts")),
    ]
    if profile.name is None or not profile.zones:
        lines.append(render("Coordinators can set them with {name} and {zones}.",
                            name=Code(f"{p}pod name Elm Street"),
                            zones=Code(f"{p}pod zones north, riverside")))
    await ctx.reply(join(lines))
