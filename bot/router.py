"""Which network delivers to which destination, when one bot serves several.

Ids say their network: Signal rooms start with `signal:` (`signal:group:<id>`, `signal:dm:<uuid>`)
and Signal people with `@signal:`; everything else is Matrix-shaped (the console speaks in Matrix
ids too). The app talks to one `Router`, which looks like a single transport and hands each call to
the transport of the right network.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from bot.context import Transport
from bot.messages import DeliveryError, Outgoing
from bot.signal_text import PERSON_PREFIX as SIGNAL_PERSON_PREFIX

if TYPE_CHECKING:
    from bot.app import App

MATRIX = "matrix"
SIGNAL = "signal"
SIGNAL_ROOM_PREFIX = "signal:"
SIGNAL_GROUP_PREFIX = SIGNAL_ROOM_PREFIX + "group:"


def network_of_room(room_id: str) -> str:
    return SIGNAL if room_id.startswith(SIGNAL_ROOM_PREFIX) else MATRIX


def network_of_person(user_id: str) -> str:
    return SIGNAL if user_id.startswith(SIGNAL_PERSON_PREFIX) else MATRIX


def same_network(*people: str) -> bool:
    return len({network_of_person(p) for p in people}) <= 1


class NetworkTransport(Transport, Protocol):
    """A transport the runtime can attach: one network, started and stopped by the runtime."""

    network: str  # MATRIX or SIGNAL: which ids it serves
    app: App | None
    caught_up: asyncio.Event  # set once it has caught up with its network after connecting
    secrets: set[str]  # values the log must never show (tokens, passwords), once read

    async def connect(self) -> None: ...

    async def run(self) -> None:
        """Serve until `close()`; raising is fatal for the whole bot."""

    async def close(self) -> None: ...


class Router:
    """One transport for the app, made of one transport per network."""

    def __init__(self) -> None:
        self.by_network: dict[str, NetworkTransport] = {}

    def attach(self, transport: NetworkTransport) -> None:
        if transport.network in self.by_network:
            raise ValueError(f"a {transport.network} transport is attached already")
        self.by_network[transport.network] = transport

    def _for_room(self, room_id: str) -> NetworkTransport | None:
        return self.by_network.get(network_of_room(room_id))

    def _for_person(self, user_id: str) -> NetworkTransport | None:
        return self.by_network.get(network_of_person(user_id))

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        transport = (self._for_room(out.room_id) if out.room_id is not None
                     else self._for_person(out.user_id or ""))
        if transport is None:
            raise DeliveryError(f"no network attached delivers to {out.destination}",
                                permanent=True)
        return await transport.deliver(out, txn_id)

    def power_level(self, room_id: str, user_id: str) -> int:
        transport = self._for_room(room_id)
        return transport.power_level(room_id, user_id) if transport else 0

    def members(self, room_id: str) -> list[str]:
        transport = self._for_room(room_id)
        return transport.members(room_id) if transport else []

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        transport = self._for_person(user_id)
        return transport.rooms_with(user_id) if transport else []

    async def create_private_room(self, name: str, invitees: list[str]) -> str:
        if not invitees or not same_network(*invitees):
            raise ValueError("a private room needs people on one network (else: a relay)")
        transport = self._for_person(invitees[0])
        if transport is None:
            raise DeliveryError(f"no network attached for {invitees[0]}", permanent=True)
        return await transport.create_private_room(name, invitees)

    def identity_unconfirmed(self, user_id: str) -> bool:
        transport = self._for_person(user_id)
        return transport.identity_unconfirmed(user_id) if transport else False

    async def confirm_identity(self, user_id: str) -> bool:
        transport = self._for_person(user_id)
        return await transport.confirm_identity(user_id) if transport else False
