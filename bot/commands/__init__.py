"""Command registry, dispatch, usage and help.

A command is a small async function marked with `@command`, which carries its name, aliases,
arguments and help; `@direct_hook` and `@event_hook` mark functions that see every direct message,
or a kind of typed event (a redaction, reaction or edit). The marks are only declarations: the
composition root builds a `Registry` from the command modules (`build_registry`), and that
instance, not a module global, is what dispatch consults. The first word of a message is matched
exactly against names and aliases; help and usage lines are generated from the registrations.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from bot.context import Context
from bot.formatting import Code, Rendered, join, render
from bot.messages import Edit, Event, Membership, Reaction, Redaction

Handler = Callable[[Context, str], Awaitable[None]]
# Gets every direct message (parsed command or None) before commands; True means it was handled.
DirectHook = Callable[[Context, "tuple[str, str] | None"], Awaitable[bool]]
# Gets a typed event (Redaction, Reaction, Edit or Membership) of the kind it was declared for.
EventHook = Callable[[Context, Any], Awaitable[None]]
# Gets the next direct message of a conversation in progress (its stored state, the text).
Flow = Callable[[Context, dict, str], Awaitable[None]]
EVENT_KINDS = (Redaction, Reaction, Edit, Membership)
# The attribute a decorator leaves on a function for `build_registry` to collect.
_DECLARED = "_mab_declared"

MAX_COMMAND_WORD = 32


@dataclass(frozen=True)
class Arg:
    name: str
    optional: bool = False
    many: bool = False  # takes the rest of the line

    def usage(self) -> str:
        text = f"<{self.name}>" + ("…" if self.many else "")
        return f"[{text}]" if self.optional else text


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    help: str
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    group: str = "Posts"

    def usage(self, prefix: str) -> str:
        return " ".join([prefix + self.name, *(a.usage() for a in self.args)])


class UsageError(ValueError):
    """Raised by a handler for input it cannot use; the reply adds the command's usage line."""


@dataclass
class Registry:
    """The commands and hooks one running bot dispatches to, built by the composition root."""

    commands: dict[str, Command] = field(default_factory=dict)
    by_word: dict[str, Command] = field(default_factory=dict)
    direct_hooks: list[DirectHook] = field(default_factory=list)
    event_hooks: dict[type, list[EventHook]] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)  # conversation name -> its next step

    def add(self, cmd: Command) -> None:
        for word in (cmd.name, *cmd.aliases):
            if word in self.by_word:
                raise ValueError(f"command word {word!r} registered twice")
            self.by_word[word] = cmd
        self.commands[cmd.name] = cmd

    def collect(self, module: ModuleType) -> None:
        """Add what a module declared, in the order it declared it."""
        for value in list(vars(module).values()):
            declared = getattr(value, _DECLARED, None)
            if getattr(value, "__module__", None) != module.__name__ or declared is None:
                continue  # imported from elsewhere: collected with its own module
            if isinstance(declared, Command):
                self.add(declared)
            elif isinstance(declared, tuple) and declared[0] == "direct":
                self.direct_hooks.append(value)
                self.direct_hooks.sort(key=lambda hook: getattr(hook, _DECLARED)[1])
            elif isinstance(declared, tuple):  # ("flow", name)
                if declared[1] in self.flows:
                    raise ValueError(f"conversation {declared[1]!r} declared twice")
                self.flows[declared[1]] = value
            else:
                self.event_hooks.setdefault(declared, []).append(value)


def command(
    name: str, *, help: str, args: tuple[Arg, ...] = (), aliases: tuple[str, ...] = (),
    examples: tuple[str, ...] = (), group: str = "Posts",
) -> Callable[[Handler], Handler]:
    def declare(handler: Handler) -> Handler:
        setattr(handler, _DECLARED, Command(name, handler, help, args, aliases, examples, group))
        return handler

    return declare


def direct_hook(*, rank: int) -> Callable[[DirectHook], DirectHook]:
    """Sees every direct message before commands, lowest `rank` first; returning True means it
    was handled (the later hooks and the command do not run)."""

    def declare(hook: DirectHook) -> DirectHook:
        setattr(hook, _DECLARED, ("direct", rank))
        return hook

    return declare


def flow(name: str) -> Callable[[Flow], Flow]:
    """The step of the DM conversation `name` (stored with the person's intake state)."""

    def declare(step: Flow) -> Flow:
        setattr(step, _DECLARED, ("flow", name))
        return step

    return declare


