"""Signal transport: signal-cli's JSON-RPC daemon.

It knows the network and nothing of mutual aid. Incoming messages become `Incoming` items for the
app (group messages that start with the command prefix, and every 1:1 message, which is the DM);
`Outgoing` messages become `send` requests with Signal text styles, mentions and a quote of the
command they answer.

People are known by their account id (ACI, a uuid) only: the phone numbers signal-cli may report
(`source`, `sourceNumber`, `number` in group lists and send results) are dropped where the JSON is
read and never reach storage, logs or replies.

Rooms: a group is `signal:group:<groupId>`, a 1:1 chat is `signal:dm:<uuid>`. A message is
`signal:<sender uuid>:<timestamp>`, which Signal makes unique per sender: the inbox ignores a
message it already has, so one delivered twice (after a daemon restart) is answered once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.config import BotConfig, SignalConfig
from bot.messages import (
    DeliveryError,
    Edit,
    Event,
    FatalTransportError,
    Incoming,
    Membership,
    Outgoing,
    Reaction,
    Redaction,
    RoomRequest,
)
from bot.networks import SIGNAL, SIGNAL_GROUP_PREFIX
from bot.signal_text import UUID_RE, person_id, to_signal, uuid_of
from bot.transport.signal_rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    IO_ERROR,
    ConnectionLost,
    RpcError,
    SignalRpc,
)

if TYPE_CHECKING:
    from bot.app import App
    from bot.storage import Storage

log = logging.getLogger(__name__)

GROUP_PREFIX = SIGNAL_GROUP_PREFIX
DM_PREFIX = "signal:dm:"
IDENTITY_META = "signal:identity-unconfirmed"
SENT_META = "signal:sent-txns"
# Transaction ids of the last sends, kept to skip a resend after a crash: more than an outbox batch.
SENT_REMEMBERED = 200
CONNECT_WAIT_S = 10.0
IDENTITY_NOTICE = (
    "Your Signal safety number with this bot changed (a new phone, or Signal reinstalled). "
    "Until you confirm it is still you, I will not send you anything private. To confirm, send "
    "me {confirm} here."
)
WITHHELD_NOTICE = (
    "The safety number of someone in this chat changed, so I am holding back the details until "
    "they confirm in their direct chat with me."
)


def group_room(group_id: str) -> str:
    return GROUP_PREFIX + group_id


def dm_room(uuid: str) -> str:
    return DM_PREFIX + uuid.lower()


class SignalSetupError(FatalTransportError):
    """The daemon does not serve the configured account: the bot cannot go on; says why."""


class SignalDeliveryError(DeliveryError):
    """A delivery failure with, for rate limits, the delay the server asked for."""

    def __init__(self, reason: str, *, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(reason, permanent=permanent)
        self.retry_after = retry_after


@dataclass(frozen=True)
class MemberChange:
    """Who joined and who left one group between two reads of its member list (ACIs)."""

    group_id: str
    joined: frozenset[str]
    left: frozenset[str]


@dataclass
class Group:
    name: str
    members: set[str] = field(default_factory=set)  # ACIs
    admins: set[str] = field(default_factory=set)
    expires_in_seconds: int = 0
    fetched_at: float = 0.0


def _uuid(value: Any) -> str | None:
    """An ACI from a uuid string or an address object; None for numbers and anything else."""
    if isinstance(value, dict):
        value = value.get("uuid")
    if isinstance(value, str) and UUID_RE.fullmatch(value):
        return value.lower()
    return None


def sender_uuid(envelope: dict[str, Any]) -> str | None:
    service_id = envelope.get("sourceServiceId")
    return _uuid(envelope.get("sourceUuid")) or _uuid(service_id)


def updated_group(envelope: dict[str, Any]) -> str | None:
    """The group id of a group change (members, name, settings): a data message, or the sync
    copy of one made on another of the account's devices, whose groupInfo type is UPDATE. It
    does not say what changed, nor who joined."""
    sync = envelope.get("syncMessage")
    for data in (envelope.get("dataMessage"),
                 sync.get("sentMessage") if isinstance(sync, dict) else None):
        group = data.get("groupInfo") if isinstance(data, dict) else None
        if (isinstance(group, dict) and group.get("type") == "UPDATE"
                and isinstance(group.get("groupId"), str)):
            return group["groupId"]
    return None


def membership_events(changes: list[MemberChange], when: datetime) -> list[Event]:
    """One `Membership` per person who joined or left a group, as Matrix reports a join or a
    leave (a group is never a direct chat). Who they are is not logged: only how many."""
    events: list[Event] = []
    ms = int(when.timestamp() * 1000)
    for change in changes:
        log.info("Signal group %s: %d joined, %d left", group_room(change.group_id),
                 len(change.joined), len(change.left))
        # The id is unique per change (the inbox keeps an event once, so a rejoin must be a new
        # one) and does not name the person: event ids are logged.
        for n, uuid in enumerate(sorted(change.joined) + sorted(change.left)):
            events.append(Membership(f"signal:member:{change.group_id}:{ms}:{n}",
                                     group_room(change.group_id), person_id(uuid), False, when))
    return events


# The sender of the size checks at start: the bot itself, whatever its account is (a phone
# number or none in the config; an empty sender would read as an erased one and be skipped).
START_CHECK_SENDER = "signal:bot"


def size_checks(group_ids: list[str], when: datetime) -> list[Event]:
    """One `Membership` per group, by the bot itself, so that its size is compared with the
    pod's split size at start (the alert is given once, so this repeats nothing)."""
    ms = int(when.timestamp() * 1000)
    return [Membership(f"signal:member:{group_id}:{ms}:start", group_room(group_id),
                       START_CHECK_SENDER, False, when) for group_id in group_ids]


