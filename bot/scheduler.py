"""Scheduled work: shift reminders, understaffed alerts, post expiry, the needs digest, loan
reminders, phone trees (calls, escalations of silence, reports to the caller), and needs
going to (and closing in) the pod's networks.

The database is the source of truth. `compute_due` is a pure function from database rows and
"now" to the sends that are due; `Scheduler.run_due(now)` runs it inside one storage transaction
and, for every due item, records it in `sent_reminders` (UNIQUE key) and puts its messages in the
outbox in that same transaction. A send therefore happens exactly once, also across restarts.

The APScheduler job holds no state of its own: it is a single date job set to the next due time
(derived from the database at start and after every change), that calls `run_due` and sets itself
again. It waits for `app.ready` (the first sync) before sending anything.

A send whose time passed while the bot was down is sent late when at most
`shifts.late_grace_minutes` late, otherwise recorded as skipped and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar
from zoneinfo import ZoneInfo

from bot import library, phone_tree, pods, room_settings
from bot import pod_network as net
from bot.commands import network as network_commands
from bot.config import BotConfig, ShiftsConfig
from bot.context import Outgoing
from bot.formatting import Code, join, render, shorten
from bot.models import Post, PostKind, PostStatus
from bot.post_text import post_line
from bot.schedule_rules import due as due_state
from bot.schedule_rules import occurrences_between, rota_starts
from bot.shift_models import Shift, Signup, occurrence_key
from bot.shift_text import fmt_occurrence, fmt_span, roster
from bot.store.library import Item, Loan
from bot.store.network import Escalation, Link
from bot.store.tree import Alert, Call
from bot.turns import let_others_run

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.app import App
    from bot.storage import Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

SHIFT_DM = "shift_dm"
SHIFT_ROOM = "shift_room"
UNDERSTAFFED = "understaffed"
EXPIRY_WARNING = "expiry_warning"
EXPIRED = "expired"
DIGEST = "digest"
LOAN_REMINDER = "loan_reminder"
ESCALATE = "escalate"  # an unmatched need goes to the pod's networks
CLOSE_ESCALATION = "close_escalation"  # a need that went there is no longer open
TREE_CALL = "tree_call"  # an alert's DM to a member (ref: the call)
TREE_ESCALATE = "tree_escalate"  # a silent member's backup or caller told (ref: the call)
TREE_REACHED = "tree_reached"  # the caller told everyone was reached, and how fast (ref: alert)
TREE_PACED = "tree_paced"  # the caller told sending is limited, and how long it will take
# While an alert's calls are on their way the scheduler looks this often (at least), so the
# caller hears soon after the last one is delivered.
TREE_POLL = (timedelta(seconds=1), timedelta(seconds=15))

MAX_LOOKBACK = timedelta(days=7)  # sends older than this are forgotten, not even logged
MAX_SLEEP = timedelta(minutes=10)  # wake at least this often (posts made elsewhere, settings)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _starts(start: datetime, now: datetime) -> str:
    left = start - now
    return "starts now" if left < timedelta(seconds=5) else f"starts in {fmt_span(left)}"


def offset_key(offset: timedelta) -> str:
    return str(round(offset.total_seconds()))


def room_zone(stored: dict[str, str], config: BotConfig) -> str:
    return room_settings.value("timezone", stored, config)


# ---- what is due: pure ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    kind: str
    ref: str  # shift id, post id or room id
    occurrence: str  # occurrence key, renewal basis or digest date
    offset_key: str
    person: str  # "" for room posts
    at: datetime  # when it was meant to go out
    action: Literal["send", "skip"]
    room_id: str
    shift: Shift | None = None
    start: datetime | None = None
    post: Post | None = None
    people: tuple[str, ...] = ()
    quiet: bool = False  # a skip nobody needs to hear about (before the shift existed, staffed)
    loan: tuple[Loan, Item] | None = None
    tree: tuple[Alert, list[Call]] | None = None  # the alert, and the call it is about if any


@dataclass
class Snapshot:
    """The database rows the scheduler decides from."""

    shifts: list[Shift] = field(default_factory=list)
    signups: list[Signup] = field(default_factory=list)
    cancelled: set[tuple[int, str]] = field(default_factory=set)
    posts: list[tuple[Post, datetime]] = field(default_factory=list)  # (post, expiry clock start)
    need_rooms: list[str] = field(default_factory=list)  # rooms with open needs (for the digest)
    room_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    last_run: datetime | None = None
    loans: list[tuple[Loan, Item]] = field(default_factory=list)  # lent out now
    unescalated: list[Post] = field(default_factory=list)  # open needs of linked pods
    rounds: dict[int, int] = field(default_factory=dict)  # post -> times it went (reopened)
    escalated: dict[str, list[datetime]] = field(default_factory=dict)  # pod -> last hour's
    closable: list[Escalation] = field(default_factory=list)  # escalated, no longer open
    alerts: list[tuple[Alert, list[Call]]] = field(default_factory=list)  # open phone-tree alerts


def _offsets(cfg: ShiftsConfig) -> list[timedelta]:
    return sorted({timedelta(hours=h) for h in cfg.reminder_offsets_hours}, reverse=True)


def _shift_times(shift: Shift, start: datetime, cfg: ShiftsConfig) -> list[tuple[str, timedelta]]:
    out = [(SHIFT_ROOM, off) for off in _offsets(cfg)]
    out.append((UNDERSTAFFED, timedelta(hours=cfg.understaffed_alert_hours)))
    return out


def _horizon(cfg: ShiftsConfig) -> timedelta:
    return max([*_offsets(cfg), timedelta(hours=cfg.understaffed_alert_hours), timedelta(0)])


def _window_start(last_run: datetime | None, now: datetime, cfg: ShiftsConfig) -> datetime:
    """Shift sends due after this moment are considered: since the last run (at least the
    grace, at most MAX_LOOKBACK back)."""
    grace = timedelta(minutes=cfg.late_grace_minutes)
    lookback = grace
    if last_run is not None:
        lookback = max(grace, min(MAX_LOOKBACK, now - last_run))
    return now - lookback


def compute_due(snap: Snapshot, now: datetime, config: BotConfig) -> list[Due]:
    """Every send whose time has come and that may not have been recorded yet.

    Items come with action "send" (on time or at most the grace late) or "skip" (too late, or
    meant for before the shift existed). The caller records each one once and acts only on the
    first record.
    """
    cfg = config.shifts
    grace = timedelta(minutes=cfg.late_grace_minutes)
    window_start = _window_start(snap.last_run, now, cfg)
    out: list[Due] = []
    horizon = _horizon(cfg)
    for shift in snap.shifts:
        if not shift.active:
            continue
        for start in occurrences_between(shift.when, window_start, now + horizon + timedelta(seconds=1)):
            key = occurrence_key(start)
            if (shift.id, key) in snap.cancelled:
                continue
            people = tuple(roster(shift.id, key, snap.signups))
            for kind, off in _shift_times(shift, start, cfg):
                at = (start.astimezone(UTC) - off)
                if not window_start < at <= now:
                    continue
                quiet = at < shift.created_at
                # Once a shift has begun its earlier reminders are pointless (an offset of 0,
                # "starting now", still gets the grace period).
                if quiet or (now >= start.astimezone(UTC) and at < start.astimezone(UTC)):
                    action: Literal["send", "skip"] = "skip"
                else:
                    action = "send" if due_state(at, now, grace) == "send" else "skip"
                common = dict(ref=str(shift.id), occurrence=key, offset_key=offset_key(off),
                              at=at, room_id=shift.room_id, shift=shift, start=start, people=people)
                if kind == UNDERSTAFFED:
                    staffed = len(people) >= shift.needed
                    out.append(Due(kind=UNDERSTAFFED, person="", quiet=quiet or staffed,
                                   action="skip" if staffed else action, **common))
                    continue
                out.append(Due(kind=SHIFT_ROOM, person="", action=action, quiet=quiet, **common))
                for person in people:
                    out.append(Due(kind=SHIFT_DM, person=person, action=action, quiet=quiet,
                                   **common))
    out += _posts_due(snap, now, cfg)
    out += _digests_due(snap, now, config, window_start)
    out += _loans_due(snap, now, config, window_start)
    for alert, calls in snap.alerts:
        out += _tree_due(alert, calls, now)
    out += _escalations_due(snap, now, config)
    out += [Due(kind=CLOSE_ESCALATION, ref=escalation.id, occurrence="", offset_key="",
                person="", at=now, action="send", room_id=escalation.pod_room)
            for escalation in snap.closable]
    return out


def _escalation_times(snap: Snapshot, config: BotConfig) -> dict[str, list[tuple[datetime, Post]]]:
    """Per pod room, its unescalated needs with the time each goes to the networks, soonest
    first."""
    by_room: dict[str, list[tuple[datetime, Post]]] = {}
    for post in snap.unescalated:
        delay, urgent = net.room_delays(snap.room_settings.get(post.room_id, {}), config)
        due = net.escalation_due(post.created_at, post.urgency, delay, urgent)
        # A front-door request from an area no pod covers goes at once (bot/front_door.py).
        if post.escalate_at is not None:
            due = min(due, post.escalate_at)
        by_room.setdefault(post.room_id, []).append((due, post))
    return {room: sorted(times, key=lambda item: (item[0], item[1].id))
            for room, times in by_room.items()}


def _escalations_due(snap: Snapshot, now: datetime, config: BotConfig) -> list[Due]:
    """Needs whose delay has passed, as many per pod as its hourly limit leaves room for."""
    out = []
    for room, times in _escalation_times(snap, config).items():
        left = net.room_left(snap.escalated.get(room, []), now,
                             config.network.escalations_per_hour)
        # A need open again goes again: each round is its own send (by how many went before).
        out += [Due(kind=ESCALATE, ref=str(post.id), occurrence=str(snap.rounds.get(post.id, "")),
                    offset_key="", person="", at=at, action="send", room_id=room, post=post)
                for at, post in [item for item in times if item[0] <= now][:left]]
    return out


def _reached_at(call: Call) -> datetime | None:
    return call.sent_at or call.dead_at


def _escalations(alert: Alert, call: Call) -> list[tuple[str, datetime]]:
    """(who is told, when) for each step of a call's escalation chain; none once confirmed."""
    reached = _reached_at(call)
    if call.confirmed_at is not None or reached is None:
        return []
    chain = phone_tree.escalation_chain(call.person, call.backup, alert.caller)
    times = phone_tree.escalation_times(reached, timedelta(seconds=alert.wait_seconds),
                                        len(chain), unreachable=call.dead_at is not None)
    return list(zip(chain, times, strict=True))


