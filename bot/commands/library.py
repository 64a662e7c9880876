"""The tool library: `!lend`, `!items`, `!borrow`, the owner's yes or no in DM, `!returned`."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from bot import intake_rules, library, room_settings
from bot.commands import Arg, UsageError, command, direct_hook
from bot.context import Context
from bot.formatting import Code, Mention, Rendered, join, render, shorten
from bot.store.library import LENT, REFUSED, RETURNED, Item, Loan

_LIST_LIMIT = 25
_ITEM_REF = re.compile(r"^(?:#|i|item)?\s*(\d{1,6})$", re.IGNORECASE)


def parse_item_ref(text: str) -> int | None:
    match = _ITEM_REF.match(text.strip())
    return int(match.group(1)) if match else None


def item_line(item: Item, loan: Loan | None) -> Rendered:
    """A listing line; owners are named as text, not mentioned: listings ping nobody."""
    state = ("on loan" if loan is not None and loan.status == LENT else
             "asked for" if loan is not None else "available")
    return render("**item {number}** {name}{notes} · {days} days · {owner} · {state}",
                  number=item.number, name=shorten(item.name, 60),
                  notes=f" ({shorten(item.notes, 60)})" if item.notes else "",
                  days=item.loan_days, owner=item.owner or "someone", state=state)


async def _zone(ctx: Context, room_id: str) -> ZoneInfo:
    stored = await ctx.tx.settings.room(room_id)
    return ZoneInfo(room_settings.value("timezone", stored, ctx.config))


async def _pod_only(ctx: Context, what: str) -> bool:
    if ctx.is_direct:
        await ctx.reply("The tool library belongs to a pod: {what} in the pod room.", what=what)
        return False
    return True


@command("lend", help="List something you can lend to the pod, with how long and notes.",
         args=(Arg("item"), Arg("for N days", optional=True), Arg(": notes", optional=True, many=True)),
         examples=("lend cordless drill for 7 days: bring it back charged", "lend ladder"),
         group="Tool library")
async def lend(ctx: Context, rest: str) -> None:
    if not await _pod_only(ctx, "send it"):
        return
    try:
        lending = library.parse_lend(rest)
    except library.LendError as exc:
        raise UsageError(str(exc)) from None
    item = await ctx.tx.library.add_item(ctx.room_id, ctx.sender, lending.name, lending.notes,
                                   lending.loan_days, ctx.now)
    await ctx.reply("Listed **item {number}**: {name}, for up to {days} days. Members can ask "
                    "for it with {borrow}; I will ask you privately first.",
                    number=item.number, name=item.name, days=item.loan_days,
                    borrow=Code(f"{ctx.config.command_prefix}borrow {item.number}"))


@command("items", help="The pod's tool library, or the items matching a word.",
         args=(Arg("word", optional=True),), examples=("items", "items drill"),
         group="Tool library")
async def items(ctx: Context, rest: str) -> None:
    if not await _pod_only(ctx, "look"):
        return
    word = " ".join(rest.split()) or None
    found = await ctx.tx.library.search(ctx.room_id, word, _LIST_LIMIT + 1)
    if not found:
        await ctx.reply("Nothing{matching} in the tool library yet. List something with {lend}",
                        matching=f" matching {word!r}" if word else "",
                        lend=Code(f"{ctx.config.command_prefix}lend ladder for 3 days"))
        return
    lines = [render("**Tool library**")] + [item_line(i, loan) for i, loan in found[:_LIST_LIMIT]]
    if len(found) > _LIST_LIMIT:
        lines.append(render("…and more: add a word, like {example}",
                            example=Code(f"{ctx.config.command_prefix}items drill")))
    await ctx.reply(join(lines))


async def _item(ctx: Context, rest: str) -> Item:
    number = parse_item_ref(rest.split()[0]) if rest.split() else None
    if number is None:
        raise UsageError("Give the item's number, like 3 (see !items).")
    item = await ctx.tx.library.item(ctx.room_id, number)
    if item is None and ctx.is_direct:
        item = await ctx.tx.library.owned_item(ctx.sender, number)
    if item is None or item.owner is None or item.status != "available":
        raise UsageError(f"There is no item {number} in this room's tool library.")
    return item


@command("borrow", help="Ask to borrow an item; its owner is asked privately.",
         args=(Arg("item number"),), examples=("borrow 3",), group="Tool library")
async def borrow(ctx: Context, rest: str) -> None:
    if not await _pod_only(ctx, "ask"):
        return
    item = await _item(ctx, rest)
    if item.owner == ctx.sender:
        await ctx.reply("**item {number}** is your own.", number=item.number)
        return
    if await ctx.tx.library.active_loan(item.id) is not None:
        await ctx.reply("**item {number}** is already lent or asked for. Try again later, or "
                        "look for another with {items}.", number=item.number,
                        items=Code(f"{ctx.config.command_prefix}items"))
        return
    await ctx.tx.library.ask(item, ctx.sender, ctx.now)
    await ctx.dm(item.owner, render(
        "{borrower} would like to borrow your **item {number}** ({name}) for {days} days. "
        "Reply yes to lend it or no to decline. (If several requests wait, add the number: "
        "yes {number}.)", borrower=ctx.sender, number=item.number, name=item.name,
        days=item.loan_days))
    await ctx.reply("I have asked the owner of **item {number}** privately; I will tell you "
                    "their answer in a direct message.", number=item.number)


@direct_hook(rank=10)  # before the relay and the private-request conversation
async def on_owner_answer(ctx: Context, parsed: tuple[str, str] | None) -> bool:
    """A yes or no in a DM, from an owner asked about a loan. Runs before the private-request
    conversation, which would otherwise take a bare yes or no as the start of a new request."""
    if parsed is not None or await ctx.tx.privacy.intake(ctx.sender) is not None:
        return False
    words = ctx.text.strip().split()
    if not words:
        return False
    number = parse_item_ref(words[-1]) if len(words) > 1 else None
    head = " ".join(words[:-1]) if number is not None else ctx.text
    yes, no = intake_rules.is_yes(head), intake_rules.is_no(head)
    if not (yes or no):
        return False
    asked = await ctx.tx.library.asked_of(ctx.sender)
    if number is not None:
        asked = [(loan, item) for loan, item in asked if item.number == number]
    if not asked:
        return False
    if number is None and await ctx.tx.privacy.asked_introductions(requester=ctx.sender):
        return False  # a waiting offer of help as well: a bare yes or no is for that
    loan, item = asked[0]
    if yes:
        due = library.due_on(ctx.now, await _zone(ctx, item.room_id), item.loan_days)
        await ctx.tx.library.set_loan(loan, LENT, ctx.now, due_on=due)
        ctx.schedule_changed = True
        when = f"{due:%A %d %B}"
        await ctx.dm(loan.borrower, render(
            "Good news: {owner} will lend you **item {number}** ({name}). Please arrange the "
            "hand-over with them; it is due back on {when}. I will remind you the day before.",
            owner=Mention(ctx.sender), number=item.number, name=item.name, when=when))
        await ctx.reply("Thank you! {borrower} is told; **item {number}** is due back on "
                        "{when}. When you have it back, send {returned}.",
                        borrower=Mention(loan.borrower), number=item.number, when=when,
                        returned=Code(f"{ctx.config.command_prefix}returned {item.number}"))
        return True
    await ctx.tx.library.set_loan(loan, REFUSED, ctx.now)
    await ctx.dm(loan.borrower, render(
        "Thank you for asking about **item {number}** ({name}). The owner can't lend it this "
        "time, so nothing is lent. Other items: {items} in the pod room.",
        number=item.number, name=item.name, items=Code(f"{ctx.config.command_prefix}items")))
    await ctx.reply("OK, I declined politely for you; nothing was lent.")
    return True


@command("returned", help="Owners: you have your item back; the loan is closed.",
         args=(Arg("item number"),), examples=("returned 3",), group="Tool library")
async def returned(ctx: Context, rest: str) -> None:
    item = await _item(ctx, rest)
    if item.owner != ctx.sender:
        await ctx.reply("Only the owner of **item {number}** can say it is back.",
                        number=item.number)
        return
    loan = await ctx.tx.library.active_loan(item.id)
    if loan is None or loan.status != LENT:
        await ctx.reply("**item {number}** is not lent out right now.", number=item.number)
        return
    await ctx.tx.library.set_loan(loan, RETURNED, ctx.now)
    ctx.schedule_changed = True
    await ctx.reply("**item {number}** is back and available again. Thank you for lending it!",
                    number=item.number)
    if loan.borrower:
        await ctx.dm(loan.borrower, "Thank you for returning **item {number}** ({name}).",
                     number=item.number, name=item.name)
