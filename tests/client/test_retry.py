"""The operator client rides out a gateway restart: retries with the same id, within a window.

Real gateways (processes, or in-process with a fault proxy in front of the operator port), real
mTLS and real journals: the proof of "once" is the journal, which must hold one entry per id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from client import bodies
from client.errors import Timeout, Unavailable
from client.operator import OperatorClient, RetryPolicy
from hotline.ids import new_message_id
from hotline.journal_file import JournalReader, Kind
from hotline.v1 import common_pb2
from server.peerlink.reasons import in_words
from sim.pair import GatewayPair
from sim.proxy import FaultProxy
from tests.harness import free_port, free_text, make_pki, running_pair


def journaled_out(journal: Path, message_id: str) -> int:
    """How many times the message was journaled as sent."""
    with JournalReader(journal) as reader:
        return sum(1 for e in reader.entries([Kind.MESSAGE_OUT]) if e.message_id == message_id)


def test_the_retry_window_bounds_attempts_and_the_backoff_is_jittered_but_grows() -> None:
    policy = RetryPolicy(window_s=15.0, initial_s=0.1, max_s=2.0)
    assert policy.allows(1, 14.9)
    assert not policy.allows(1, 15.1)
    assert not RetryPolicy(window_s=0).allows(1, 0.01)
    assert not RetryPolicy(attempts=3).allows(3, 0.0)
    for attempt in range(8):
        cap = min(2.0, 0.1 * 2**attempt)
        assert all(cap / 2 <= policy.delay(attempt) <= cap for _ in range(50))
    with pytest.raises(ValueError, match="window_s"):
        RetryPolicy(window_s=-1)


@pytest.mark.slow
async def test_a_send_issued_while_the_gateway_is_killed_and_restarted_2_s_later_succeeds_once(
    tmp_path: Path,
) -> None:
    pair = await GatewayPair.start(tmp_path, proxies=False)
    try:
        jp = pair.jp
        async with OperatorClient.from_pki(pair.pki, "JP", address=jp.address) as client:
            await client.link_status()  # connected once, then the gateway dies
            jp.kill()
            message_id = new_message_id()
            sending = asyncio.create_task(
                client.send_body(
                    bodies.free_text("Radio check", "Sent while the gateway restarts"),
                    precedence=common_pb2.PRECEDENCE_ROUTINE,
                    recipient="TW",
                    message_id=message_id,
                )
            )
            await asyncio.sleep(2.0)
            assert not sending.done(), "the send gave up while the gateway was down"
            jp.spawn()  # as a supervisor would, 2 s later
            sent = await asyncio.wait_for(sending, 30)
        assert sent.message_id == message_id
    finally:
        await pair.stop()
    assert journaled_out(pair.jp.journal, message_id) == 1


async def test_deadline_exceeded_on_a_send_is_retried_with_the_same_id_and_journaled_once(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        proxy = FaultProxy(("127.0.0.1", pair.jp.port))
        port = await proxy.start()
        try:
            client = OperatorClient.from_pki(
                pair.pki, "JP", address=f"127.0.0.1:{port}", timeout=0.5
            )
            async with client:
                await client.link_status()
                proxy.stall()  # a silent link: every attempt runs out its deadline
                envelope = free_text("through a stalled link")
                sending = asyncio.create_task(client.send(envelope))
                await asyncio.sleep(1.6)  # three deadlines pass while stalled
                assert not sending.done(), "DEADLINE_EXCEEDED was not retried"
                proxy.resume()
                sent = await asyncio.wait_for(sending, 30)
            assert sent.message_id == envelope.message_id
        finally:
            await proxy.close()
        assert journaled_out(tmp_path / "jp.db", envelope.message_id) == 1


async def test_when_the_window_runs_out_the_error_carries_the_id_to_retry_with(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    client = OperatorClient.from_pki(
        pki,
        "JP",
        address=f"127.0.0.1:{free_port()}",
        retry=RetryPolicy(window_s=0.3, initial_s=0.05, max_s=0.1),
    )
    envelope = free_text("nobody listens")
    async with client:
        with pytest.raises(Unavailable) as caught:
            await client.send(envelope)
    assert caught.value.message_id == envelope.message_id


async def test_a_deadline_on_a_client_with_no_window_is_raised_at_once(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        client = OperatorClient.from_pki(
            pair.pki,
            "JP",
            address=f"127.0.0.1:{pair.jp.port}",
            timeout=1e-6,
            retry=RetryPolicy(window_s=0),
        )
        async with client:
            with pytest.raises(Timeout):
                await client.link_status()


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_expected_link_faults_are_named_in_words() -> None:
    assert "written" in in_words(asyncio.InvalidStateError("RPC already finished"))
    assert "internal error" in in_words(
        rpc_error(grpc.StatusCode.INTERNAL, "Internal error from Core")
    )
    assert "not listening" in in_words(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
            "Failed to connect to remote host: Connection refused",
        )
    )
    assert "expired" in in_words(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE,
            "Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:"
            "OPENSSL_internal:CERTIFICATE_EXPIRED",
        )
    )
