"""A JSON-RPC 2.0 client for signal-cli's daemon (`signal-cli daemon --socket PATH | --tcp HOST:PORT`).

The daemon speaks line-delimited JSON: one request or response per line. Replies are matched to
requests by id; lines without an id are notifications (`receive`). The connection is supervised:
when it drops, calls in flight fail with `ConnectionLost` and the client reconnects with bounded
exponential back-off. Nothing here knows about mutual aid, or even about messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# Receive notifications may carry long texts and attachment metadata; a line longer than this
# is a broken peer.
LINE_LIMIT = 16 * 1024 * 1024
MAX_BACKOFF_S = 30.0
CALL_TIMEOUT_S = 60.0

# Error codes: JSON-RPC's own, and signal-cli's for failed commands (-1 user error, -3 IO error,
# -4 untrusted key, -5 rate limit; from its command handler).
IO_ERROR = -3
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

Notification = Callable[[str, dict[str, Any]], Awaitable[None]]


class RpcError(Exception):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    @property
    def response(self) -> dict[str, Any]:
        """The command's own result, which signal-cli attaches to send errors (per-recipient)."""
        if isinstance(self.data, dict) and isinstance(self.data.get("response"), dict):
            return self.data["response"]
        return {}


class ConnectionLost(Exception):
    """The connection closed before the reply came: the request may or may not have run."""


def parse_address(address: str) -> tuple[str, str | int]:
    """`unix:/path/to/socket` or `tcp:host:port` (also `host:port`)."""
    if address.startswith("unix:"):
        return "unix", address[len("unix:"):]
    host, sep, port = address.removeprefix("tcp:").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a daemon address: {address!r} (use unix:/path or tcp:host:port)")
    return host.strip("[]"), int(port)


class SignalRpc:
    def __init__(self, address: str, on_notification: Notification | None = None,
                 on_connect: Callable[[], Awaitable[None]] | None = None) -> None:
        self._where = parse_address(address)
        self._on_notification = on_notification
        self._on_connect = on_connect
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        # Notifications are handed over in order by a task of their own, so a consumer that
        # makes calls of its own (e.g. reads group details) never waits on its own reader.
        self._notifications: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.reconnects = 0

    # ---- connection -----------------------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where = self._where
        if kind == "unix":
            return await asyncio.open_unix_connection(str(where), limit=LINE_LIMIT)
        return await asyncio.open_connection(kind, int(where), limit=LINE_LIMIT)

    async def run(self) -> None:
        """Stay connected until `close()`: read replies and notifications, reconnect on loss."""
        consumer = asyncio.create_task(self._consume(), name="signal-rpc-notifications")
        try:
            await self._connect_loop()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    async def _connect_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                reader, writer = await self._open()
            except OSError as exc:
                failures += 1
                log.warning("cannot reach the signal-cli daemon (%s); attempt %d",
                            type(exc).__name__, failures)
                await self._backoff(failures)
                continue
            if failures:
                log.info("connected to the signal-cli daemon after %d failed attempts", failures)
            failures = 0
            self._writer = writer
            self._connected.set()
            reading = asyncio.create_task(self._read(reader), name="signal-rpc-read")
            try:
                if self._on_connect is not None:
                    await self._on_connect()
                await reading
            except (ConnectionLost, OSError, TimeoutError) as exc:
                # An RpcError from on_connect is the daemon refusing us: it goes to the caller.
                log.warning("signal-cli daemon connection setup failed (%s)", exc)
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
                self._disconnected(writer)
            if not self._stopping.is_set():
                self.reconnects += 1
                failures += 1
                await self._backoff(failures)

    async def _backoff(self, failures: int) -> None:
        delay = min(MAX_BACKOFF_S, 0.25 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _disconnected(self, writer: asyncio.StreamWriter) -> None:
        self._connected.clear()
        self._writer = None
        writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("the daemon connection closed"))
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError) as exc:  # ValueError: a line over LINE_LIMIT
                log.warning("reading from the signal-cli daemon failed (%s)", type(exc).__name__)
                return
            if not line:
                if not self._stopping.is_set():
                    log.warning("the signal-cli daemon closed the connection")
                return
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("ignoring a line from the daemon that is not JSON")
                continue
            for item in message if isinstance(message, list) else [message]:
                if isinstance(item, dict):
                    self._dispatch(item)

    def _dispatch(self, item: dict[str, Any]) -> None:
        if "method" in item and item.get("id") is None:
            params = item.get("params")
            self._notifications.put_nowait((str(item["method"]),
                                            params if isinstance(params, dict) else {}))
            return
        future = self._pending.pop(item.get("id"), None) if isinstance(item.get("id"), int) else None
        if future is None or future.done():
            return
        error = item.get("error")
        if isinstance(error, dict):
            future.set_exception(RpcError(int(error.get("code", 0)), str(error.get("message", "")),
                                          error.get("data")))
        else:
            future.set_result(item.get("result"))

    async def _consume(self) -> None:
        while True:
            method, params = await self._notifications.get()
            if self._on_notification is None:
                continue
            try:
                await self._on_notification(method, params)
            except Exception:
                # A failing consumer must not stop the ones after it; never the params: private.
                log.exception("handling a %r notification failed", method)

    # ---- calls ----------------------------------------------------------------------------

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def call(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = CALL_TIMEOUT_S) -> Any:
        """One request; its result, or RpcError / ConnectionLost / TimeoutError."""
        writer = self._writer
        if writer is None:
            raise ConnectionLost("not connected to the daemon")
        request_id = next(self._ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params:
            request["params"] = params
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
            return await asyncio.wait_for(future, timeout)
        except (OSError, RuntimeError) as exc:  # RuntimeError: writing to a closed transport
            raise ConnectionLost(type(exc).__name__) from exc
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        self._stopping.set()
        if self._writer is not None:
            self._writer.close()