def _on_its_way(call: Call) -> bool:
    """Not yet delivered nor given up, and not confirmed some other way (a 👍 in the room)."""
    return _reached_at(call) is None and call.confirmed_at is None


def _first_calls(alert: Alert, calls: list[Call]) -> list[Call]:
    """The calls made when the alert was sent (not held for someone's hours)."""
    return [c for c in calls if c.due_at <= alert.created_at]


def _tree_due(alert: Alert, calls: list[Call], now: datetime) -> list[Due]:
    """An open alert's calls whose time has come, silent members' escalations, and the
    reports to the caller: all reached (and how fast), or sending is limited (and how long)."""
    common = dict(occurrence=str(alert.id), at=now, action="send", room_id=alert.room_id)
    out = []
    for call in calls:
        if call.outbox_id is None and call.confirmed_at is None and call.due_at <= now:
            out.append(Due(kind=TREE_CALL, ref=str(call.id), offset_key="", person=call.person,
                           tree=(alert, [call]), **common))
        for step, (who, at) in enumerate(_escalations(alert, call)):
            if step >= call.escalated and at <= now:
                out.append(Due(kind=TREE_ESCALATE, ref=str(call.id), offset_key=str(step),
                               person=who, tree=(alert, [call]), **common))
    first = _first_calls(alert, calls)
    if first and not any(map(_on_its_way, first)):
        out.append(Due(kind=TREE_REACHED, ref=str(alert.id), offset_key="", person="",
                       tree=(alert, calls), **common))
        return out
    if now - alert.created_at >= phone_tree.PACE_AFTER and phone_tree.is_slow(
            _pace(alert, first, now)):
        out.append(Due(kind=TREE_PACED, ref=str(alert.id), offset_key="", person="",
                       tree=(alert, calls), **common))
    return out