def text_with_mentions(text: str, mentions: Any) -> str:
    """The message text with each mention (a placeholder in Signal) replaced by the person's id,
    so `!claim`-style commands can name people. Ranges are UTF-16 code units."""
    if not isinstance(mentions, list) or not mentions:
        return text
    units = text.encode("utf-16-le")
    spans = []
    for mention in mentions:
        if not isinstance(mention, dict):
            continue
        uuid, start, length = _uuid(mention.get("uuid")), mention.get("start"), mention.get("length")
        if uuid and isinstance(start, int) and isinstance(length, int) and start >= 0 and length >= 0:
            spans.append((start, length, uuid))
    for start, length, uuid in sorted(spans, reverse=True):
        if (start + length) * 2 > len(units):
            continue
        units = units[:start * 2] + person_id(uuid).encode("utf-16-le") + units[(start + length) * 2:]
    return units.decode("utf-16-le", errors="replace")


def _event_timestamp(event_id: str | None) -> tuple[str, int] | None:
    """(author uuid, timestamp) of a `signal:<uuid>:<ts>` event id (the bot's own: "bot")."""
    if not event_id or not event_id.startswith("signal:"):
        return None
    _, author, ts = event_id.split(":", 2) if event_id.count(":") == 2 else ("", "", "")
    return (author, int(ts)) if ts.isdigit() else None


