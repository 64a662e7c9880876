"""Splitting a pod that has grown too big. Pure: no I/O; the caller passes in what it read.

Two parts:

- The alert: a pod's coordinators are told once each time its joined size reaches the room's
  `split_size`; dropping below it re-arms the alert (`size_alert`).
- The walk-through `!pod split` starts in a coordinator's DM: the new pod's name, its zones, the
  people who go (by name: the bot does not know where people live, and does not ask), then a
  summary to confirm. What moves with them is computed, never typed: the open needs and offers of
  the chosen people, and those counted in the chosen zones; the active shifts they created, and
  those whose title or place names a chosen zone. An anonymous request moves only by its zone:
  moving it because its requester was chosen would tell the coordinator who asked. An open
  stand-in request (`!standin`) belongs to its shift's date, so it goes where its shift goes,
  never because its requester was chosen (that shift stays in the old pod, their place on it too).
  The chosen people on the phone tree go to the new pod's tree with their hours; a backup who is
  not invited to the new room is cleared (`tree_moves`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from bot import pods
from bot.intake_rules import is_no, is_yes
from bot.models import Post, PostStatus
from bot.shift_models import Shift, StandinRequest

DEFAULT_SPLIT_SIZE = 25
MIN_SPLIT_SIZE = 2
MAX_SPLIT_SIZE = 10_000
MAX_CHOSEN = 500  # people named in one answer; a pod past this splits in several steps
MAX_MOVED = 1000  # open posts considered in one split (the most urgent first)
_UNKNOWN_SHOWN = 5
_PEOPLE_SEPARATORS = re.compile(r"[\s,;]+")


class Alert(enum.Enum):
    SEND = "send"  # reached the size with no alert given since it was last below
    REARM = "rearm"  # below the size again: the next crossing alerts anew


def size_alert(size: int, split_size: int, alerted: bool) -> Alert | None:
    """What to do about a pod of `size` joined people (the bot left out)."""
    if size >= split_size and not alerted:
        return Alert.SEND
    if size < split_size and alerted:
        return Alert.REARM
    return None


def parse_split_size(text: str) -> int:
    """A room setting: a whole number of people."""
    word = text.strip()
    if not word.isdigit() or not MIN_SPLIT_SIZE <= int(word) <= MAX_SPLIT_SIZE:
        raise ValueError(f"The split size is a number of people from {MIN_SPLIT_SIZE} to "
                         f"{MAX_SPLIT_SIZE}, like {DEFAULT_SPLIT_SIZE}.")
    return int(word)


# ---- the walk-through ------------------------------------------------------------------------


class Step(enum.StrEnum):
    NAME = "name"
    ZONES = "zones"
    PEOPLE = "people"
    CONFIRM = "confirm"


class SplitState(BaseModel):
    """The conversation so far, stored as JSON with the coordinator's DM conversation."""

    model_config = ConfigDict(frozen=True)

    pod_room: str
    step: Step = Step.NAME
    name: str | None = None
    zones: tuple[str, ...] = ()
    people: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodView:
    """What the walk-through reads of the old pod on every turn."""

    label: str
    members: Sequence[str]  # joined the pod room, the bot left out
    coordinators: Sequence[str]
    posts: Sequence[Post]  # the pod room's open posts
    shifts: Sequence[Shift]  # the pod room's active shifts
    tree: Sequence[str] = ()  # who is on the pod's phone tree
    standins: Sequence[StandinRequest] = ()  # the pod room's open stand-in requests


class Outcome(enum.Enum):
    ASK = "ask"
    CONFIRMED = "confirmed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Turn:
    state: SplitState
    outcome: Outcome
    prompt: str


STOPPED = "Stopped: nothing was split, nobody was invited and nothing moved."


def start(pod_room: str, view: PodView) -> Turn:
    state = SplitState(pod_room=pod_room)
    return Turn(state, Outcome.ASK,
                f"Let's split {view.label} ({len(view.members)} people). Nobody is removed from "
                "it: the people you choose are invited to a new pod room, and what is theirs "
                "moves with them. Send stop at any time to leave it.\n\n" + _question(state))


def _question(state: SplitState) -> str:
    if state.step is Step.NAME:
        return "What is the new pod called? (like Riverside)"
    if state.step is Step.ZONES:
        return ("Which zones does it cover? Separate them with commas, like: riverside, "
                "north east; or none. Needs and offers counted in them, and shifts whose place "
                "names one, move with it.")
    return ("Who goes to the new pod? Send their ids separated by spaces, like: "
            "@sam:example.org @ana:example.org (or just sam ana). The coordinators of this pod "
            "are invited too, and will be coordinators there.")


