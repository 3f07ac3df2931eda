"""Rules of the peer link spec checked against a real JP gateway, frame by frame.

The caller plays the TW gateway (its real TLS certificate and signing key): what JP resends in
a Welcome after a reconnect (the very batch receipts it signed, rejections with their
violations and original receipts), how it refuses a Hello with no signing certificate, and the
status codes it ends a stream with when the sender half-closes it or falls silent.
"""

from __future__ import annotations

import secrets
from typing import Any

import grpc
import pytest

from hotline import PROTOCOL_VERSION, link
from hotline.v1 import common_pb2, peer_link_pb2, peer_link_pb2_grpc
from tests.security.conftest import (
    FakePeer,
    Lone,
    fake_tw_peer,
    gateway_of,
    signing_der,
    tw_envelope,
)
from tests.security.test_message_security import raw, signed_tw


@pytest.mark.must("LINK-19", "LINK-18")
async def test_a_welcome_resends_the_batch_receipts_it_signed_byte_for_byte(jp: Lone) -> None:
    """A sender that missed the live answers learns them from the Welcome, with everything the
    live batch receipts held: a rejection's violations, and for a duplicate the original batch
    receipt that proves the first delivery."""
    first = tw_envelope("the original")
    signed_first = signed_tw(jp.pki, first)
    broken = tw_envelope("a broken one")
    broken.language = "EN"  # breaks the language pattern
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        live_one = await peer.deliver(1, signed_first)
        live_two = await peer.deliver_batch(2, [signed_tw(jp.pki, broken), signed_first])
    [invalid, duplicate] = live_two.rejections
    assert invalid.reason is link.RejectReason.INVALID_MESSAGE
    assert [field for field, _ in invalid.violations] == ["language"]
    assert duplicate.reason is link.RejectReason.DUPLICATE_MESSAGE_ID
    assert duplicate.original_receipt is not None
    assert raw(duplicate.original_receipt) == raw(live_one)

    async with fake_tw_peer(jp) as again:
        welcome = await again.open([signing_der(jp.pki, "TW")], last_receipted=0)
        assert welcome.last_sequence == 3
        assert again.welcome_frame is not None
        resent = [r.receipt.SerializeToString() for r in again.welcome_frame.batch_receipts]
    assert resent == [raw(live_one), raw(live_two)]
    [replayed_invalid, replayed_duplicate] = welcome.batch_receipts[1].rejections
    assert replayed_invalid.violations == invalid.violations
    assert replayed_duplicate.original_receipt is not None
    assert raw(replayed_duplicate.original_receipt) == raw(live_one)


@pytest.mark.must("LINK-7", "LINK-24")
async def test_a_hello_with_no_signing_certificate_is_refused_as_invalid_argument(
    jp: Lone,
) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.hello([])
        ended = await peer.ended()
    assert ended.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1..4 signing certificates" in (ended.details() or "")


def _hello() -> peer_link_pb2.PushRequest:
    return peer_link_pb2.PushRequest(
        hello=peer_link_pb2.Hello(
            protocol_version=PROTOCOL_VERSION,
            party="TW",
            last_receipted_sequence=0,
            nonce=secrets.token_bytes(link.NONCE_BYTES),
            lane=common_pb2.PRECEDENCE_ROUTINE,
        )
    )


async def _read_until_the_end(call: Any, frames: list[str | None]) -> None:
    for _ in range(1000):  # bounded: a ping every 0.5 s until the stream ends
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        frames.append(response.WhichOneof("frame"))


@pytest.mark.must("LINK-24", "LINK-22")
async def test_a_silent_sender_is_declared_down_and_its_stream_ends_unavailable(jp: Lone) -> None:
    """No Pong, no frame at all after the Hello: after its dead-after time (2 s in the test
    configuration) JP ends the stream with UNAVAILABLE `link down:`, having pinged first."""
    channel = gateway_of(jp.pki, "TW", jp.port, "JP")
    try:
        call = peer_link_pb2_grpc.PeerLinkServiceStub(channel).Push()
        hello = _hello()
        hello.hello.signing_certificates.append(signing_der(jp.pki, "TW"))
        await call.write(hello)
        frames: list[str | None] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _read_until_the_end(call, frames)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (ended.value.details() or "").startswith("link down:")
        assert frames[0] == "welcome"
        assert "ping" in frames
    finally:
        await channel.close(grace=None)


@pytest.mark.must("LINK-24")
async def test_a_half_closed_stream_ends_with_ok(jp: Lone) -> None:
    """The graceful close: the sender is done writing; JP ends the stream with OK."""
    peer = FakePeer(gateway_of(jp.pki, "TW", jp.port, "JP"), jp.pki)
    try:
        await peer.open([signing_der(jp.pki, "TW")])
        async with peer._write_lock:
            await peer.call.done_writing()
        code = await peer.call.code()
        assert code == grpc.StatusCode.OK
    finally:
        await peer.close()
