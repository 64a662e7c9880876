"""The private-request conversation as pure steps: state in, text in, new state and what to say out.

No I/O and no clock: the command layer loads the state from storage, calls `advance`, saves the
result and sends the prompt. A conversation goes

    category -> details -> urgency -> pod (only if the person shares several pods with the bot)
    -> zone (only if that pod has several zones) -> visibility -> confirm

and "stop" / "!cancel" ends it at any step. Someone who shares no pod with the bot comes in by
the front door (`bot.front_door`): after urgency they are asked for their area (from the zones
the bot's pods and its fallback pod's networks cover, or by name when none of these), and the
request goes to the pod that `front_door.route` picks (for an area none of the bot's pods covers,
the fallback pod, and its networks at once), always anonymous with the details private:

    category -> details -> urgency -> area (-> area name) -> confirm
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, field_validator

from bot import front_door
from bot.front_door import Coverage
from bot.models import Category, Urgency
from bot.parsing import parse_category
from bot.pods import PodRuleError, clean_zone

MAX_DETAILS = 1000

STOP_WORDS = frozenset({"stop", "cancel", "!cancel", "!stop", "abort", "quit", "exit"})
YES_WORDS = frozenset({"yes", "y", "ok", "okay", "sure", "confirm", "yes please", "post it", "accept"})
NO_WORDS = frozenset({"no", "n", "nope", "decline", "no thanks"})


class Step(StrEnum):
    CATEGORY = "category"
    DETAILS = "details"
    URGENCY = "urgency"
    POD = "pod"
    ZONE = "zone"
    AREA = "area"  # front door: which of the covered areas
    AREA_NAME = "area_name"  # front door: an area none of the pods lists
    VISIBILITY = "visibility"
    CONFIRM = "confirm"


class IntakeState(BaseModel):
    step: Step = Step.CATEGORY
    category: Category | None = None
    details: str | None = None
    urgency: Urgency | None = None
    pods: list[tuple[str, str]] = []  # (room id, display name) the person shares with the bot
    room_id: str | None = None
    zones: dict[str, list[str]] = {}  # room id -> the pod's zones, for pods that have any
    zone: str | None = None
    anonymous: bool = True
    details_shown: bool = False
    front_door: Coverage | None = None  # set when the person shares no pod with the bot

    @field_validator("zones", mode="before")
    @classmethod
    def _one_zone_per_pod_before(cls, value: object) -> object:
        # Conversations saved before pods had several zones kept one zone per pod as a string.
        if isinstance(value, dict):
            return {room: [zones] if isinstance(zones, str) else zones
                    for room, zones in value.items()}
        return value


class Outcome(StrEnum):
    ASK = "ask"  # say the prompt, keep the (new) state
    CANCELLED = "cancelled"  # conversation over, nothing posted
    CONFIRMED = "confirmed"  # post it, conversation over
    NO_POD = "no_pod"  # nowhere to post: conversation over


@dataclass(frozen=True)
class Turn:
    outcome: Outcome
    state: IntakeState
    prompt: str


CATEGORY_PROMPT = (
    "What kind of help do you need? Reply with one word: food, transport, childcare, housing, "
    "medical, tools, skills, money or other."
)
DETAILS_PROMPT = (
    "Tell me the details in one message: what exactly, where, any times. Only the person who "
    "helps will see them (unless you choose otherwise at the end)."
)
URGENCY_PROMPT = "How urgent is it? Reply 1 for today, 2 for this week, 3 for whenever."
VISIBILITY_PROMPT = (
    "How should it appear in the pod room?\n"
    "1. Anonymous, details private (default): \"Someone needs: {category}\"\n"
    "2. With your name, details private\n"
    "3. Anonymous, with the details\n"
    "4. With your name and the details"
)
AREA_PROMPT = (
    "Which area are you in? Reply with the number.\n{areas}\n"
    "Only the area is passed on, never an address."
)
AREA_NAME_PROMPT = (
    "What is your area called (a neighbourhood or part of town, never an address)? Or reply "
    "skip. I will pass your request to a pod that helps further afield."
)
NOT_AN_AREA = ("Please give only a coarse area, like riverside or north: no street names with "
               "numbers, no postcodes.")
NONE_OF_THESE = frozenset({"none", "none of these", "not listed", "other", "neither"})
ZONE_PROMPT = (
    "Which part of the pod's area is it in? Reply with the number or the name, or skip.\n{zones}\n"
    "Only the zone is passed on, never an address."
)
SKIP_WORDS = frozenset({"", "skip", "-", "none", "no", "pass"})
STOP_HINT = " (Send stop or !cancel at any time to drop this.)"

_URGENCY_WORDS = {
    "1": Urgency.TODAY, "today": Urgency.TODAY, "urgent": Urgency.TODAY, "now": Urgency.TODAY,
    "asap": Urgency.TODAY,
    "2": Urgency.THIS_WEEK, "this week": Urgency.THIS_WEEK, "week": Urgency.THIS_WEEK,
    "soon": Urgency.THIS_WEEK,
    "3": Urgency.WHENEVER, "whenever": Urgency.WHENEVER, "later": Urgency.WHENEVER,
    "any time": Urgency.WHENEVER, "anytime": Urgency.WHENEVER, "no rush": Urgency.WHENEVER,
}
_VISIBILITY = {
    "1": (True, False), "anonymous": (True, False), "anon": (True, False), "": (True, False),
    "2": (False, False), "name": (False, False), "with my name": (False, False),
    "3": (True, True), "4": (False, True),
}


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".!").split())


def is_stop(text: str) -> bool:
    return _norm(text) in STOP_WORDS


def is_yes(text: str) -> bool:
    return _norm(text) in YES_WORDS


def is_no(text: str) -> bool:
    return _norm(text) in NO_WORDS


def start(pods: list[tuple[str, str]], category: Category | None = None,
          details: str | None = None, zones: dict[str, list[str]] | None = None,
          front_door: Coverage | None = None) -> Turn:
    """A new conversation; a `!need food ...` in the DM may already give category and details.
    `zones`: the pods that have zones, with their zones (a pod with one is not asked).
    `front_door`: where a request can go when `pods` is empty (the person is in none)."""
    state = IntakeState(pods=pods, category=category, details=details, zones=zones or {},
                        front_door=None if pods else front_door)
    if len(pods) == 1:
        state.room_id = pods[0][0]
    if category is None:
        whom = "your pod" if pods else "a mutual-aid pod near you"
        return Turn(Outcome.ASK, state, f"I can pass a request to {whom} privately. "
                    + CATEGORY_PROMPT + STOP_HINT)
    if not details:
        state.step = Step.DETAILS
        return Turn(Outcome.ASK, state, f"A private request for {category.value}. "
                    + DETAILS_PROMPT + STOP_HINT)
    state.step = Step.URGENCY
    return Turn(Outcome.ASK, state, f"A private request for {category.value}. "
                + URGENCY_PROMPT + STOP_HINT)


def prompt_for(state: IntakeState) -> str:
    """The question for the step the state is at (used to re-ask after a restart or typo)."""
    if state.step is Step.CATEGORY:
        return CATEGORY_PROMPT
    if state.step is Step.DETAILS:
        return DETAILS_PROMPT
    if state.step is Step.URGENCY:
        return URGENCY_PROMPT
    if state.step is Step.POD:
        lines = ["Which pod should I ask?"]
        lines += [f"{i}. {name}" for i, (_, name) in enumerate(state.pods, 1)]
        return "\n".join(lines)
    if state.step is Step.ZONE:
        zones = state.zones.get(state.room_id or "", [])
        return ZONE_PROMPT.format(zones="\n".join(f"{i}. {z}" for i, z in enumerate(zones, 1)))
    if state.step is Step.AREA:
        areas = [*(state.front_door.zones if state.front_door else []), "none of these"]
        return AREA_PROMPT.format(areas="\n".join(f"{i}. {a}" for i, a in enumerate(areas, 1)))
    if state.step is Step.AREA_NAME:
        return AREA_NAME_PROMPT
    if state.step is Step.VISIBILITY:
        return VISIBILITY_PROMPT.format(category=state.category.value if state.category else "help")
    return summary(state) + "\n\nReply yes to post it, or stop to drop it."


def summary(state: IntakeState) -> str:
    names = dict(state.pods) | (state.front_door.names if state.front_door else {})
    pod = names.get(state.room_id or "", state.room_id or "?")
    shown = ("anonymously" if state.anonymous else "with your name") + (
        ", with the details" if state.details_shown else ", details private")
    urgency = state.urgency.label if state.urgency is not None else "?"
    zone = f", zone {state.zone}" if state.zone else ""
    return (f"Your request: {state.category.value if state.category else '?'} ({urgency}), "
            f"to {pod}{zone}, shown {shown}.\nDetails: {state.details}")


def advance(state: IntakeState, text: str) -> Turn:
    """One answer from the person."""
    if is_stop(text):
        return Turn(Outcome.CANCELLED, state,
                    "Stopped. Nothing was posted and I have forgotten this request.")
    state = state.model_copy(deep=True)
    answer = _norm(text)
    if state.step is Step.CATEGORY:
        category = parse_category(answer.split()[0]) if answer else None
        if category is None:
            return Turn(Outcome.ASK, state, "I didn't recognise that. " + CATEGORY_PROMPT)
        state.category = category
        state.step = Step.DETAILS if not state.details else Step.URGENCY
        return Turn(Outcome.ASK, state, prompt_for(state))
    if state.step is Step.DETAILS:
        details = text.strip()
        if not details:
            return Turn(Outcome.ASK, state, DETAILS_PROMPT)
        if len(details) > MAX_DETAILS:
            return Turn(Outcome.ASK, state,
                        f"That is a bit long; please keep it under {MAX_DETAILS} characters.")
        state.details = details
        state.step = Step.URGENCY
        return Turn(Outcome.ASK, state, URGENCY_PROMPT)
    if state.step is Step.URGENCY:
        urgency = _URGENCY_WORDS.get(answer)
        if urgency is None:
            return Turn(Outcome.ASK, state, "Please reply 1, 2 or 3. " + URGENCY_PROMPT)
        state.urgency = urgency
        return _after_urgency(state)
    if state.step is Step.POD:
        chosen = _choose_pod(state, answer)
        if chosen is None:
            return Turn(Outcome.ASK, state, "Please reply with the number. " + prompt_for(state))
        state.room_id = chosen
        state.step = _after_pod(state)
        return Turn(Outcome.ASK, state, prompt_for(state))
    if state.step is Step.ZONE:
        if answer not in SKIP_WORDS:
            zone = _chosen(state.zones.get(state.room_id or "", []), answer)
            if zone is None:
                return Turn(Outcome.ASK, state, "That is not one of the pod's zones. "
                            + prompt_for(state))
            state.zone = zone
        state.step = Step.VISIBILITY
        return Turn(Outcome.ASK, state, prompt_for(state))
    if state.step is Step.AREA:
        return _area_chosen(state, answer)
    if state.step is Step.AREA_NAME:
        return _area_named(state, answer)
    if state.step is Step.VISIBILITY:
        choice = _VISIBILITY.get(answer)
        if choice is None:
            return Turn(Outcome.ASK, state, "Please reply 1, 2, 3 or 4.\n" + prompt_for(state))
        state.anonymous, state.details_shown = choice
        state.step = Step.CONFIRM
        return Turn(Outcome.ASK, state, prompt_for(state))
    if is_yes(text):
        return Turn(Outcome.CONFIRMED, state, "")
    if is_no(text):
        return Turn(Outcome.CANCELLED, state, "OK, nothing was posted and I have forgotten it.")
    return Turn(Outcome.ASK, state, "Please reply yes to post it, or stop to drop it.")


def _after_urgency(state: IntakeState) -> Turn:
    where = state.front_door
    if not state.pods and where is not None and (where.areas or where.fallback):
        state.step = Step.AREA if where.areas else Step.AREA_NAME
        return Turn(Outcome.ASK, state, prompt_for(state))
    if not state.pods:
        return Turn(Outcome.NO_POD, state,
                    "I am not in any pod room with you, so there is nowhere to post this. Ask a "
                    "coordinator to invite you (and me) to your pod's room, then try again.")
    state.step = Step.POD if state.room_id is None else _after_pod(state)
    return Turn(Outcome.ASK, state, prompt_for(state))


def _area_chosen(state: IntakeState, answer: str) -> Turn:
    assert state.front_door is not None
    zones = state.front_door.zones
    if answer in NONE_OF_THESE or answer == str(len(zones) + 1):
        state.step = Step.AREA_NAME
        return Turn(Outcome.ASK, state, prompt_for(state))
    zone = _chosen(zones, answer)
    if zone is None:
        return _area_named(state, answer)  # an area by name that no pod lists
    return _routed(state, zone)


def _area_named(state: IntakeState, answer: str) -> Turn:
    if answer in SKIP_WORDS:
        return _routed(state, None)
    try:
        zone = clean_zone(answer)
    except PodRuleError:
        return Turn(Outcome.ASK, state, NOT_AN_AREA + "\n" + prompt_for(state))
    return _routed(state, zone)


def _routed(state: IntakeState, zone: str | None) -> Turn:
    """The front door's request goes where `front_door.route` says: anonymous, details private."""
    assert state.front_door is not None
    destination = front_door.route(zone, state.front_door)
    if destination is None:
        return Turn(Outcome.NO_POD, state,
                    f"No pod I know covers {zone or 'your area'} yet, so there is nowhere to pass "
                    "this on. Nothing was posted and I have forgotten it.")
    state.room_id, state.zone = destination.room_id, destination.zone
    state.anonymous, state.details_shown = True, False
    state.step = Step.CONFIRM
    if destination.covered:
        return Turn(Outcome.ASK, state, prompt_for(state))
    pod = state.front_door.names.get(destination.room_id, "a pod")
    if destination.escalates_at_once:
        return Turn(Outcome.ASK, state, f"None of my pods covers {zone or 'your area'}, so I "
                    f"will pass it to the pods nearby at once, through {pod}: they see only the "
                    "kind of help, how urgent and the area.\n\n" + prompt_for(state))
    return Turn(Outcome.ASK, state, f"No pod lists {zone or 'your area'}, so I will pass it to "
                f"{pod}, who help further afield.\n\n" + prompt_for(state))


