"""Which network delivers to which destination, when one bot serves several.

Ids say their network (bot/networks.py). The app talks to one `Router`, which looks like a single
transport and hands each call to the transport of the right network.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from bot.context import Transport
from bot.messages import DeliveryError, Outgoing, RoomRequest
from bot.networks import network_of_person, network_of_room, same_network

if TYPE_CHECKING:
    from bot.app import App

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

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        invitees = request.invitees
        if not invitees or not same_network(*invitees):
            # Handlers introduce people on different networks through a relay instead.
            raise DeliveryError("a room needs everyone on one network", permanent=True)
        transport = self._for_person(invitees[0])
        if transport is None:
            raise DeliveryError(f"no network attached for {invitees[0]}", permanent=True)
        return await transport.make_room(request, existing)

    async def join_room(self, address: str) -> str:
        transport = self._for_room(address)
        if transport is None:
            raise DeliveryError(f"no network attached reaches {address}", permanent=True)
        return await transport.join_room(address)

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        # Which network made the room is not said: every one has to have caught up.
        await asyncio.gather(*(t.caught_up_since(moment, timeout)
                               for t in self.by_network.values()))

    def identity_unconfirmed(self, user_id: str) -> bool:
        transport = self._for_person(user_id)
        return transport.identity_unconfirmed(user_id) if transport else False

    async def confirm_identity(self, user_id: str) -> bool:
        transport = self._for_person(user_id)
        return await transport.confirm_identity(user_id) if transport else False