def _pace(alert: Alert, first: list[Call], now: datetime) -> timedelta | None:
    """How long the first calls still on their way will take at the pace so far."""
    return phone_tree.pace_estimate(sum(map(_on_its_way, first)),
                                    [c.sent_at for c in first if c.sent_at is not None],
                                    alert.created_at, now)


def _tree_wake(alert: Alert, calls: list[Call], now: datetime) -> datetime:
    """The next moment an alert may need the scheduler: a held call, an escalation, or (while
    its first calls are on their way) a look soon, less often as the alert ages."""
    times = [c.due_at for c in calls if c.outbox_id is None and c.confirmed_at is None]
    times += [at for call in calls
              for step, (_, at) in enumerate(_escalations(alert, call)) if step >= call.escalated]
    if any(map(_on_its_way, _first_calls(alert, calls))):
        soon, latest = TREE_POLL
        times.append(now + min(max((now - alert.created_at) / 10, soon), latest))
    # What is due already (a call just made) is run at once; a run takes it, so this is no loop.
    return max(now, min(times, default=now + MAX_SLEEP))


def _loan_times(snap: Snapshot, loan: Loan, config: BotConfig) -> list[tuple[str, datetime]]:
    if loan.due_on is None:
        return []
    zone = ZoneInfo(room_zone(snap.room_settings.get(loan.room_id, {}), config))
    return library.reminder_times(loan.due_on, zone)


def _loans_due(snap: Snapshot, now: datetime, config: BotConfig, window_start: datetime) -> list[Due]:
    """The borrower's reminders the day before a loan is due back and on the day."""
    grace = timedelta(minutes=config.shifts.late_grace_minutes)
    out = []
    for loan, item in snap.loans:
        if not loan.borrower:
            continue
        for key, at in _loan_times(snap, loan, config):
            if not window_start < at <= now:
                continue
            quiet = loan.lent_at is not None and at < loan.lent_at  # lent after that moment
            action: Literal["send", "skip"] = (
                "send" if not quiet and due_state(at, now, grace) == "send" else "skip")
            out.append(Due(kind=LOAN_REMINDER, ref=str(loan.id), occurrence=loan.due_on.isoformat(),
                           offset_key=key, person=loan.borrower, at=at, action=action,
                           room_id=loan.room_id, quiet=quiet, loan=(loan, item)))
    return out


def _post_offsets(cfg: ShiftsConfig) -> tuple[timedelta, timedelta]:
    """How long after the expiry clock starts the warning and the expiry come."""
    expires = timedelta(days=cfg.post_expiry_days)
    return expires - timedelta(days=cfg.expiry_warning_days), expires


def _post_times(basis: datetime, cfg: ShiftsConfig) -> tuple[datetime, datetime]:
    warn_after, expire_after = _post_offsets(cfg)
    return basis + warn_after, basis + expire_after