def _after_pod(state: IntakeState) -> Step:
    zones = state.zones.get(state.room_id or "", [])
    if len(zones) == 1:
        state.zone = zones[0]
    return Step.ZONE if len(zones) > 1 else Step.VISIBILITY


def _chosen(options: list[str], answer: str) -> str | None:
    """The option a reply names by its number or its text; None if it names none."""
    # isdecimal, not isdigit: "²" is a digit that int() cannot read.
    if answer.isdecimal() and len(answer) <= 3 and 1 <= int(answer) <= len(options):
        return options[int(answer) - 1]
    return next((option for option in options if answer and answer == option.lower()), None)


def _choose_pod(state: IntakeState, answer: str) -> str | None:
    by_name = _chosen([name for _, name in state.pods], answer)
    if by_name is not None:
        return next(room_id for room_id, name in state.pods if name == by_name)
    return next((room_id for room_id, _ in state.pods if answer and answer == room_id.lower()), None)


def timed_out(updated_at: datetime, now: datetime, timeout_minutes: float) -> bool:
    return now - updated_at > timedelta(minutes=timeout_minutes)


def idle_cutoff(now: datetime, timeout_minutes: float) -> datetime:
    """Conversations last touched before this are due to be dropped."""
    return now - timedelta(minutes=timeout_minutes)


TIMEOUT_MESSAGE = (
    "I dropped our unfinished conversation after {minutes} minutes without an answer; nothing was "
    "posted and what you told me is forgotten. Message me again any time to start over."
)