def event_hook(kind: type) -> Callable[[EventHook], EventHook]:
    """Sees every typed event of `kind` (Redaction, Reaction, Edit or Membership)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"{kind!r} is not a typed event")

    def declare(hook: EventHook) -> EventHook:
        setattr(hook, _DECLARED, kind)
        return hook

    return declare


def split_command(text: str, prefix: str) -> tuple[str, str] | None:
    """("need", "groceries for 2") for "!need groceries for 2"; None if not a command."""
    stripped = text.strip()
    if not stripped.startswith(prefix) or len(stripped) == len(prefix):
        return None
    head, _, rest = stripped[len(prefix):].partition(" ")
    word, _, newline_rest = head.partition("\n")
    rest = (newline_rest + " " + rest) if newline_rest else rest
    return word.lower()[:MAX_COMMAND_WORD + 1], rest.strip()


def usage_reply(cmd: Command, prefix: str, problem: str | None = None) -> Rendered:
    parts = []
    if problem:
        parts.append(render("{problem}", problem=problem))
    parts.append(render("Usage: {usage}", usage=Code(cmd.usage(prefix))))
    if cmd.examples:
        parts.append(render("Example: {example}", example=Code(prefix + cmd.examples[0])))
    return join(parts)


async def dispatch(ctx: Context, event: Event | None = None) -> None:
    """Run the command in `ctx.text` (or the hooks for a typed `event`); every path ends in
    exactly one reply or a handler's own."""
    registry = ctx.registry
    if event is not None:
        for hook in registry.event_hooks.get(type(event), []):
            await hook(ctx, event)
        return
    prefix = ctx.config.command_prefix
    parsed = split_command(ctx.text, prefix)
    if ctx.is_direct:
        for hook in registry.direct_hooks:
            if await hook(ctx, parsed):
                return
    if parsed is None:
        return
    word, rest = parsed
    cmd = registry.by_word.get(word)
    if cmd is None:
        await ctx.reply(unknown_command_reply(registry, word, prefix))
        return
    if not rest and any(not a.optional for a in cmd.args):
        await ctx.reply(usage_reply(cmd, prefix))
        return
    try:
        await cmd.handler(ctx, rest)
    except UsageError as exc:
        await ctx.reply(usage_reply(cmd, prefix, str(exc)))


def is_coordinator(ctx: Context, user_id: str | None = None, room_id: str | None = None) -> bool:
    """Power level in the room (read live from room state) at or above the configured threshold.

    Nobody is a coordinator of a direct chat: whoever opened it holds every power level there.
    """
    if room_id is None and ctx.is_direct:
        return False
    room = room_id or ctx.room_id
    return (ctx.transport.power_level(room, user_id or ctx.sender)
            >= ctx.config.bot.coordinator_power_level)


async def require_coordinator(ctx: Context, action: str) -> bool:
    """True if the sender is a coordinator here; otherwise says clearly that one is needed.

        if not await require_coordinator(ctx, "cancel a shift"):
            return
    """
    if is_coordinator(ctx):
        return True
    where = "in the pod room itself" if ctx.is_direct else "in this room"
    await ctx.reply(
        "A coordinator is needed to {action}: only members with power level {level} or more "
        "{where} can. Ask one of them.",
        action=action, level=ctx.config.bot.coordinator_power_level, where=where,
    )
    return False


def unknown_command_reply(registry: Registry, word: str, prefix: str) -> Rendered:
    close = difflib.get_close_matches(word, list(registry.by_word), n=1, cutoff=0.6)
    shown = word if len(word) <= MAX_COMMAND_WORD else word[:MAX_COMMAND_WORD] + "…"
    if close:
        return render(
            "I don't know {given}. Did you mean {suggestion}? Send {help} for all commands.",
            given=Code(prefix + shown), suggestion=Code(prefix + registry.by_word[close[0]].name),
            help=Code(prefix + "help"),
        )
    return render("I don't know {given}. Send {help} for all commands.",
                  given=Code(prefix + shown), help=Code(prefix + "help"))


@command("help", help="List commands, or explain one.", args=(Arg("command", optional=True),),
         examples=("help need",), group="General")
async def help_command(ctx: Context, rest: str) -> None:
    prefix = ctx.config.command_prefix
    if rest:
        word = rest.split()[0].removeprefix(prefix).lower()
        cmd = ctx.registry.by_word.get(word)
        if cmd is None:
            await ctx.reply(unknown_command_reply(ctx.registry, word, prefix))
            return
        lines = [render("{usage}: {help}", usage=Code(cmd.usage(prefix)), help=cmd.help)]
        if cmd.aliases:
            lines.append(render("Also: {aliases}",
                                aliases=", ".join(prefix + a for a in cmd.aliases)))
        lines += [render("Example: {example}", example=Code(prefix + e)) for e in cmd.examples]
        await ctx.reply(join(lines))
        return
    groups: dict[str, list[Command]] = {}
    for cmd in ctx.registry.commands.values():
        groups.setdefault(cmd.group, []).append(cmd)
    lines = []
    for group, cmds in groups.items():
        lines.append(render("**{group}**", group=group))
        lines += [render("{usage}: {help}", usage=Code(c.usage(prefix)), help=c.help) for c in cmds]
    lines.append(render("Send {more} for details and examples.", more=Code(prefix + "help <command>")))
    await ctx.reply(join(lines))


# Collected in this order (`!help` lists groups in it).
COMMAND_MODULES = ("bot.commands", "bot.commands.posts", "bot.commands.relay",
                   "bot.commands.intake", "bot.commands.privacy", "bot.commands.shifts",
                   "bot.commands.settings", "bot.commands.status", "bot.commands.records",
                   "bot.commands.library", "bot.commands.pods", "bot.commands.split",
                   "bot.commands.front_door", "bot.commands.tree", "bot.commands.reactions")


def build_registry(modules: tuple[str, ...] = COMMAND_MODULES) -> Registry:
    """A fresh registry of everything the command modules declare."""
    registry = Registry()
    for name in modules:
        registry.collect(importlib.import_module(name))
    return registry
