"""`!settings`: list a room's settings, or (coordinators) change one. Keys live in bot.room_settings."""

from __future__ import annotations

from bot import room_settings
from bot.commands import Arg, UsageError, command, require_coordinator
from bot.commands.pods import SETTING_POD_NAME, SETTING_ZONES, reannounce
from bot.context import Context
from bot.formatting import Code, join, render, shorten

_RESET = ("default", "reset", "unset")



@command("settings", help="Show this room's settings; coordinators can change one.",
         args=(Arg("setting", optional=True), Arg("value", optional=True, many=True)),
         aliases=("setting",),
         examples=("settings", "settings timezone Europe/Berlin", "settings digest off",
                   "settings timezone default"),
         group="Settings")
async def settings(ctx: Context, rest: str) -> None:
    p = ctx.config.command_prefix
    if ctx.is_direct:
        await ctx.reply("Settings belong to a pod room; send this in the pod room.")
        return
    key, _, value = rest.strip().partition(" ")
    key, value = key.lower(), value.strip()
    stored = await ctx.tx.settings.room(ctx.room_id)
    if not key:
        lines = [render("**Settings for this room**")]
        for name, (current, is_default) in room_settings.effective(stored, ctx.config).items():
            lines.append(render("{key}: **{value}**{default} · {help}", key=Code(name),
                                value=current, default=" (default)" if is_default else "",
                                help=room_settings.SETTINGS[name].help))
        lines.append(render("Coordinators change one with {example}",
                            example=Code(f"{p}settings <setting> <value>")))
        await ctx.reply(join(lines))
        return
    setting = room_settings.get(key)
    if setting is None:
        raise UsageError(f"There is no setting {shorten(key, 30)!r}. Known: "
                         f"{', '.join(sorted(room_settings.SETTINGS))}.")
    if not value:
        current = room_settings.value(setting.key, stored, ctx.config)
        await ctx.reply("{key} is **{value}**{default}. {help} Change it with {example}",
                        key=Code(setting.key), value=current,
                        default=" (default)" if setting.key not in stored else "",
                        help=setting.help, example=Code(f"{p}settings {setting.key} {setting.example}"))
        return
    if not await require_coordinator(ctx, "change settings"):
        return
    if value.lower() in _RESET:
        await ctx.tx.settings.set(ctx.room_id, setting.key, None)
        new = setting.default(ctx.config)
    else:
        try:
            new = setting.validate(value)
        except room_settings.SettingError as exc:
            raise UsageError(str(exc)) from None
        await ctx.tx.settings.set(ctx.room_id, setting.key, new)

    ctx.schedule_changed = True
    if setting.key in (SETTING_POD_NAME, SETTING_ZONES):
        await reannounce(ctx)  # the networks the pod is in hear of it
    await ctx.reply("{key} is now **{value}** for this room.", key=Code(setting.key), value=new)