def _posts_due(snap: Snapshot, now: datetime, cfg: ShiftsConfig) -> list[Due]:
    out = []
    for post, basis in snap.posts:
        if post.status is not PostStatus.OPEN:
            continue
        warn, expires = _post_times(basis, cfg)
        common = dict(ref=str(post.id), occurrence=basis.astimezone(UTC).isoformat(),
                      offset_key="", person=post.author, room_id=post.room_id, post=post)
        if now >= expires:
            out.append(Due(kind=EXPIRED, at=expires, action="send", **common))
        elif now >= warn and cfg.expiry_warning_days > 0:
            out.append(Due(kind=EXPIRY_WARNING, at=warn, action="send", **common))
    return out


def _digest_slot(now: datetime, zone: ZoneInfo, cfg: ShiftsConfig) -> datetime:
    """The latest digest time at or before now, in `zone`."""
    hour, minute = (int(x) for x in cfg.digest_time.split(":"))
    local_today = now.astimezone(zone).date()
    for back in range(0, 9):
        day = local_today - timedelta(days=back)
        if cfg.digest_day != "daily" and _WEEKDAYS[day.weekday()] != cfg.digest_day:
            continue
        slot = _localise(datetime.combine(day, time(hour, minute)), zone)
        if slot <= now:
            return slot
    raise AssertionError("a digest slot is always within 8 days")


def _localise(naive: datetime, zone: ZoneInfo) -> datetime:
    aware = naive.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone)


def _next_digest(now: datetime, zone: ZoneInfo, cfg: ShiftsConfig) -> datetime:
    hour, minute = (int(x) for x in cfg.digest_time.split(":"))
    local_today = now.astimezone(zone).date()
    for delta in range(0, 9):
        day = local_today + timedelta(days=delta)
        if cfg.digest_day != "daily" and _WEEKDAYS[day.weekday()] != cfg.digest_day:
            continue
        slot = _localise(datetime.combine(day, time(hour, minute)), zone)
        if slot > now:
            return slot
    raise AssertionError("a digest slot is always within 8 days")


def _digests_due(snap: Snapshot, now: datetime, config: BotConfig, window_start: datetime) -> list[Due]:
    cfg = config.shifts
    grace = timedelta(minutes=cfg.late_grace_minutes)
    out = []
    for room_id in snap.need_rooms:
        stored = snap.room_settings.get(room_id, {})
        if not room_settings.is_on(room_settings.value("digest", stored, config)):
            continue
        zone = ZoneInfo(room_zone(stored, config))
        slot = _digest_slot(now, zone, cfg)
        if slot <= window_start:
            continue
        action: Literal["send", "skip"] = "send" if due_state(slot, now, grace) == "send" else "skip"
        out.append(Due(kind=DIGEST, ref=room_id, occurrence=slot.date().isoformat(), offset_key="",
                       person="", at=slot, action=action, room_id=room_id))
    return out


def next_wake(snap: Snapshot, now: datetime, config: BotConfig) -> datetime:
    """The earliest moment after now when something may become due (at most MAX_SLEEP away)."""
    cfg = config.shifts
    best = now + MAX_SLEEP
    horizon = _horizon(cfg)
    for shift in snap.shifts:
        if not shift.active:
            continue
        for start in occurrences_between(shift.when, now, now + horizon + MAX_SLEEP + timedelta(seconds=1)):
            for _, off in _shift_times(shift, start, cfg):
                at = start.astimezone(UTC) - off
                if now < at < best:
                    best = at
    for post, basis in snap.posts:
        if post.status is PostStatus.OPEN:
            for at in _post_times(basis, cfg):
                if now < at < best:
                    best = at
    for room_id in snap.need_rooms:
        zone = ZoneInfo(room_zone(snap.room_settings.get(room_id, {}), config))
        at = _next_digest(now, zone, cfg)
        if now < at < best:
            best = at
    for loan, _ in snap.loans:
        for _, at in _loan_times(snap, loan, config):
            if now < at < best:
                best = at
    for alert, calls in snap.alerts:
        best = min(best, _tree_wake(alert, calls, now))
    if snap.closable:
        return now
    for room, times in _escalation_times(snap, config).items():
        # A pod at its hourly limit waits for room; otherwise its next need's time.
        held = net.next_room(snap.escalated.get(room, []), now,
                             config.network.escalations_per_hour)
        at = max(times[0][0], held or times[0][0])
        best = min(best, max(at, now))
    return best


# ---- the messages -------------------------------------------------------------------------------



def _where(shift: Shift) -> str:
    return f" at {shift.place}" if shift.place else ""