class SignalTransport:
    network = SIGNAL

    def __init__(self, config: BotConfig, storage: Storage, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert config.signal is not None
        self.config = config
        self.signal: SignalConfig = config.signal
        self.storage = storage
        self.app: App | None = None
        self.rpc = SignalRpc(self.signal.daemon, on_notification=self._on_notification,
                             on_connect=self._on_connect)
        self._clock = clock
        # The bot's own account id, when the config names it by id (as `signal link` suggests):
        # group member lists include the bot, which is never a member to mention or invite.
        account = self.signal.account.lower()
        self._own_uuid = account if UUID_RE.fullmatch(account) else None
        self._groups: dict[str, Group] = {}  # by groupId
        self._all_groups_read_at = float("-inf")
        self._dm_expiry: dict[str, int] = {}  # uuid -> their chat's disappearing timer
        self._rate_limited_until = 0.0
        # Person ids whose safety number changed and who have not confirmed it in their DM.
        self.unconfirmed: set[str] = set()
        self._identity_dirty = False
        self._intro_groups: set[str] = set()  # groups the bot created for introductions
        # txn id -> what deliver returned, for the last sends (signal-cli has no idempotency key).
        self._sent: dict[str, str | None] = {}
        self.connected_once = asyncio.Event()
        self.caught_up = self.connected_once  # what the runtime waits for before scheduled sends
        self.secrets: set[str] = set()  # the daemon is on loopback, without credentials

    # ---- life cycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        async with self.storage.transaction() as tx:
            saved = await tx.delivery.get_meta(IDENTITY_META)
            sent = await tx.delivery.get_meta(SENT_META)
        self.unconfirmed = set(json.loads(saved)) if saved else set()
        self._sent = json.loads(sent) if sent else {}

    async def run(self) -> None:
        """Stay connected to the daemon until `close()`."""
        await self.rpc.run()

    async def close(self) -> None:
        await self.rpc.close()

    def _params(self, **params: Any) -> dict[str, Any]:
        if self.signal.account:
            params["account"] = self.signal.account
        return {k: v for k, v in params.items() if v not in (None, [], "")}

    async def _on_connect(self) -> None:
        try:
            if self.signal.receive_mode == "manual":
                await self.rpc.call("subscribeReceive", self._params())
            changes = await self._refresh_groups(None)
        except RpcError as exc:
            if exc.code == INVALID_PARAMS:
                raise SignalSetupError(
                    f"the signal-cli daemon at {self.signal.daemon} says: {exc.message}. Set "
                    "signal.account to the bot's account (or start the daemon with -a ACCOUNT "
                    "and leave it empty); `mutual-aid-bot signal link` links one.") from exc
            raise
        assert self.app is not None
        now = datetime.now(UTC)
        events = membership_events(changes, now)  # after a daemon restart: who came or went
        if not self.connected_once.is_set():
            self.connected_once.set()
            log.info("connected to the signal-cli daemon: %d groups", len(self._groups))
            # Who joined while the bot was stopped is not known (member lists are not stored),
            # but each group's size is checked once at start, as if someone had joined.
            events += size_checks(list(self._groups), now)
        if events:
            await self.app.receive(events)
        self.app.wake_outbox()  # the daemon is back: retry delivery now

    # ---- groups ---------------------------------------------------------------------------

    async def _refresh_groups(self, group_ids: list[str] | None) -> list[MemberChange]:
        """Read groups' members, admins and timers from the daemon (all groups, or these); who
        joined or left each group already known. A group seen for the first time (the bot's
        first read, or a group it was just added to) is where counting starts: no change."""
        result = await self.rpc.call("listGroups", self._params(groupId=group_ids))
        now = self._clock()
        if group_ids is None:
            self._all_groups_read_at = now
        changes = []
        for entry in result if isinstance(result, list) else []:
            group_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(group_id, str):
                continue
            if not entry.get("isMember", True):
                self._groups.pop(group_id, None)
                continue
            members = {u for u in map(_uuid, entry.get("members") or [])
                       if u and u != self._own_uuid}
            before = self._groups.get(group_id)
            if before is not None and members != before.members:
                changes.append(MemberChange(group_id, frozenset(members - before.members),
                                            frozenset(before.members - members)))
            self._groups[group_id] = Group(
                name=str(entry.get("name") or "Signal group"),
                members=members,
                admins={u for u in map(_uuid, entry.get("admins") or []) if u},
                expires_in_seconds=int(entry.get("messageExpirationTime") or 0),
                fetched_at=now,
            )
        return changes

    async def _fresh(self, group_ids: set[str]) -> list[MemberChange]:
        """Coordinators are read live: refresh the groups a batch speaks in, if not just read."""
        stale = [g for g in group_ids if g not in self._groups
                 or self._clock() - self._groups[g].fetched_at > self.signal.group_cache_seconds]
        # A DM asks which groups the person is in (private requests offer their pods): all.
        everything = not group_ids and (
            self._clock() - self._all_groups_read_at > self.signal.group_cache_seconds)
        if stale or everything:
            try:
                return await self._refresh_groups(stale or None)
            except (RpcError, ConnectionLost, TimeoutError) as exc:
                log.warning("could not read group details (%s); using what is known", exc)
        return []

    async def _group_changed(self, group_id: str, when: datetime) -> None:
        """A group changed (the update does not say how): one read of its members, compared
        with the last. If the read fails, what is known stays as it was."""
        try:
            changes = await self._refresh_groups([group_id])
        except (RpcError, ConnectionLost, TimeoutError) as exc:
            log.warning("could not read the members of %s after a change (%s); its joins and "
                        "leaves are counted at the next read", group_room(group_id), exc)
            return
        if changes:
            assert self.app is not None
            await self.app.receive(membership_events(changes, when))

    def expiry_seconds(self, room_id: str) -> int:
        """The disappearing-messages timer of a chat, as last seen (0: off)."""
        if room_id.startswith(GROUP_PREFIX):
            group = self._groups.get(room_id[len(GROUP_PREFIX):])
            return group.expires_in_seconds if group else 0
        return self._dm_expiry.get(room_id[len(DM_PREFIX):], 0)

    # ---- receiving ------------------------------------------------------------------------

    async def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method != "receive":
            return
        # Two shapes: the envelope in params (automatic receiving) or in params.result (after
        # subscribeReceive); both may carry "account".
        payload = params.get("result") if isinstance(params.get("result"), dict) else params
        envelope = payload.get("envelope")
        if not isinstance(envelope, dict):
            return
        if self.signal.account and payload.get("account") not in (None, self.signal.account):
            return  # another account served by the same daemon
        changed = updated_group(envelope)
        if changed is not None:
            sent = envelope.get("timestamp")
            when = (datetime.fromtimestamp(sent / 1000, UTC) if isinstance(sent, int)
                    else datetime.now(UTC))
            await self._group_changed(changed, when)
            return
        item = self._incoming(envelope)
        if item is None:
            return
        assert self.app is not None
        in_group = item.room_id.startswith(GROUP_PREFIX)
        changes = await self._fresh({item.room_id[len(GROUP_PREFIX):]} if in_group else set())
        await self.app.receive([*membership_events(changes, datetime.now(UTC)), item])

    def _incoming(self, envelope: dict[str, Any]) -> Event | None:
        edit = envelope.get("editMessage")
        data = envelope.get("dataMessage")
        if isinstance(edit, dict) and isinstance(edit.get("dataMessage"), dict):
            data = edit["dataMessage"]
        if not isinstance(data, dict):
            return None  # receipts, typing, sync copies of our own sends: not commands
        uuid = sender_uuid(envelope)
        if uuid is None:
            log.warning("ignoring a message whose sender has no account id")
            return None
        timestamp = data.get("timestamp") or envelope.get("timestamp")
        if not isinstance(timestamp, int):
            return None
        group = data.get("groupInfo")
        group_id = group.get("groupId") if isinstance(group, dict) else None
        room_id = group_room(group_id) if isinstance(group_id, str) else dm_room(uuid)
        expires = data.get("expiresInSeconds")
        if isinstance(expires, int):
            if isinstance(group_id, str) and group_id in self._groups:
                self._groups[group_id].expires_in_seconds = expires
            elif group_id is None:
                self._dm_expiry[uuid] = expires
        when = datetime.fromtimestamp(timestamp / 1000, UTC)
        event_id = f"signal:{uuid}:{timestamp}"
        is_direct = group_id is None
        deleted = data.get("remoteDelete")
        if isinstance(deleted, dict) and isinstance(deleted.get("timestamp"), int):
            return Redaction(event_id, room_id, person_id(uuid),
                             f"signal:{uuid}:{deleted['timestamp']}", is_direct, when)
        reaction = data.get("reaction")
        if isinstance(reaction, dict):
            author = _uuid(reaction.get("targetAuthorUuid") or reaction.get("targetAuthor"))
            target = reaction.get("targetSentTimestamp")
            if reaction.get("isRemove") or not isinstance(target, int):
                return None
            mine = author is None or author == self._own_uuid
            return Reaction(event_id, room_id, person_id(uuid),
                            f"signal:{'bot' if mine else author}:{target}", str(reaction.get("emoji") or ""),
                            is_direct, when)
        text = data.get("message")
        if not isinstance(text, str):
            return None
        text = text_with_mentions(text, data.get("mentions"))
        if isinstance(edit, dict) and isinstance(edit.get("targetSentTimestamp"), int):
            return Edit(event_id, room_id, person_id(uuid),
                        f"signal:{uuid}:{edit['targetSentTimestamp']}", text, is_direct, when)
        if not is_direct and not text.lstrip().startswith(self.config.command_prefix):
            return None
        if datetime.now(UTC) - when > timedelta(hours=self.signal.max_command_age_hours):
            log.info("skipping %s: older than max_command_age_hours", event_id)
            return None
        return Incoming(event_id, room_id, person_id(uuid), text, is_direct, when)

    # ---- delivery -------------------------------------------------------------------------

    def _target(self, out: Outgoing) -> dict[str, Any]:
        where = out.room_id
        if where is None and out.user_id is not None:
            uuid = uuid_of(out.user_id)
            if uuid is None:
                raise SignalDeliveryError(f"{out.user_id} is not a Signal account", permanent=True)
            return {"recipient": [uuid]}
        if where and where.startswith(GROUP_PREFIX):
            return {"groupId": where[len(GROUP_PREFIX):]}
        if where and where.startswith(DM_PREFIX):
            return {"recipient": [where[len(DM_PREFIX):]]}
        raise SignalDeliveryError(f"{where} is not a Signal chat", permanent=True)

    async def deliver(self, out: Outgoing, txn_id: str) -> str | None:
        await self._save_identity()
        if txn_id in self._sent:
            # Sent before a crash that came before the app's sent mark: not again.
            log.info("%s was already sent; not sending it again", txn_id)
            return self._sent[txn_id]
        event_id = await self._deliver(out)
        await self._remember_sent(txn_id, event_id)
        return event_id

    async def _remember_sent(self, txn_id: str, event_id: str | None) -> None:
        """Committed right after the daemon's answer: from here a crash cannot repeat the send."""
        self._sent[txn_id] = event_id
        for old in list(self._sent)[:-SENT_REMEMBERED]:
            del self._sent[old]
        async with self.storage.transaction() as tx:
            await tx.delivery.set_meta(SENT_META, json.dumps(self._sent))

    async def _deliver(self, out: Outgoing) -> str | None:
        target = self._target(out)
        wait = self._rate_limited_until - self._clock()
        if wait > 0:
            raise SignalDeliveryError(f"rate limited for {wait:.0f} s more", retry_after=wait)
        if out.redacts is not None:
            return await self._remote_delete(target, out.redacts)
        if await self._withheld(out, target):
            return None
        rendered = to_signal(out.message)
        params = self._params(**target, message=rendered.text, textStyle=rendered.style_params(),
                              mention=rendered.mention_params())
        quoted = _event_timestamp(out.reply_to)
        if quoted is not None and UUID_RE.fullmatch(quoted[0]):
            params["quoteTimestamp"], params["quoteAuthor"] = quoted[1], quoted[0]
        if out.attachment is not None:
            attachment = out.attachment
            params["attachments"] = [
                f"data:{attachment.mimetype};filename={attachment.filename};base64,"
                + base64.b64encode(attachment.data).decode()]
        result = await self._send("send", params)
        return f"signal:bot:{result.get('timestamp')}"

    async def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request that sends a message; its result after reading every recipient's outcome."""
        try:
            result = await self.rpc.call(method, params)
        except (ConnectionLost, TimeoutError) as exc:
            # The daemon may have sent it before the connection dropped: see docs/signal.md.
            raise SignalDeliveryError(f"daemon connection: {type(exc).__name__}") from exc
        except RpcError as exc:
            # For a 1:1 send that reached nobody, signal-cli answers an error (-4 untrusted key,
            # -5 rate limit, -1 otherwise) carrying the per-recipient results: read them first.
            results = exc.response.get("results")
            if results:
                self._read_results(results)
            transient = exc.code in (IO_ERROR, INTERNAL_ERROR)
            raise SignalDeliveryError(exc.message, permanent=not transient) from exc
        result = result if isinstance(result, dict) else {}
        self._read_results(result.get("results") or [])
        return result

    def _read_results(self, results: list[Any]) -> None:
        """Act on each recipient's outcome. Raises when nobody got the message and a retry can
        help (rate limit, network); partial failures are logged, since a resend would repeat the
        message for everyone who did get it."""
        outcomes: dict[str, int] = {}
        delays: list[int] = []
        for entry in results:
            if not isinstance(entry, dict):
                continue
            kind = str(entry.get("type"))
            outcomes[kind] = outcomes.get(kind, 0) + 1
            who = _uuid(entry.get("recipientAddress"))
            person = person_id(who) if who else "a recipient without an account id"
            if kind == "RATE_LIMIT_FAILURE":
                if isinstance(entry.get("retryAfterSeconds"), int):
                    delays.append(entry["retryAfterSeconds"])
                if entry.get("token"):
                    log.error(
                        "Signal asks for a rate-limit challenge (proof required) before sending "
                        "to %s. Solve the captcha at https://signalcaptchas.org/challenge/generate.html "
                        "and run: signal-cli -a ACCOUNT submitRateLimitChallenge --challenge %s "
                        "--captcha CAPTCHA_TOKEN", person, entry["token"])
            elif kind == "UNREGISTERED_FAILURE":
                log.warning("%s is no longer registered on Signal; message not delivered to them",
                            person)
            elif kind == "IDENTITY_FAILURE" and who:
                self._identity_changed(who)
            elif kind == "NETWORK_FAILURE":
                log.warning("network failure sending to %s", person)
        if not outcomes or outcomes.get("SUCCESS"):
            if len(outcomes) > 1:
                log.warning("sent, but not to everyone: %s", outcomes)
            return
        if outcomes.get("RATE_LIMIT_FAILURE"):
            retry_after = float(max(delays)) if delays else 60.0
            self._rate_limited_until = self._clock() + retry_after
            raise SignalDeliveryError(f"rate limited by Signal; retry in {retry_after:.0f} s",
                                      retry_after=retry_after)
        if outcomes.get("NETWORK_FAILURE"):
            raise SignalDeliveryError("network failure for every recipient")
        raise SignalDeliveryError(f"not delivered: {outcomes}", permanent=True)

    async def _remote_delete(self, target: dict[str, Any], event_id: str) -> str | None:
        sent = _event_timestamp(event_id)
        if sent is None:
            return None
        await self._send("remoteDelete", self._params(**target, targetTimestamp=sent[1]))
        return None

    # ---- safety numbers -------------------------------------------------------------------

    def _identity_changed(self, uuid: str) -> None:
        person = person_id(uuid)
        if person in self.unconfirmed:
            return
        log.warning("the safety number of %s changed; private messages to them are held until "
                    "they confirm in their DM", person)
        self.unconfirmed.add(person)
        self._identity_dirty = True
        asyncio.create_task(self._after_identity_change(uuid), name="signal-identity-notice")

    async def _after_identity_change(self, uuid: str) -> None:
        """Accept the new key for ordinary messages (as Signal's apps do, with a notice), and
        tell the person how to confirm. Private details stay withheld until they do."""
        try:
            await self.rpc.call("trust", self._params(recipient=[uuid], trustAllKnownKeys=True))
            notice = IDENTITY_NOTICE.format(confirm=f"{self.config.command_prefix}confirm")
            await self.rpc.call("send", self._params(recipient=[uuid], message=notice))
        except (RpcError, ConnectionLost, TimeoutError) as exc:
            log.warning("could not tell %s about their new safety number (%s)",
                        person_id(uuid), exc)

    def identity_unconfirmed(self, person: str) -> bool:
        return person in self.unconfirmed

    async def confirm_identity(self, person: str) -> bool:
        """The person confirmed in their DM: private messages may go to them again."""
        if person not in self.unconfirmed:
            return False
        self.unconfirmed.discard(person)
        self._identity_dirty = True
        await self._save_identity()
        return True

    async def _save_identity(self) -> None:
        if not self._identity_dirty:
            return
        self._identity_dirty = False
        async with self.storage.transaction() as tx:
            await tx.delivery.set_meta(IDENTITY_META, json.dumps(sorted(self.unconfirmed)))

    async def _withheld(self, out: Outgoing, target: dict[str, Any]) -> bool:
        """Whether this message must not go out yet: a DM, or a message in an introduction
        group, to someone whose safety number changed and who has not confirmed."""
        if not self.unconfirmed:
            return False
        if "recipient" in target:
            person = person_id(target["recipient"][0])
            if person in self.unconfirmed:
                log.warning("withholding a direct message to %s until they confirm their new "
                            "safety number", person)
                raise SignalDeliveryError("withheld: safety number not confirmed", permanent=True)
            return False
        group_id = target["groupId"]
        if group_id not in self._intro_groups:
            async with self.storage.transaction() as tx:
                if await tx.privacy.introduction_post_id(group_room(group_id)) is None:
                    return False
            self._intro_groups.add(group_id)
        group = self._groups.get(group_id)
        waiting = [person_id(u) for u in (group.members if group else set())
                   if person_id(u) in self.unconfirmed]
        if not waiting:
            return False
        log.warning("withholding a message in introduction group %s: %s has not confirmed a new "
                    "safety number", group_room(group_id), ", ".join(waiting))
        await self._send("send", self._params(groupId=group_id, message=WITHHELD_NOTICE))
        return True

    # ---- rooms ----------------------------------------------------------------------------

    async def caught_up_since(self, moment: float, timeout: float) -> None:
        return  # a group the bot made is known from the daemon's answer: nothing to wait for

    def power_level(self, room_id: str, user_id: str) -> int:
        group = self._groups.get(room_id[len(GROUP_PREFIX):]) if room_id.startswith(
            GROUP_PREFIX) else None
        uuid = uuid_of(user_id)
        if group is not None and uuid in group.admins:
            return max(self.config.bot.coordinator_power_level, 100)
        return 0

    def members(self, room_id: str) -> list[str]:
        if room_id.startswith(GROUP_PREFIX):
            group = self._groups.get(room_id[len(GROUP_PREFIX):])
            return sorted(person_id(u) for u in group.members) if group else []
        if room_id.startswith(DM_PREFIX):
            return [person_id(room_id[len(DM_PREFIX):])]
        return []

    def rooms_with(self, user_id: str) -> list[tuple[str, str]]:
        uuid = uuid_of(user_id)
        return sorted((group_room(group_id), group.name) for group_id, group in self._groups.items()
                      if uuid in group.members)

    async def join_room(self, address: str) -> str:
        raise SignalDeliveryError("network rooms are Matrix rooms (docs/network.md)",
                                  permanent=True)

    async def make_room(self, request: RoomRequest, existing: str | None) -> str:
        """A new Signal group with just these people (the introduction). A Signal group carries
        no tag the bot could find it by (`existing` is always None here): a retry after a failure
        that came after the group was made makes a second one (docs/signal.md)."""
        name, invitees = request.name or "Mutual aid", list(request.invitees)
        uuids = [uuid_of(person) for person in invitees]
        if None in uuids:
            raise SignalDeliveryError("an invitee is not on Signal", permanent=True)
        # A pod with disappearing messages gets introductions that disappear as fast.
        timers = [g.expires_in_seconds for g in self._groups.values()
                  if g.expires_in_seconds > 0 and set(uuids) <= g.members]
        result = await self._send("updateGroup", self._params(
            name=name, member=uuids, expiration=min(timers) if timers else None))
        group_id = result.get("groupId")
        if not isinstance(group_id, str):
            raise SignalDeliveryError("the daemon did not say which group it created")
        self._groups[group_id] = Group(name=name, members=set(uuids), fetched_at=self._clock())
        self._intro_groups.add(group_id)
        return group_room(group_id)

