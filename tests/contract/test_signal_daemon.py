"""The fake daemon against the real one: the same lines sent to both must get the same answers.

Only what the real daemon can answer without an account and without the Signal servers is in
this contract: framing, ids, batches, and the errors for unknown methods, bad requests, bad
params and a missing account. (Linking and registering reach the Signal servers, so they are not
in it; sending and groups need an account, see tests/signal_fake.py.) Where the real daemon's
message is a Java parser's text, only the code and id are compared.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.transport.signal_rpc import ConnectionLost, RpcError, SignalRpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

WAIT_S = 10.0
SILENCE_S = 1.0  # how long "no answer" is waited for
UNKNOWN_ACCOUNT = "+15550100999"  # reserved fictional number; neither daemon has it

EXACT = [
    {"jsonrpc": "2.0", "method": "version", "id": 1},
    {"jsonrpc": "2.0", "method": "noSuchMethod", "id": 2},
    {"jsonrpc": "2.0", "method": "send", "params": {"message": "hi", "recipient": ["x"]}, "id": 3},
    {"jsonrpc": "2.0", "method": "send",
     "params": {"account": UNKNOWN_ACCOUNT, "message": "hi", "recipient": ["x"]}, "id": 4},
    {"jsonrpc": "2.0", "method": "listGroups", "id": "a string id"},
    {"jsonrpc": "2.0", "method": "listGroups", "params": {"account": UNKNOWN_ACCOUNT}, "id": 5},
    {"jsonrpc": "2.0", "method": "updateGroup", "params": {"name": "x"}, "id": 6},
    {"jsonrpc": "2.0", "method": "version", "id": None},
    {"jsonrpc": "2.0", "method": "version", "id": 1.5},
    {"method": "version", "id": 7},
    {"jsonrpc": "1.0", "method": "version", "id": 8},
    {"jsonrpc": "2.0", "id": 9},
    {"jsonrpc": "2.0", "method": "finishLink", "params": {}, "id": 10},
    [{"jsonrpc": "2.0", "method": "version", "id": 11},
     {"jsonrpc": "2.0", "method": "noSuchMethod", "id": 12}],
    [{"jsonrpc": "2.0", "method": "version", "id": 13}, {"jsonrpc": "2.0", "method": "version"}],
    [],
]
# (line, what to compare) where the real message is a Java parser's wording.
CODE_AND_ID = [
    b"this is not json",
    b'{"jsonrpc":"2.0","method":"version","params":[1,2],"id":14}',
    b'{"jsonrpc":"2.0","method":"listGroups","params":"x","id":15}',
    b'{"jsonrpc":"2.0","method":"version","id":{"an":"object"}}',
]


async def _exchange(where: tuple[str, int], line: bytes, expect_answer: bool = True) -> object:
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(line + b"\n")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.readline(), WAIT_S if expect_answer else SILENCE_S)
        except TimeoutError:
            return None
        return json.loads(answer) if answer else None
    finally:
        writer.close()


async def _both(real_daemon, fake_daemon, line: bytes, expect_answer: bool = True):
    return await asyncio.gather(_exchange(real_daemon, line, expect_answer),
                                _exchange(fake_daemon, line, expect_answer))


def _in_id_order(answer: object) -> object:
    """A batch's answers may come in any order (the real daemon runs them side by side)."""
    return sorted(answer, key=lambda a: json.dumps(a["id"])) if isinstance(answer, list) else answer


@pytest.mark.parametrize("request_", EXACT, ids=lambda r: json.dumps(r)[:60])
async def test_same_request_same_answer(real_daemon, fake_daemon, request_):
    real, fake = await _both(real_daemon, fake_daemon, json.dumps(request_).encode())
    assert real is not None
    assert _in_id_order(fake) == _in_id_order(real)


@pytest.mark.parametrize("line", CODE_AND_ID, ids=lambda line: line.decode()[:60])
async def test_malformed_requests_get_the_same_code_and_id(real_daemon, fake_daemon, line):
    real, fake = await _both(real_daemon, fake_daemon, line)
    assert real is not None and fake is not None
    assert (fake["error"]["code"], fake["id"]) == (real["error"]["code"], real["id"])


@pytest.mark.parametrize("request_", [
    {"jsonrpc": "2.0", "method": "version"},
    {"jsonrpc": "2.0", "method": "noSuchMethod"},
    [{"jsonrpc": "2.0", "method": "version"}],
], ids=["notification", "unknown-notification", "batch-of-notifications"])
async def test_notifications_get_no_answer(real_daemon, fake_daemon, request_):
    real, fake = await _both(real_daemon, fake_daemon, json.dumps(request_).encode(),
                             expect_answer=False)
    assert real is None and fake is None


async def test_pipelined_requests_on_one_connection_are_answered_by_id(real_daemon, fake_daemon):
    async def run(where):
        reader, writer = await asyncio.open_connection(*where)
        lines = [json.dumps({"jsonrpc": "2.0", "method": m, "id": i}).encode() + b"\n"
                 for i, m in ((21, "version"), (22, "noSuchMethod"), (23, "version"))]
        writer.write(b"".join(lines))
        await writer.drain()
        answers = [json.loads(await asyncio.wait_for(reader.readline(), WAIT_S)) for _ in lines]
        writer.close()
        return sorted(answers, key=lambda a: a["id"])

    real, fake = await asyncio.gather(run(real_daemon), run(fake_daemon))
    assert fake == real


async def test_subscribe_receive_answers_a_subscription_number(real_daemon, fake_daemon):
    line = json.dumps({"jsonrpc": "2.0", "method": "subscribeReceive", "id": 30}).encode()
    real, fake = await _both(real_daemon, fake_daemon, line)
    assert isinstance(real["result"], int) and isinstance(fake["result"], int)
    assert set(real) == set(fake) == {"jsonrpc", "result", "id"}


@pytest.mark.parametrize("which", ["real", "fake"])
async def test_the_client_reads_results_and_typed_errors(real_daemon, fake_daemon, which):
    host, port = real_daemon if which == "real" else fake_daemon
    client = SignalRpc(f"tcp:{host}:{port}")
    running = asyncio.create_task(client.run())
    try:
        await client.wait_connected(WAIT_S)
        assert (await client.call("version", timeout=WAIT_S))["version"]
        with pytest.raises(RpcError) as unknown:
            await client.call("noSuchMethod", timeout=WAIT_S)
        assert (unknown.value.code, unknown.value.message) == (-32601, "Method not implemented")
        with pytest.raises(RpcError) as no_account:
            await client.call("send", {"message": "hi", "recipient": ["x"]}, timeout=WAIT_S)
        assert no_account.value.code == -32602
        assert no_account.value.message == "Method requires valid account parameter"
    finally:
        await client.close()
        await asyncio.wait_for(running, WAIT_S)
    with pytest.raises(ConnectionLost):
        await client.call("version")
