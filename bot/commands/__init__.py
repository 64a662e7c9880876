"""Command registry, dispatch, usage and help.

A command is a small async function registered with `@command`, which carries its name, aliases,
arguments and help. The first word of a message is matched exactly against names and aliases;
help and usage lines are generated from the registrations.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.context import REDACTION_PREFIX, Context
from bot.formatting import Code, Rendered, join, render

Handler = Callable[[Context, str], Awaitable[None]]
# Gets every direct message (parsed command or None) before commands; True means it was handled.
DirectHook = Callable[[Context, "tuple[str, str] | None"], Awaitable[bool]]
# Gets the id of an event its sender redacted.
RedactionHook = Callable[[Context, str], Awaitable[None]]
DIRECT_HOOKS: list[DirectHook] = []
REDACTION_HOOKS: list[RedactionHook] = []

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
    commands: dict[str, Command] = field(default_factory=dict)
    by_word: dict[str, Command] = field(default_factory=dict)

    def add(self, cmd: Command) -> None:
        for word in (cmd.name, *cmd.aliases):
            if word in self.by_word:
                raise ValueError(f"command word {word!r} registered twice")
            self.by_word[word] = cmd
        self.commands[cmd.name] = cmd


REGISTRY = Registry()


def command(
    name: str, *, help: str, args: tuple[Arg, ...] = (), aliases: tuple[str, ...] = (),
    examples: tuple[str, ...] = (), group: str = "Posts",
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        REGISTRY.add(Command(name, handler, help, args, aliases, examples, group))
        return handler

    return register


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


async def dispatch(ctx: Context) -> None:
    """Run the command in `ctx.text`; every path ends in exactly one reply or a handler's own."""
    if ctx.text.startswith(REDACTION_PREFIX):
        for redaction_hook in REDACTION_HOOKS:
            await redaction_hook(ctx, ctx.text[len(REDACTION_PREFIX):].strip())
        return
    prefix = ctx.config.command_prefix
    parsed = split_command(ctx.text, prefix)
    if ctx.is_direct:
        for hook in DIRECT_HOOKS:
            if await hook(ctx, parsed):
                return
    if parsed is None:
        return
    word, rest = parsed
    cmd = REGISTRY.by_word.get(word)
    if cmd is None:
        await ctx.reply(unknown_command_reply(word, prefix))
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


def unknown_command_reply(word: str, prefix: str) -> Rendered:
    close = difflib.get_close_matches(word, list(REGISTRY.by_word), n=1, cutoff=0.6)
    shown = word if len(word) <= MAX_COMMAND_WORD else word[:MAX_COMMAND_WORD] + "…"
    if close:
        return render(
            "I don't know {given}. Did you mean {suggestion}? Send {help} for all commands.",
            given=Code(prefix + shown), suggestion=Code(prefix + REGISTRY.by_word[close[0]].name),
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
        cmd = REGISTRY.by_word.get(word)
        if cmd is None:
            await ctx.reply(unknown_command_reply(word, prefix))
            return
        lines = [render("{usage}: {help}", usage=Code(cmd.usage(prefix)), help=cmd.help)]
        if cmd.aliases:
            lines.append(render("Also: {aliases}",
                                aliases=", ".join(prefix + a for a in cmd.aliases)))
        lines += [render("Example: {example}", example=Code(prefix + e)) for e in cmd.examples]
        await ctx.reply(join(lines))
        return
    groups: dict[str, list[Command]] = {}
    for cmd in REGISTRY.commands.values():
        groups.setdefault(cmd.group, []).append(cmd)
    lines = []
    for group, cmds in groups.items():
        lines.append(render("**{group}**", group=group))
        lines += [render("{usage}: {help}", usage=Code(c.usage(prefix)), help=c.help) for c in cmds]
    lines.append(render("Send {more} for details and examples.", more=Code(prefix + "help <command>")))
    await ctx.reply(join(lines))


COMMAND_MODULES = ["bot.commands.posts", "bot.commands.intake", "bot.commands.privacy", "bot.commands.shifts", "bot.commands.settings", "bot.commands.status", "bot.commands.records", "bot.commands.library"]


def load_commands() -> Registry:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return REGISTRY
