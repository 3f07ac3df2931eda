"""The dialling gateway checks the peer gateway's TLS certificate before it sends anything.

grpcio's client handshake does not check revocation, so without the check in
`server.peerlink.peer_certificate` a TW gateway serving a revoked certificate would still
receive JP's outbox. Here two real gateways run on 127.0.0.1 with a real PKI:

1. TW's gateway certificate is revoked (key compromise) before they start. In this PKI both
   parties' folders share one directory, so `revoke` re-signs TW's `crl.pem` and copies it to
   JP's `peer-crl.pem`, which is JP's view of TW's revocation list: the test checks that copy.
2. JP's operator sends a message. JP never dials TW: the message stays JOURNALED through
   several reconnection attempts, TW's journal holds no message from JP, and JP journals one
   security event (not one per attempt) that its operators see on Watch as
   EVENT_KIND_SECURITY_REFUSAL, naming the serial and the reason.
3. TW's gateway gets a fresh key and certificate (`rotate_gateway`; TW's server picks them up
   before its next handshake, without a restart). JP's next attempt passes the check, the link
   comes up, and the message is DELIVERED and journaled by TW.

`test_revoking_the_peer_certificate_ends_the_open_outbound_link` does the same with the link
already up when the certificate is revoked: JP ends its open connection on reloading the list.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from certs.pki import PartyPaths, load_certificate, load_party_revocations, revoke, rotate_gateway
from hotline.v1 import operator_pb2
from server.journal import Kind
from tests.harness import free_text, running_pair, state_of, wait_state
from tests.security.conftest import WAIT, eventually, journal_entries, security_details

JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED


@pytest.mark.must("ID-6", "LINK-3")
async def test_a_peer_serving_a_revoked_certificate_receives_nothing_until_it_is_replaced(
    tmp_path: Path, pki: Path
) -> None:
    jp_paths, tw_paths = PartyPaths.of(pki, "JP"), PartyPaths.of(pki, "TW")
    serial = revoke(pki, "TW", tw_paths.gateway_cert, reason="key-compromise")
    assert load_party_revocations(jp_paths).is_revoked(load_certificate(tw_paths.gateway_cert))

    async with running_pair(tmp_path, pki) as pair:
        jp, tw = pair.jp.gateway, pair.tw.gateway
        sent = await asyncio.wait_for(
            pair.jp.stub.Send(
                operator_pb2.SendRequest(envelope=free_text("not for a revoked key"))
            ),
            WAIT,
        )
        message_id = sent.message_id
        assert sent.state == JOURNALED

        def refusals() -> list[dict[str, object]]:
            return [e for e in security_details(jp) if e["code"] == "PEER_CERTIFICATE_REVOKED"]

        await eventually(refusals, "JP to journal that TW's certificate is revoked")
        # Let several more attempts fail (reconnect backoff is 0.05..0.5 s in these tests).
        attempts_from = time.monotonic()
        await asyncio.sleep(2.0)
        assert time.monotonic() - attempts_from < WAIT

        assert refusals() == [
            {
                "code": "PEER_CERTIFICATE_REVOKED",
                "detail": f"peer gateway certificate serial {serial:#x} is revoked (keyCompromise)",
                "peer": jp.config.peer_address,
            }
        ]
        assert await asyncio.wait_for(state_of(pair.jp.stub, message_id), WAIT) == JOURNALED
        assert journal_entries(tw, Kind.MESSAGE_IN) == []
        assert not jp.sender.status.up
        assert "is revoked (keyCompromise)" in jp.sender.status.detail

        watch = pair.jp.stub.Watch(
            operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_SECURITY_REFUSAL])
        )
        try:
            async with asyncio.timeout(WAIT):
                async for response in watch:
                    if any("is revoked (keyCompromise)" in e.detail for e in response.events):
                        break
        finally:
            watch.cancel()

        rotate_gateway(pki, "TW")  # a fresh key and certificate; TW's server serves them next

        await wait_state(pair.jp.stub, message_id, DELIVERED, within=WAIT)
        received = [e.message_id for e in journal_entries(tw, Kind.MESSAGE_IN)]
        assert received == [message_id]
        assert len(refusals()) == 1


async def test_revoking_the_peer_certificate_ends_the_open_outbound_link(
    tmp_path: Path, pki: Path
) -> None:
    """A link already open when the peer's certificate is revoked is ended, not kept.

    The TLS session of an open connection keeps the certificate it began with, so the gateway,
    on reloading its revocation lists (polled every 2 s), re-checks the certificate it checked
    before dialling, and ends the connection if it is now revoked; the next attempt is refused.
    """
    tw_paths = PartyPaths.of(pki, "TW")
    async with running_pair(tmp_path, pki) as pair:
        jp, tw = pair.jp.gateway, pair.tw.gateway
        first = await asyncio.wait_for(
            pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("link is good"))), WAIT
        )
        await wait_state(pair.jp.stub, first.message_id, DELIVERED, within=WAIT)

        serial = revoke(pki, "TW", tw_paths.gateway_cert, reason="key-compromise")
        reason = f"peer gateway certificate serial {serial:#x} is revoked (keyCompromise)"

        def outbound_down() -> list[str]:
            return [
                body["detail"]
                for body in (e.json_body() for e in journal_entries(jp, Kind.LINK_DOWN))
                if body["direction"] == "outbound"
            ]

        await eventually(outbound_down, "JP to end its link to the revoked TW certificate")
        assert outbound_down() == [reason]
        await eventually(
            lambda: [e for e in security_details(jp) if e["code"] == "PEER_CERTIFICATE_REVOKED"],
            "JP to journal the refusal of its next attempt",
        )

        second = await asyncio.wait_for(
            pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("not for TW yet"))), WAIT
        )
        await asyncio.sleep(1.5)  # several refused attempts
        assert await asyncio.wait_for(state_of(pair.jp.stub, second.message_id), WAIT) == JOURNALED
        assert [e.message_id for e in journal_entries(tw, Kind.MESSAGE_IN)] == [first.message_id]

        rotate_gateway(pki, "TW")
        await wait_state(pair.jp.stub, second.message_id, DELIVERED, within=WAIT)
        received = [e.message_id for e in journal_entries(tw, Kind.MESSAGE_IN)]
        assert received == [first.message_id, second.message_id]