def messages_for(item: Due, now: datetime, config: BotConfig,
                 open_needs: list[Post] | None = None) -> list[Outgoing]:
    p = config.command_prefix
    if item.kind in (SHIFT_DM, SHIFT_ROOM, UNDERSTAFFED):
        shift, start = item.shift, item.start
        assert shift is not None and start is not None
        when = f"{fmt_occurrence(shift, start)} {shift.when.tz}"
        date_arg = start.astimezone(shift.when.zone).date().isoformat()
        left = max(0, shift.needed - len(item.people))
        if item.kind == SHIFT_DM:
            return [Outgoing(render(
                "Reminder: **{label} {title}** {starts}: {when}{where}. "
                "Can't make it? Send {standin} in the pod room.",
                label=shift.label, title=shift.title, starts=_starts(start, now), when=when,
                where=_where(shift), standin=Code(f"{p}standin {shift.label} {date_arg}"),
            ), user_id=item.person)]
        if item.kind == SHIFT_ROOM:
            on = ", ".join(item.people) if item.people else "nobody yet"
            template = "**{label} {title}** {starts}: {when}{where}. On: {on}."
            if left:
                template += " Still needed: {left}. Sign up with {signup}"
            return [Outgoing(render(
                template, label=shift.label, title=shift.title, starts=_starts(start, now),
                when=when, where=_where(shift), on=on, left=left,
                signup=Code(f"{p}signup {shift.label} {date_arg}"),
            ), room_id=shift.room_id)]
        return [Outgoing(render(
            "**{label} {title}** on {when}{where} still needs {left} more "
            "({have} of {need} signed up). Can you help? {signup}",
            label=shift.label, title=shift.title, when=when, where=_where(shift), left=left,
            have=len(item.people), need=shift.needed,
            signup=Code(f"{p}signup {shift.label} {date_arg}"),
        ), room_id=shift.room_id)]
    if item.kind in (EXPIRY_WARNING, EXPIRED):
        post = item.post
        assert post is not None
        if not post.author:
            return []
        what = f"{post.kind.value} #{post.number} ({shorten(post.text, 60)})"
        # A private request is renewed here in the DM: renewing it in the pod room would
        # show the room whose request it is.
        where = "here" if post.private else "here or in the room where you posted it"
        if item.kind == EXPIRY_WARNING:
            return [Outgoing(render(
                "Your {what} expires in {span}. Still need it? Send {renew} {where}.",
                what=what, span=fmt_span(item.at + timedelta(
                    days=config.shifts.expiry_warning_days) - now),
                renew=Code(f"{p}renew #{post.number}"), where=where,
            ), user_id=post.author)]
        return [Outgoing(render(
            "Your {what} has expired and is no longer listed. To bring it back, send {renew} "
            "{where}.", what=what, renew=Code(f"{p}renew #{post.number}"), where=where,
        ), user_id=post.author)]
    if item.kind == LOAN_REMINDER:
        assert item.loan is not None
        loan, thing = item.loan
        when = "tomorrow" if item.offset_key == library.DAY_BEFORE else "today"
        return [Outgoing(render(
            "Reminder: **item {number}** ({name}) is due back {when}. Please return it to its "
            "owner; they will mark it with {returned}.", number=thing.number, name=thing.name,
            when=when, returned=Code(f"{p}returned {thing.number}"),
        ), user_id=item.person)]
    if item.kind in (TREE_CALL, TREE_ESCALATE, TREE_REACHED, TREE_PACED):
        return _tree_messages(item, config)
    if item.kind == DIGEST:
        needs = open_needs or []
        if not needs:
            return []
        lines = [render("**Open needs this week** ({n}). Can you help with one? {claim}",
                        n=len(needs), claim=Code(f"{p}claim <number>"))]
        lines += [post_line(post) for post in needs[:20]]
        if len(needs) > 20:
            lines.append(render("…and {more} more: {cmd}", more=len(needs) - 20,
                                cmd=Code(f"{p}needs")))
        return [Outgoing(join(lines), room_id=item.room_id)]
    raise ValueError(item.kind)


def escalation_messages(item: Due, escalation: Escalation, links: list[Link],
                        name: str) -> list[Outgoing]:
    """A need going to the pod's networks: category, urgency, zone and the pod's name there,
    never the person or the details; and a word to the pod."""
    post = item.post
    assert post is not None
    text = net.need_text(name, post.category, post.urgency, post.zone)
    out = [net.to_room(link.network_room, text, net.NEED, escalation.network_id, pod=link.token,
                       name=name, category=post.category.value, urgency=int(post.urgency),
                       zone=post.zone) for link in links]
    if escalation.rounds > 1:
        out.append(Outgoing(render(
            "**#{number}** is still open, so I have passed it to this pod's networks again "
            "(only its category, urgency and zone).", number=post.number), room_id=item.room_id))
        return out
    if post.escalate_at is not None:
        return out  # sent at once: its notice in the pod already said it goes to the networks
    out.append(Outgoing(render(
        "**#{number}** is still unmatched, so I have passed it to this pod's networks (only "
        "its category, urgency and zone).", number=post.number), room_id=item.room_id))
    return out


def close_messages(escalation: Escalation, links: list[Link], name: str,
                   accepted: str | None) -> list[Outgoing]:
    return [net.to_room(link.network_room, f"The {name} pod's need is closed.", net.CLOSE,
                        escalation.network_id, claim=accepted) for link in links]