def advance(state: SplitState, text: str, view: PodView) -> Turn:
    """The next turn after the coordinator's answer `text`."""
    answer = " ".join(text.split())
    if answer.lower() in ("stop", "cancel"):
        return Turn(state, Outcome.STOPPED, STOPPED)
    if state.step is Step.NAME:
        try:
            name = pods.clean_name(answer)
        except pods.PodRuleError as exc:
            return Turn(state, Outcome.ASK, str(exc))
        return _ask(state.model_copy(update={"name": name, "step": Step.ZONES}))
    if state.step is Step.ZONES:
        try:
            zones = pods.parse_zones(answer)
        except pods.PodRuleError as exc:
            return Turn(state, Outcome.ASK, str(exc))
        return _ask(state.model_copy(update={"zones": zones, "step": Step.PEOPLE}))
    if state.step is Step.PEOPLE:
        chosen, unknown = pick_people(answer, view.members)
        if unknown:
            return Turn(state, Outcome.ASK,
                        f"I don't see {', '.join(unknown[:_UNKNOWN_SHOWN])}"
                        f"{' …' if len(unknown) > _UNKNOWN_SHOWN else ''} in {view.label}: "
                        "name people who have joined its room, by id (@sam:example.org) or the "
                        "part before the colon (sam).")
        if not chosen:
            return _ask(state)
        if len(chosen) > MAX_CHOSEN:
            return Turn(state, Outcome.ASK, f"Up to {MAX_CHOSEN} people at a time, please.")
        state = state.model_copy(update={"people": chosen, "step": Step.CONFIRM})
        return Turn(state, Outcome.ASK, summary(state, view))
    if is_yes(answer):
        if not set(state.people) <= set(view.members):  # someone left (or was forgotten) since
            state = state.model_copy(update={"people": (), "step": Step.PEOPLE})
            return Turn(state, Outcome.ASK, "Someone you chose is no longer in "
                        f"{view.label}, so nothing was split yet. " + _question(state))
        return Turn(state, Outcome.CONFIRMED,
                    f"Making the room for {state.name} now. I will tell both rooms when it is "
                    "done, with the new numbers.")
    if is_no(answer):
        return Turn(state, Outcome.STOPPED, STOPPED)
    return Turn(state, Outcome.ASK, "Please answer yes to split, or no to stop.")


def _ask(state: SplitState) -> Turn:
    return Turn(state, Outcome.ASK, _question(state))


def pick_people(text: str, members: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """(chosen members, words that name no member): '@sam:x.org, ana' with ana the localpart
    of exactly one member. Order kept, repeats dropped."""
    members = list(members)
    by_id = {member.lower(): member for member in members}
    by_local: dict[str, list[str]] = {}
    for member in members:
        by_local.setdefault(member.lower().removeprefix("@").split(":")[0], []).append(member)
    chosen: dict[str, None] = {}
    unknown: list[str] = []
    for word in (w for w in _PEOPLE_SEPARATORS.split(text) if w):
        key = word.lower()
        local = by_local.get(key.removeprefix("@"), [])
        found = by_id.get(key) or (local[0] if len(local) == 1 else None)
        if found is None:
            unknown.append(word[:80])
        else:
            chosen[found] = None
    return tuple(chosen), unknown


def invitees(state: SplitState, view: PodView) -> list[str]:
    """The chosen people and the pod's coordinators: everyone the new room invites."""
    return list(dict.fromkeys([*state.people, *view.coordinators]))


def moving_posts(posts: Iterable[Post], people: Iterable[str], zones: Iterable[str]) -> list[Post]:
    """Open posts that go: in a chosen zone, or by a chosen person unless anonymous."""
    people, zones = set(people), set(zones)
    return sorted((post for post in posts if post.status is PostStatus.OPEN
                   and (post.zone in zones or (not post.anonymous and post.author in people))),
                  key=lambda post: post.number)


def moving_shifts(shifts: Iterable[Shift], people: Iterable[str],
                  zones: tuple[str, ...]) -> list[Shift]:
    """Active shifts that go: made by a chosen person, or whose title or place names a zone."""
    people = set(people)
    return sorted((shift for shift in shifts if shift.active and (
        shift.created_by in people
        or pods.zone_in_text(f"{shift.title} {shift.place or ''}", zones) is not None)),
        key=lambda shift: shift.number)


def moving_standins(standins: Iterable[StandinRequest],
                    shift_ids: Iterable[int]) -> list[StandinRequest]:
    """Open stand-in requests that go: those of a shift that goes, whoever asked."""
    shift_ids = set(shift_ids)
    return sorted((request for request in standins
                   if request.status == "open" and request.shift_id in shift_ids),
                  key=lambda request: request.number)


def tree_moves(tree: Iterable[tuple[str, str | None]], people: Iterable[str],
               invited: Iterable[str]) -> list[tuple[str, bool]]:
    """(person, keeps their backup) for each phone-tree member (person, backup) who goes.

    A backup is told of a silent member with the alert's text, and `!tree backup` takes only a
    member of the pod's room: so a backup is kept only if invited to the new room too (chosen,
    or a coordinator), and cleared otherwise (the member is asked to name another). A member who
    stays keeps a backup who went: nobody is removed from the old room."""
    people, invited = set(people), set(invited)
    return [(person, backup is None or backup in invited)
            for person, backup in tree if person in people]


def renumbered(numbers: Iterable[int]) -> dict[int, int]:
    """Old number -> new number in the new pod: 1, 2, 3 … in the old order."""
    return {old: new for new, old in enumerate(sorted(numbers), start=1)}


def summary(state: SplitState, view: PodView) -> str:
    posts = moving_posts(view.posts, state.people, state.zones)
    shifts = moving_shifts(view.shifts, state.people, state.zones)
    standins = moving_standins(view.standins, [shift.id for shift in shifts])
    on_tree = set(view.tree) & set(state.people)
    others = [person for person in invitees(state, view) if person not in state.people]
    lines = [
        f"Split {view.label}: a new pod **{state.name}**, zones {pods.zones_text(state.zones)}.",
        f"Invited: {', '.join(state.people)}"
        + (f"; and, as coordinators, {', '.join(others)}." if others else "."),
        "Moving needs and offers: " + (", ".join(f"#{p.number}" for p in posts) or "none") + ".",
        "Moving shifts: " + (", ".join(s.label for s in shifts) or "none") + ".",
        "Moving stand-in requests (with their shifts): "
        + (", ".join(f"R{r.number}" for r in standins) or "none") + ".",
        f"Moving to its phone tree, with their hours: {len(on_tree) or 'none'} of the people "
        "you chose.",
        "They get new numbers in the new pod; I will say which. Nobody is removed from "
        f"{view.label}.",
        "Split now? Answer yes or no.",
    ]
    return "\n".join(lines)
