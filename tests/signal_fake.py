"""A fake signal-cli daemon (multi-account mode, `--receive-mode=manual`) on a loopback socket.

It speaks the daemon's line-delimited JSON-RPC with the message shapes of signal-cli 0.13.19 (its
manual's examples, its JSON classes, and what the real daemon answered in
tests/contract/test_signal_daemon.py, which checks the framing and errors of this fake against the
real one). What it cannot check against the real daemon without the Signal servers (sending,
groups, receiving) follows signal-cli's JSON classes: `JsonSendMessageResult`, `JsonMessageEnvelope`,
`ListGroupsCommand.JsonGroup`, and its error codes (-1 user, -3 IO, -4 untrusted key, -5 rate limit).

Scriptable: `inject()` a message as the Signal servers would deliver it (kept until a subscribed
client gets it, like the servers keep messages for an offline device), set `groups`, add or remove
a member with the group update signal-cli delivers for it (`add_member`, `remove_member`: an
envelope whose groupInfo type is UPDATE, saying nothing of who), make `listGroups` fail
(`list_groups_failures`), make sends fail per recipient (`fail_next`, `identity_changed`),
`crash()` and `start()` again. Every send is recorded in `sends`. Phone numbers are included wherever signal-cli includes them, so tests can
check that the bot drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

VERSION = "0.13.19"
# Methods that need no account in multi-account mode (the rest are per-account commands).
MULTI_ACCOUNT_METHODS = {"version", "listAccounts", "startLink", "finishLink", "register",
                         "verify", "subscribeReceive", "unsubscribeReceive"}
ACCOUNT_METHODS = {"send", "listGroups", "updateGroup", "trust", "remoteDelete", "sendTyping",
                   "listContacts", "quitGroup", "sendReceipt", "listIdentities", "getUserStatus",
                   "sendReaction", "updateProfile", "submitRateLimitChallenge"}


def error(code: int, message: str, request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message, "data": None},
            "id": request_id}


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass
class Person:
    uuid: str
    number: str  # signal-cli reports it; the bot must never keep it
    name: str


@dataclass
class Sent:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the daemon ran it


@dataclass
class FakeSignalDaemon:
    account: str  # the bot's account id, as in the transport's config
    bot_uuid: str
    people: dict[str, Person] = field(default_factory=dict)  # by uuid
    # groupId -> {"name", "members": [uuid], "admins": [uuid], "expiration": int, "revision": int}
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The next this many listGroups calls fail, as signal-cli answers when reading its group
    # store throws (-32603, the exception's message); `list_groups_calls` counts every call.
    list_groups_failures: int = 0
    list_groups_calls: int = 0
    sends: list[Sent] = field(default_factory=list)
    identity_changed: set[str] = field(default_factory=set)  # uuids whose keys are untrusted
    trusted_calls: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    socket_path: str | None = None  # serve a unix socket there instead of TCP
    # Close every connection after this many more notifications (a daemon dying mid-burst).
    crash_after: int | None = None
    # "subscription" (after subscribeReceive) or "plain" (a daemon receiving on start, and
    # signal-cli's jsonRpc mode): the two shapes of a receive notification.
    notification_shape: str = "subscription"

    def __post_init__(self) -> None:
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._subscribers: dict[asyncio.StreamWriter, int] = {}
        self._subscriptions = itertools.count(0)
        self._waiting: deque[dict[str, Any]] = deque()  # envelopes "on the server"
        self._failures: dict[str, deque[dict[str, Any]]] = {}
        self._clock = itertools.count(int(time.time() * 1000))
        self._group_ids = itertools.count(1)
        self.delivered: list[dict[str, Any]] = []  # envelopes handed to a client
        self.crashed = asyncio.Event()

    # ---- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.socket_path is not None:
            self._server = await asyncio.start_unix_server(self._serve, self.socket_path)
        else:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        self.crashed = asyncio.Event()

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}" if self.socket_path else f"tcp:{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop like a killed daemon: connections drop, requests in flight are never answered."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        self._subscribers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self.crashed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while not reader.at_eof():
                line = await reader.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                answer = await self.answer_line(line, writer)
                if answer is not None and writer in self._clients:
                    writer.write(json.dumps(answer).encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            self._subscribers.pop(writer, None)
            writer.close()

    # ---- JSON-RPC framing, as signal-cli does it ----------------------------------------------

    async def answer_line(self, line: bytes, writer: asyncio.StreamWriter | None = None) -> Any:
        try:
            message = json.loads(line)
        except ValueError:
            return error(-32700, "parse error", None)
        if isinstance(message, list):
            if not message:
                return error(-32600, "invalid request", None)
            answers = [await self._answer(item, writer) for item in message]
            return [a for a in answers if a is not None] or None
        return await self._answer(message, writer)

    async def _answer(self, request: Any, writer: asyncio.StreamWriter | None) -> Any:
        if not isinstance(request, dict):
            return error(-32600, "invalid request", None)
        request_id = request.get("id")
        if isinstance(request_id, (dict, list)):
            return error(-32600, "invalid request id", None)
        if request.get("jsonrpc") != "2.0":
            return error(-32600, "only jsonrpc version 2.0 is supported", request_id)
        method = request.get("method")
        if not isinstance(method, str):
            return error(-32600, "method field must be set", request_id)
        params = request.get("params")
        if params is not None and not isinstance(params, dict):
            return error(-32600, "params must be an object", request_id) if "id" in request else None
        try:
            result = await self._call(method, dict(params or {}), writer)
        except RpcFailure as exc:
            if "id" not in request:
                return None
            answer = error(exc.code, exc.message, request_id)
            answer["error"]["data"] = exc.data
            return answer
        if "id" not in request:
            return None  # a notification: no answer, as JSON-RPC says
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    async def _call(self, method: str, params: dict[str, Any],
                    writer: asyncio.StreamWriter | None) -> Any:
        if method in ACCOUNT_METHODS:
            account = params.pop("account", None)
            if account is None:
                raise RpcFailure(-32602, "Method requires valid account parameter")
            if account != self.account:
                raise RpcFailure(-32602, "Specified account does not exist")
            return await getattr(self, "_m_" + method)(params)
        if method == "version":
            return {"version": VERSION}
        if method == "listAccounts":
            return [{"number": self.account}]
        if method == "subscribeReceive":
            subscription = next(self._subscriptions)
            if writer is not None:
                self._subscribers[writer] = subscription
                asyncio.get_running_loop().call_soon(self._flush)
            return subscription
        if method == "startLink":
            return {"deviceLinkUri": "sgnl://linkdevice?uuid=fake-link&pub_key=BQ%2Bfake"}
        if method == "finishLink":
            if not params.get("deviceLinkUri"):
                raise RpcFailure(-1, "Missing deviceLinkUri.")
            return {"number": self.account}
        raise RpcFailure(-32601, "Method not implemented")

    # ---- receiving ----------------------------------------------------------------------------

    def envelope(self, sender: str, text: str | None, *, group_id: str | None = None,
                 mentions: list[dict[str, Any]] | None = None, expires: int | None = None,
                 timestamp: int | None = None, remote_delete: int | None = None) -> dict[str, Any]:
        person = self.people[sender]
        ts = timestamp if timestamp is not None else next(self._clock)
        if expires is None:  # a message carries its chat's disappearing timer
            expires = self.groups[group_id].get("expiration", 0) if group_id is not None else 0
        data: dict[str, Any] = {"timestamp": ts, "message": text, "expiresInSeconds": expires,
                                "viewOnce": False}
        if mentions:
            data["mentions"] = [{"name": self.people[m["uuid"]].number,
                                 "number": self.people[m["uuid"]].number, **m} for m in mentions]
        if group_id is not None:
            data["groupInfo"] = self._group_info(group_id, "DELIVER")
        if remote_delete is not None:
            data["remoteDelete"] = {"timestamp": remote_delete}
            data.pop("message")
        return {"source": person.number, "sourceNumber": person.number, "sourceUuid": person.uuid,
                "sourceName": person.name, "sourceDevice": 1, "timestamp": ts,
                "serverReceivedTimestamp": ts + 5, "serverDeliveredTimestamp": ts + 9,
                "dataMessage": data}

    def _group_info(self, group_id: str, kind: str) -> dict[str, Any]:
        group = self.groups[group_id]
        return {"groupId": group_id, "groupName": group["name"],
                "revision": group.get("revision", 1), "type": kind}

    def group_update(self, sender: str, group_id: str) -> dict[str, Any]:
        """The envelope of a group change made by `sender` (JsonDataMessage with no body and a
        JsonGroupInfo of type UPDATE at the new revision). The bot's own account as `sender` is
        a change made on its other device: the sync copy (syncMessage.sentMessage)."""
        ts = next(self._clock)
        data = {"timestamp": ts, "message": None,
                "expiresInSeconds": self.groups[group_id].get("expiration", 0), "viewOnce": False,
                "groupInfo": self._group_info(group_id, "UPDATE")}
        if sender == self.bot_uuid:
            who: dict[str, Any] = {"source": self.account, "sourceNumber": None,
                                   "sourceUuid": self.bot_uuid, "sourceName": "", "sourceDevice": 2}
            content: dict[str, Any] = {"syncMessage": {"sentMessage": {
                "destination": None, "destinationNumber": None, "destinationUuid": None, **data}}}
        else:
            person = self.people[sender]
            who = {"source": person.number, "sourceNumber": person.number,
                   "sourceUuid": person.uuid, "sourceName": person.name, "sourceDevice": 1}
            content = {"dataMessage": data}
        return {**who, "timestamp": ts, "serverReceivedTimestamp": ts + 5,
                "serverDeliveredTimestamp": ts + 9, **content}

    def add_member(self, group_id: str, uuid: str, *, by: str | None = None) -> dict[str, Any]:
        """`by` (an admin; or the person, joining by the group's link) adds `uuid`: the group's
        next revision, and its update delivered to the bot."""
        group = self.groups[group_id]
        group["members"].append(uuid)
        return self._changed(group_id, by or uuid)

    def remove_member(self, group_id: str, uuid: str, *, by: str | None = None) -> dict[str, Any]:
        """`uuid` leaves (or `by`, an admin, removes them): as `add_member`."""
        group = self.groups[group_id]
        group["members"].remove(uuid)
        if uuid in group.get("admins", []):
            group["admins"].remove(uuid)
        return self._changed(group_id, by or uuid)

    def _changed(self, group_id: str, sender: str) -> dict[str, Any]:
        group = self.groups[group_id]
        group["revision"] = group.get("revision", 1) + 1
        return self.inject(self.group_update(sender, group_id))

    def inject(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """The Signal servers have a message for the bot: delivered once a client subscribes."""
        self._waiting.append(envelope)
        self._flush()
        return envelope

    def redeliver(self, envelope: dict[str, Any]) -> None:
        """Deliver an envelope again (the daemon was killed before it knew it had handed it on)."""
        self._waiting.appendleft(envelope)
        self._flush()

    def _flush(self) -> None:
        while self._waiting and self._subscribers:
            writer, subscription = next(iter(self._subscribers.items()))
            envelope = self._waiting.popleft()
            received = {"envelope": envelope, "account": self.account}
            params = received if self.notification_shape == "plain" else {
                "subscription": subscription, "result": received}
            notification = {"jsonrpc": "2.0", "method": "receive", "params": params}
            writer.write(json.dumps(notification).encode() + b"\n")
            self.delivered.append(envelope)
            if self.crash_after is not None:
                self.crash_after -= 1
                if self.crash_after <= 0:
                    self.crash_after = None
                    asyncio.get_running_loop().create_task(self.stop())
                    return

    # ---- sending ------------------------------------------------------------------------------

    def fail_next(self, uuid: str, kind: str, **extra: Any) -> None:
        """The next send to this person gets this outcome (e.g. RATE_LIMIT_FAILURE)."""
        self._failures.setdefault(uuid, deque()).append({"type": kind, **extra})

    def _address(self, uuid: str) -> dict[str, Any]:
        person = self.people.get(uuid)
        return {"uuid": uuid, "number": person.number if person else None, "username": None}

    def _outcome(self, uuid: str, group_id: str | None) -> dict[str, Any]:
        result: dict[str, Any] = {"recipientAddress": self._address(uuid)}
        if group_id is not None:
            result["groupId"] = group_id
        queued = self._failures.get(uuid)
        if queued:
            result.update(queued.popleft())
        elif uuid in self.identity_changed:
            result["type"] = "IDENTITY_FAILURE"
        else:
            result["type"] = "SUCCESS"
        return result

    async def _m_send(self, params: dict[str, Any]) -> dict[str, Any]:
        group_id = params.get("groupId")
        if group_id is not None:
            if group_id not in self.groups:
                raise RpcFailure(-1, f"Failed to send to group: Group not found: {group_id}")
            recipients = [u for u in self.groups[group_id]["members"] if u != self.bot_uuid]
        else:
            recipients = params.get("recipient") or []
            if isinstance(recipients, str):
                recipients = [recipients]
        timestamp = next(self._clock)
        results = [self._outcome(u, group_id) for u in recipients]
        self.sends.append(Sent("send", params, time.monotonic()))
        response = {"timestamp": timestamp, "results": results}
        if group_id is None and results and not any(r["type"] == "SUCCESS" for r in results):
            kinds = {r["type"] for r in results}
            if kinds == {"IDENTITY_FAILURE"}:
                raise RpcFailure(-4, "Failed to send message due to untrusted identities",
                                 {"response": response})
            if kinds == {"RATE_LIMIT_FAILURE"}:
                raise RpcFailure(-5, "Failed to send message due to rate limiting",
                                 {"response": response})
            raise RpcFailure(-1, "Failed to send message", {"response": response})
        return response

    async def _m_listGroups(self, params: dict[str, Any]) -> list[dict[str, Any]]:  # noqa: N802
        self.list_groups_calls += 1
        if self.list_groups_failures > 0:
            self.list_groups_failures -= 1
            raise RpcFailure(-32603, "null (NullPointerException)")
        wanted = params.get("groupId")
        wanted = [wanted] if isinstance(wanted, str) else wanted
        return [{
            "id": group_id, "name": group["name"], "description": "", "isMember": True,
            "isBlocked": False, "messageExpirationTime": group.get("expiration", 0),
            "members": [self._member(u) for u in group["members"]],
            "pendingMembers": [], "requestingMembers": [],
            "admins": [self._member(u) for u in group.get("admins", [])], "banned": [],
            "permissionAddMember": "EVERY_MEMBER", "permissionEditDetails": "EVERY_MEMBER",
            "permissionSendMessage": "EVERY_MEMBER", "groupInviteLink": None,
        } for group_id, group in self.groups.items() if not wanted or group_id in wanted]

    def _member(self, uuid: str) -> dict[str, Any]:
        if uuid == self.bot_uuid:
            return {"number": None, "uuid": uuid}
        return {"number": self.people[uuid].number, "uuid": uuid}

    async def _m_updateGroup(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        members = params.get("member") or []
        group_id = params.get("groupId") or f"FakeGroup{next(self._group_ids)}=="
        self.groups[group_id] = {"name": params.get("name", ""),
                                 "members": [self.bot_uuid, *members], "admins": [self.bot_uuid],
                                 "expiration": params.get("expiration", 0)}
        self.sends.append(Sent("updateGroup", params, time.monotonic()))
        results = [self._outcome(u, group_id) for u in members]
        return {"groupId": group_id, "timestamp": next(self._clock), "results": results}

    async def _m_trust(self, params: dict[str, Any]) -> dict[str, Any]:
        for uuid in params.get("recipient") or []:
            self.trusted_calls.append(uuid)
            self.identity_changed.discard(uuid)
        return {}

    async def _m_remoteDelete(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        self.sends.append(Sent("remoteDelete", params, time.monotonic()))
        return {"timestamp": next(self._clock), "results": []}

    async def _m_sendTyping(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {}

    # ---- what tests look at -------------------------------------------------------------------

    def messages(self, *, to_group: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        """The params of sends, to one group or one person."""
        found = []
        for sent in self.sends:
            if sent.method != "send":
                continue
            if to_group is not None and sent.params.get("groupId") != to_group:
                continue
            if to is not None and to not in (sent.params.get("recipient") or []):
                continue
            found.append(sent.params)
        return found