def _tree_messages(item: Due, config: BotConfig) -> list[Outgoing]:
    assert item.tree is not None
    alert, calls = item.tree
    if item.kind == TREE_CALL:
        return [Outgoing(phone_tree.alert_message(alert.caller, alert.text, config.command_prefix,
                                                  alert.origin), user_id=item.person)]
    if item.kind == TREE_ESCALATE:
        [call] = calls
        waited = timedelta(seconds=alert.wait_seconds) * (int(item.offset_key) + 1)
        if item.person == alert.caller:
            backup = call.backup if call.backup != alert.caller else None
            message = phone_tree.caller_message(call.person, backup, waited,
                                                unreachable=call.dead_at is not None,
                                                origin=alert.origin)
        else:
            message = phone_tree.backup_message(call.person, alert.caller, alert.text, waited,
                                                alert.origin)
        return [Outgoing(message, user_id=item.person)]
    if alert.caller is None:
        return []  # the caller asked to be forgotten
    first = _first_calls(alert, calls)
    reached = [at for c in first if (at := c.sent_at) is not None]
    if item.kind == TREE_REACHED:
        took = max(reached, default=alert.created_at) - alert.created_at
        return [Outgoing(phone_tree.reached_message(
            len(first), took, [c.person for c in first if c.dead_at is not None],
            len(calls) - len(first), alert.origin), user_id=alert.caller)]
    return [Outgoing(phone_tree.paced_message(len(reached), len(first),
                                              _pace(alert, first, item.at), alert.origin),
                     user_id=alert.caller)]


async def _record_tree_step(tx: Transaction, item: Due, outbox_id: int) -> None:
    """What a phone-tree send changes: the call's DM is known by its outbox row, an
    escalation step is taken."""
    if item.kind == TREE_CALL:
        await tx.tree.rung(int(item.ref), outbox_id)
    elif item.kind == TREE_ESCALATE:
        await tx.tree.escalated(int(item.ref), int(item.offset_key) + 1)


# ---- running it ---------------------------------------------------------------------------------

_BASIS_SLACK = timedelta(seconds=1)  # read a little more than due; compute_due decides


async def _posts_near(tx: Transaction, now: datetime, since: datetime | None,
                      cfg: ShiftsConfig) -> list[tuple[Post, datetime]]:
    """The open posts whose warning or expiry may be due at `now` and has not been handled by a
    run at `since`, and the ones whose warning and expiry come next. Bounded by what is due:
    - every post past its expiry (each is expired by the run);
    - posts whose warning time came after `since` (earlier ones were warned by that run);
    - posts changed after `since` (say, opened again) whose warning time has come;
    - the first post whose warning, and the first whose expiry, is still ahead (next_wake)."""
    warn_after, expire_after = _post_offsets(cfg)
    found: dict[int, tuple[Post, datetime]] = {}
    batches = [await tx.posts.open_by_basis(now - expire_after + _BASIS_SLACK)]
    await let_others_run()  # each batch is as many posts as came due (a millisecond per 50)
    if cfg.expiry_warning_days > 0:
        batches.append(await tx.posts.open_by_basis(
            now - warn_after + _BASIS_SLACK,
            after=None if since is None else since - warn_after - _BASIS_SLACK))
        await let_others_run()
    if since is not None:
        batches.append(await tx.posts.open_changed_since(since - _BASIS_SLACK,
                                                         now - warn_after + _BASIS_SLACK))
    for offset in (warn_after, expire_after):
        first = await tx.posts.first_open_after_basis(now - offset + _BASIS_SLACK)
        batches.append([first] if first else [])
    for batch in batches:
        for post, basis in batch:
            found[post.id] = (post, basis)
    return sorted(found.values(), key=lambda item: item[0].id)


async def load_snapshot(tx: Transaction, now: datetime, config: BotConfig) -> Snapshot:
    """What `compute_due` and `next_wake` need at `now`, and nothing more: shifts that can have
    a date in the window, their sign-ups and cancellations for those dates, the posts near their
    expiry times (`_posts_near`), and the rooms a digest may go to."""
    cfg = config.shifts
    # The commit of the run before (run_due, then next_wake) was a step of its own.
    await let_others_run()
    last = await tx.delivery.get_meta("scheduler_last_run")
    last_run = datetime.fromisoformat(last) if last else None
    window_start = _window_start(last_run, now, cfg)
    window_end = now + _horizon(cfg) + MAX_SLEEP + timedelta(seconds=1)
    first, last_key = occurrence_key(window_start), occurrence_key(window_end)
    # Each step is a millisecond or two; other tasks get a turn between them.
    shifts = await tx.shifts.active_near(window_start, window_end)
    await let_others_run()
    await _expand_rotas(shifts, window_end)
    signups, cancelled = [], set()
    for chunk in range(0, len(shifts), _SHIFTS_PER_READ):
        await let_others_run()
        ids = [s.id for s in shifts[chunk:chunk + _SHIFTS_PER_READ]]
        signups += await tx.shifts.signups_between(ids, first, last_key)
        cancelled |= await tx.shifts.cancelled_between(ids, first, last_key)
    await let_others_run()
    # Posts whose times came by the last run were handled by it (a clock set back: by now).
    since = None if last_run is None else min(last_run, now)
    posts = await _posts_near(tx, now, since, cfg)
    await let_others_run()
    need_rooms = await tx.posts.rooms_with_open_needs()
    await let_others_run()
    loans = await tx.library.lent()  # what is lent out now, not the history
    alerts = [(alert, await tx.tree.calls(alert.id))
              for alert in await tx.tree.open_alerts(now - phone_tree.OPEN_FOR)]
    unescalated = await tx.network.unescalated_needs()
    rounds = await tx.network.escalation_rounds([post.id for post in unescalated])
    closable = await tx.network.closable()
    rooms = ({s.room_id for s in shifts} | set(need_rooms) | {lo.room_id for lo, _ in loans}
             | {p.room_id for p in unescalated} | {e.pod_room for e in closable})
    await let_others_run()
    return Snapshot(shifts=shifts, signups=signups, cancelled=cancelled, posts=posts,
                    need_rooms=need_rooms, room_settings=await tx.settings.rooms(sorted(rooms)),
                    last_run=last_run, loans=loans, alerts=alerts, unescalated=unescalated,
                    rounds=rounds,
                    escalated=await tx.network.escalated_since(now - net.HOUR),
                    closable=closable)


