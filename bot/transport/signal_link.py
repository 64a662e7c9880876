"""`mutual-aid-bot signal link`: link the bot as a secondary device of an existing Signal account.

The daemon must serve accounts without `-a` (linking adds an account to it). It makes a
`sgnl://linkdevice?...` address; the phone shows it as a QR code to scan under Settings > Linked
devices. The number of the linked account is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable

import segno

from bot.config import SignalConfig
from bot.transport.signal_rpc import SignalRpc

CONNECT_TIMEOUT_S = 15.0
# The phone must scan within this time; signal-cli's own limit is similar.
SCAN_TIMEOUT_S = 600.0


def qr_text(data: str) -> str:
    """A QR code drawn with block characters, two rows per line, with a quiet zone."""
    out = io.StringIO()
    segno.make(data, error="l").terminal(out=out, compact=True, border=2)
    return out.getvalue()


async def link_device(signal: SignalConfig, show: Callable[[str], None],
                      scan_timeout: float = SCAN_TIMEOUT_S) -> str | None:
    """Link and return the new account's id (ACI) when the daemon says it."""
    rpc = SignalRpc(signal.daemon)
    running = asyncio.create_task(rpc.run())
    try:
        await rpc.wait_connected(CONNECT_TIMEOUT_S)
        uri = (await rpc.call("startLink"))["deviceLinkUri"]
        show(qr_text(uri))
        show(f"Scan this with Signal on your phone: Settings > Linked devices > Link new device.\n"
             f"(Or link it from another signal-cli with: signal-cli addDevice --uri '{uri}')\n"
             f"Waiting up to {scan_timeout / 60:.0f} minutes...")
        result = await rpc.call("finishLink", {"deviceLinkUri": uri,
                                               "deviceName": signal.device_name},
                                timeout=scan_timeout)
        return result.get("aci") if isinstance(result, dict) else None
    finally:
        await rpc.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running
