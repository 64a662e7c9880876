"""Per-room settings (raw stored values; bot/room_settings.py knows what they mean)."""

from __future__ import annotations

from bot.store.base import Area, placeholders


class SettingsArea(Area):
    async def room(self, room_id: str) -> dict[str, str]:
        rows = await self._tx.fetchall(
            "SELECT key, value FROM room_settings WHERE room_id = ?", (room_id,))
        return {r["key"]: r["value"] for r in rows}

    async def rooms(self, room_ids: list[str]) -> dict[str, dict[str, str]]:
        """Several rooms' stored values in one query; every room asked for has an entry."""
        found: dict[str, dict[str, str]] = {room_id: {} for room_id in room_ids}
        rows = await self._tx.fetchall(
            f"SELECT room_id, key, value FROM room_settings "  # noqa: S608 - placeholders only
            f"WHERE room_id IN ({placeholders(room_ids)})", room_ids)
        for r in rows:
            found[r["room_id"]][r["key"]] = r["value"]
        return found

    async def rooms_setting(self, key: str) -> dict[str, str]:
        """Every room's stored value for `key` (the rooms that have one)."""
        rows = await self._tx.fetchall(
            "SELECT room_id, value FROM room_settings WHERE key = ?", (key,))
        return {r["room_id"]: r["value"] for r in rows}

    async def set(self, room_id: str, key: str, value: str | None) -> None:
        """Store a room's value for `key`; None removes it (back to the default)."""
        if value is None:
            await self._tx.execute(
                "DELETE FROM room_settings WHERE room_id = ? AND key = ?", (room_id, key))
            return
        await self._tx.execute(
            "INSERT INTO room_settings (room_id, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, key) DO UPDATE SET value = excluded.value",
            (room_id, key, value),
        )