_SHIFTS_PER_READ = 32  # sign-ups and cancellations read for this many shifts at a time
_SLICE_SECONDS = 0.001  # the longest the scheduler computes before letting other tasks run
_DATES_PER_LOOK = 16  # rota dates walked between two looks at the clock
_DST_SLACK = timedelta(days=3)  # occurrence queries look this far past their end


async def _expand_rotas(shifts: list[Shift], until: datetime) -> None:
    """Walk every active rota's dates up to `until`, letting other tasks run every
    `_SLICE_SECONDS`.

    A rota's dates are expanded from its first one and remembered (`rota_starts`): the first
    look after a start walks every rota's whole history, a few milliseconds each (about 100 ms
    for 85 rotas over half a year), which `compute_due` would do for a rota in one go. Here it is
    done in slices; afterwards this is a quick pass over remembered dates.
    """
    mark = clock.perf_counter()
    walked = 0
    for shift in shifts:
        if not shift.active or shift.when.rrule is None:
            continue
        last = until.astimezone(shift.when.zone).replace(tzinfo=None) + _DST_SLACK
        for start in rota_starts(shift.when):
            if start > last:
                break
            walked += 1
            if walked % _DATES_PER_LOOK == 0 and clock.perf_counter() - mark > _SLICE_SECONDS:
                await let_others_run()
                mark = clock.perf_counter()


_POSTS_PER_PART = 32
_ROOMS_PER_PART = 16  # digests: a time zone and the room's settings each


def _parts(snap: Snapshot) -> Iterator[Snapshot]:
    """The snapshot cut into independent parts (one per shift, then posts, digests, and loans
    with alerts and escalations), so that the pure functions can run a part at a time between
    other tasks' turns. Made one at a time: a thousand shifts' parts at once took milliseconds."""
    # Each shift's part carries only its own sign-ups: a roster looks through all it is given.
    signups: dict[int, list[Signup]] = {}
    for signup in snap.signups:
        signups.setdefault(signup.shift_id, []).append(signup)
    rest = replace(snap, shifts=[], signups=[], posts=[], need_rooms=[], loans=[], alerts=[],
                   unescalated=[], closable=[])
    for shift in snap.shifts:
        yield replace(rest, shifts=[shift], signups=signups.get(shift.id, []))
    for n in range(0, len(snap.posts), _POSTS_PER_PART):
        yield replace(rest, posts=snap.posts[n:n + _POSTS_PER_PART])
    for n in range(0, len(snap.need_rooms), _ROOMS_PER_PART):
        yield replace(rest, need_rooms=snap.need_rooms[n:n + _ROOMS_PER_PART])
    yield replace(rest, loans=snap.loans, alerts=snap.alerts, unescalated=snap.unescalated,
                  closable=snap.closable)


async def _in_slices(snap: Snapshot, compute: Callable[[Snapshot], T]) -> list[T]:
    """`compute` on each part, yielding to the event loop every `_SLICE_SECONDS` or so."""
    results = []
    mark = clock.perf_counter()
    for part in _parts(snap):
        results.append(compute(part))
        if clock.perf_counter() - mark > _SLICE_SECONDS:
            await let_others_run()
            mark = clock.perf_counter()
    await let_others_run()  # what the caller does with the results is a step of its own
    return results


async def _network_sends(tx: Transaction, item: Due, now: datetime,
                         config: BotConfig) -> list[Outgoing]:
    """Record an escalation (or its closing) and what says so in the networks, once; and the
    same in this bot's other pods linked to those networks (it does not read its own messages),
    in this transaction."""
    links = await tx.network.links(item.room_id)
    name = pods.profile(item.room_id, await tx.settings.room(item.room_id), config).label
    if item.kind == ESCALATE:
        assert item.post is not None
        escalation = await tx.network.escalate(item.post, now)
        if escalation is None or not links:
            return []
        sent = escalation_messages(item, escalation, links, name)
    else:
        escalation = await tx.network.escalation(item.ref)
        if escalation is None or not await tx.network.close_escalation(escalation.id, now):
            return []
        # The claim that met the need goes on (its answer may come after this); one whose
        # introduction failed (the need open again) does not.
        accepted = await tx.network.accepted_claim(escalation.id)
        if (await tx.posts.by_id(escalation.post_id)).status is PostStatus.OPEN:
            accepted = None
        sent = close_messages(escalation, links, name, accepted.claim if accepted else None)
    return sent + await network_commands.to_my_other_pods(tx, config, now, item.room_id, sent)


class Scheduler:
    def __init__(self, app: App, *, deliver: bool = False) -> None:
        """`deliver`: deliver the outbox right after a run (console: it has no outbox loop)."""
        self.app = app
        self._deliver = deliver
        self.storage = app.storage
        self.config = app.config
        self._aps: AsyncIOScheduler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._run_lock = asyncio.Lock()
        self.runs = 0

    async def run_due(self, now: datetime | None = None) -> list[Due]:
        """Send (or skip) everything due at `now`; returns the items acted on for the first time."""
        async with self._run_lock:
            now = now or self.app.clock()
            acted: list[Due] = []
            async with self.storage.transaction() as tx:
                snap = await load_snapshot(tx, now, self.config)
                due = await _in_slices(snap, lambda part: compute_due(part, now, self.config))
                mark = clock.perf_counter()
                for item in (item for items in due for item in items):
                    if clock.perf_counter() - mark > _SLICE_SECONDS:
                        await let_others_run()  # rendering adds up; let others run meanwhile
                        mark = clock.perf_counter()
                    outcome = item.action if item.action == "skip" else "sent"
                    if not await tx.shifts.record_scheduled(item.kind, item.ref, item.occurrence,
                                                     item.offset_key, item.person, outcome, now):
                        continue
                    acted.append(item)
                    if item.action == "skip":
                        if not item.quiet:
                            log.warning("skipped %s for %s %s: due %s, %s late (grace %s min)",
                                        item.kind, item.ref, item.occurrence, item.at.isoformat(),
                                        now - item.at, self.config.shifts.late_grace_minutes)
                        continue
                    needs = None
                    if item.kind == DIGEST:
                        needs = [p for p in await tx.posts.list(item.room_id, kind=PostKind.NEED)
                                 if not p.private]
                    if item.kind in (ESCALATE, CLOSE_ESCALATION):
                        await tx.delivery.enqueue(await _network_sends(tx, item, now,
                                                                       self.config), now)
                        log.info("scheduled %s for %s sent", item.kind, item.ref)
                        continue
                    if item.kind == EXPIRED and item.post is not None:
                        await tx.posts.set_status(item.post, PostStatus.EXPIRED, now)
                    messages = messages_for(item, now, self.config, needs)
                    if item.tree is not None:
                        for out in messages:
                            await _record_tree_step(tx, item, await tx.delivery.enqueue_one(out, now))
                    else:
                        await tx.delivery.enqueue(messages, now)
                    log.info("scheduled %s for %s %s sent", item.kind, item.ref, item.occurrence)
                await let_others_run()  # the commit writes what was queued: a step of its own
                await tx.delivery.set_meta("scheduler_last_run", now.astimezone(UTC).isoformat())
            self.runs += 1
            await let_others_run()  # after the commit: a step of its own too
        if acted:
            self.app.wake_outbox()
            if self._deliver:
                await self.app.deliver_pending()
        return acted

    async def next_wake(self, now: datetime | None = None) -> datetime:
        now = now or self.app.clock()
        async with self.storage.transaction() as tx:
            snap = await load_snapshot(tx, now, self.config)
        return min(await _in_slices(snap, lambda part: next_wake(part, now, self.config)))

    # ---- APScheduler wiring --------------------------------------------------------------------

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._aps = AsyncIOScheduler(timezone=UTC)
        self._aps.start()
        # Shifts, sign-ups or settings changed: re-derive the next wake-up once committed.
        self.app.schedule_listeners.append(self.changed)
        self._spawn(self._first_run())

    async def _first_run(self) -> None:
        await self.app.ready.wait()
        await self._job()

    def changed(self) -> None:
        if self._aps is not None:
            self._spawn(self._reschedule())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _job(self) -> None:
        if not self.app.ready.is_set():
            await self.app.ready.wait()
        try:
            await self.run_due()
        except Exception:
            log.exception("scheduled run failed; retrying at the next wake-up")
        await self._reschedule()

    async def _reschedule(self) -> None:
        if self._aps is None:
            return
        try:
            wake = await self.next_wake()
        except Exception:
            log.exception("could not compute the next wake-up; trying again shortly")
            wake = self.app.clock() + timedelta(minutes=1)
        # A wake-up delayed by a busy loop still runs (run_due applies the real grace itself).
        grace = max(60, int(self.config.shifts.late_grace_minutes * 60))
        self._aps.add_job(self._job, "date", run_date=wake, id="run-due", replace_existing=True,
                          misfire_grace_time=grace, coalesce=True, max_instances=1)
        self.app.metrics.next_scheduled_wake = wake.timestamp()
        log.debug("next scheduled wake-up at %s", wake.isoformat())

    async def shutdown(self) -> None:
        if self.changed in self.app.schedule_listeners:
            self.app.schedule_listeners.remove(self.changed)
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["Due", "Scheduler", "Snapshot", "compute_due", "next_wake"]
